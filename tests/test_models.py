import keras
import numpy as np
import pytest
import tensorflow as tf

from Models.adversarial.model import AdversarialSeparator, additivity_losses, gradient_penalties
from Models.adversarial.critic import build_critic
from Models.registry import SeparatorSpec
from Models.separator import MaxPooling2x2, build_separator
from Datasets.windows import WindowShapes
from Models.shapes import input_size_for_output, unet_shapes, valid_output_size

SOURCES = ("accompaniment", "voice")
TINY = dict(spec=SeparatorSpec("unet", 33, SOURCES, {"num_layers": 2, "base_filters": 4}), num_frames=8,
            critic_base_filters=4, critic_max_filters=8, critic_dense_units=4)


def test_paper_shapes_and_parameter_counts():
    shapes = unet_shapes(4, 64, 257)
    assert (shapes.input_bins, shapes.input_frames, shapes.output_bins, shapes.output_frames) == (350, 158, 258, 66)
    assert shapes.context_frames == 46 and shapes.input_bins_below == 46
    separator = build_separator()
    assert separator.count_params() == 958_596
    assert build_critic(shapes, 257, 64).count_params() == 1_869_344
    outputs = separator(np.zeros((2, 350, 158, 1), np.float32))
    assert {name: tuple(out.shape) for name, out in outputs.items()} == {
        "accompaniment": (2, 258, 66, 1), "voice": (2, 258, 66, 1)}


@pytest.mark.parametrize("height, width, ties", [(6, 8, False), (7, 5, False), (6, 8, True)])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_max_pooling_2x2_equals_keras_max_pooling_in_values_and_gradients(height, width, ties, jit_compile):
    features = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype(np.float32)
    features = tf.constant(np.round(features) if ties else features)  # rounding makes equal maxima
    upstream = tf.constant(np.random.default_rng(1).normal(size=(2, height // 2, width // 2, 3)).astype(np.float32))

    def pooled_and_gradient(layer):
        @tf.function(jit_compile=jit_compile)
        def run(features):
            with tf.GradientTape() as tape:
                tape.watch(features)
                pooled = layer(features)
                loss = tf.reduce_sum(pooled * upstream)
            return pooled, tape.gradient(loss, features)
        return run(features)

    ours, keras_pooling = pooled_and_gradient(MaxPooling2x2()), pooled_and_gradient(keras.layers.MaxPooling2D(2))
    np.testing.assert_array_equal(ours[0].numpy(), keras_pooling[0].numpy())
    np.testing.assert_array_equal(ours[1].numpy(), keras_pooling[1].numpy())
    assert np.count_nonzero(ours[1].numpy()) == upstream.shape.num_elements()


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5])
def test_shape_calculator_matches_the_network(num_layers):
    shapes = unet_shapes(num_layers, 40, 65)
    assert shapes.output_frames >= 40 and shapes.output_bins >= 65
    assert valid_output_size(shapes.output_frames, num_layers) == shapes.output_frames
    separator = build_separator(num_layers, 65, base_filters=2)
    output = separator(np.zeros((1, shapes.input_bins, shapes.input_frames, 1), np.float32))["voice"]
    assert tuple(output.shape) == (1, shapes.output_bins, shapes.output_frames, 1)
    with pytest.raises(ValueError, match="not reachable"):
        input_size_for_output(shapes.output_frames + 1, num_layers)


def test_supervised_steps_reduce_the_loss_on_a_fixed_batch():
    keras.utils.set_random_seed(0)  # initial weights must not depend on the models built before
    wider = SeparatorSpec("unet", 33, SOURCES, {"num_layers": 2, "base_filters": 8})
    model = AdversarialSeparator(**dict(TINY, spec=wider), supervised_lr=3e-3, seed=1)
    shapes, rng = model.shapes, np.random.default_rng(0)
    mixture = rng.uniform(0, 1, (4, shapes.input_bins, shapes.input_frames, 1)).astype(np.float32)
    bins, frames = shapes.input_bins_below, shapes.context_frames
    centre = mixture[:, bins:bins + shapes.output_bins, frames:frames + shapes.output_frames]
    sources = np.concatenate([0.3 * centre, 0.7 * centre], axis=-1)
    losses = [float(model.supervised_step(mixture, sources)["supervised_loss"]) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]


def test_one_sided_gradient_penalty_matches_finite_differences():
    keras.utils.set_random_seed(0)
    shapes = WindowShapes(input_bins=0, input_frames=0, output_bins=10, output_frames=10)
    critic = build_critic(shapes, num_bins=9, num_frames=8, base_filters=2, max_filters=2, dense_units=3)
    critic.set_weights([3 * w for w in critic.get_weights()])  # gradient norms well above 1
    rng = np.random.default_rng(0)
    real, fake = (rng.normal(size=(3, 10, 10, 1)).astype(np.float32) for _ in range(2))
    epsilon = rng.uniform(size=3).astype(np.float32)
    penalties = gradient_penalties(critic, tf.constant(real), tf.constant(fake), tf.constant(epsilon)).numpy()

    interpolates = (epsilon[:, None, None, None] * real + (1 - epsilon[:, None, None, None]) * fake).astype(np.float64)
    step, terms = 2e-3, []
    for example in interpolates:
        gradient = np.zeros(example.size)
        for index in range(example.size):
            plus, minus = example.copy().ravel(), example.copy().ravel()
            plus[index] += step
            minus[index] -= step
            scores = critic(np.stack([plus, minus]).reshape(2, 10, 10, 1).astype(np.float32)).numpy()
            gradient[index] = (scores[0, 0] - scores[1, 0]) / (2 * step)
        terms.append(max(np.linalg.norm(gradient) - 1.0, 0.0) ** 2)
    assert np.mean(terms) > 0.1
    np.testing.assert_allclose(penalties, terms, rtol=2e-2, atol=1e-3)


def test_additivity_loss_is_zero_when_estimates_sum_to_the_mixture():
    shapes = unet_shapes(2, 8, 33)
    rng = np.random.default_rng(0)
    mixture = rng.uniform(0, 1, (2, shapes.input_bins, shapes.input_frames, 1)).astype(np.float32)
    bins, frames = shapes.input_bins_below, shapes.context_frames
    linear = np.expm1(mixture[:, bins:bins + shapes.output_bins, frames:frames + shapes.output_frames])
    estimates = {"a": tf.constant(np.log1p(0.25 * linear)), "b": tf.constant(np.log1p(0.75 * linear))}
    np.testing.assert_allclose(additivity_losses(mixture, estimates, shapes), 0.0, atol=1e-10)
    estimates["b"] = tf.constant(np.log1p(0.5 * linear))
    np.testing.assert_allclose(additivity_losses(mixture, estimates, shapes),
                               np.mean((0.25 * linear) ** 2, axis=(1, 2, 3)), rtol=1e-4)


def test_semi_supervised_step_updates_each_critic_num_disc_times_and_the_separator_once():
    model = AdversarialSeparator(**TINY, num_disc=3, seed=2)
    shapes, rng = model.shapes, np.random.default_rng(1)

    def batch(*shape):
        return rng.uniform(0, 1, (2, *shape)).astype(np.float32)

    unpaired = [(batch(shapes.input_bins, shapes.input_frames, 1),
                 (batch(shapes.output_bins, shapes.output_frames, 1), batch(shapes.output_bins, shapes.output_frames, 1)))
                for _ in range(4)]
    critic_before = model.critics["voice"].get_weights()
    metrics = model.semi_supervised_step(batch(shapes.input_bins, shapes.input_frames, 1),
                                         batch(shapes.output_bins, shapes.output_frames, 2), unpaired)
    iterations = {name: int(optimizer.iterations.numpy()) for name, optimizer in model.optimizers.items()}
    assert iterations == {"supervised": 0, "semi_supervised": 1, "critic_accompaniment": 3, "critic_voice": 3}
    assert not np.allclose(critic_before[0], model.critics["voice"].get_weights()[0])
    assert {"separator_loss", "adversarial_loss", "additivity_loss", "wasserstein/voice",
            "gradient_penalty/accompaniment"} <= set(metrics)
    with pytest.raises(ValueError, match="num_disc \\+ 1 = 4"):
        model.semi_supervised_step(unpaired[0][0], None, unpaired[:2])


@pytest.mark.parametrize("mirrored", [False, True])
def test_mixed_precision_steps_train_in_float16_with_float32_outputs(mirrored):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mirrored else None
    try:
        model = AdversarialSeparator(**TINY, num_disc=1, supervised_lr=1e-2, seed=4, mixed_precision=True,
                                     strategy=strategy)
        shapes, rng = model.shapes, np.random.default_rng(5)
        mixture = rng.uniform(0, 1, (2, shapes.input_bins, shapes.input_frames, 1)).astype(np.float32)
        sources = rng.uniform(0, 0.5, (2, shapes.output_bins, shapes.output_frames, 2)).astype(np.float32)
        assert model.separator.get_layer("encoder_0").compute_dtype == "float16"
        assert model.separator(mixture)["voice"].dtype == "float32"
        losses = [float(model.supervised_step(mixture, sources)["supervised_loss"]) for _ in range(30)]
        assert np.isfinite(losses).all() and losses[-1] < losses[0]
        unpaired = [(mixture, (sources[..., :1], sources[..., 1:]))] * 2
        metrics = model.semi_supervised_step(mixture, sources, unpaired)
        assert all(np.isfinite(float(value)) for value in metrics.values())
        assert int(model.optimizers["critic_voice"].iterations.numpy()) == 1
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
