import keras
import librosa
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from Models.weak_label.mask_model import background_mask, build_mask_model
from Models.weak_label.pcen import CHUNK_FRAMES, PCEN, exponential_smoothing
from Models.weak_label.relative_db import PcenAndRelativeDecibels, RelativeDecibels
from Models.weak_label.pooling import CLASSIFIERS, GlobalWeightedRankPooling, LinearSoftmaxPooling, build_classifier
from Models.weak_label.model import build_weak_label_model
from Models.weak_label.training import model_spec_of

FRAMES, MELS, CLASSES = 16, 8, 3
TINY_MASKS = dict(channels=4, num_blocks=2)
CLASSIFIER_OPTIONS = {"gwrp": {"decay": 0.9}, "gwrp_affine": {"decay": 0.9}, "linear_softmax": {}, "max": {},
                      "average": {}, "dense": {"num_frames": FRAMES, "sorted": True},
                      "depthwise_cnn": {"depth_multiplier": 2}, "gru": {"units": 4}}


def mel_power(frames, bands=MELS, batch=2, seed=0):
    """Mel-power-like energies: mostly small, a few large, spanning several decades."""
    return (np.random.default_rng(seed).uniform(0, 1, (batch, frames, bands)) ** 6 * 50).astype(np.float32)


def librosa_pcen(energies, smoothing=0.04, alpha=0.98, delta=2.0, root=0.5, eps=1e-6):
    return np.stack([librosa.pcen(clip.T, sr=16000, hop_length=512, gain=alpha, bias=delta, power=root, eps=eps,
                                  b=smoothing, max_size=1).T for clip in energies])


@pytest.mark.parametrize("parameters", [{}, dict(smoothing=0.01, alpha=0.8, delta=0.5, root=0.25, eps=1e-4)])
@pytest.mark.parametrize("frames", [5, 3 * CHUNK_FRAMES + 7])
def test_fixed_pcen_matches_librosa(frames, parameters):
    energies = mel_power(frames)
    np.testing.assert_allclose(PCEN(**parameters)(energies).numpy(), librosa_pcen(energies, **parameters),
                               rtol=1e-4, atol=1e-6)


def test_smoother_matches_the_recurrence_across_chunks():
    energies = mel_power(5 * CHUNK_FRAMES + 3, bands=3, batch=1)
    smoothing = [0.5, 0.04, 1e-3]
    smoothed = exponential_smoothing(tf.constant(energies), tf.constant(smoothing)).numpy()
    for index, value in enumerate(smoothing):  # M_{-1} = 1: lfilter_zi for b = [s], a = [1, s - 1] is 1 - s
        expected = scipy.signal.lfilter([value], [1, value - 1], energies[0], axis=0, zi=np.full((1, 3), 1 - value))[0]
        np.testing.assert_allclose(smoothed[0, index], expected, rtol=1e-5)


@pytest.mark.parametrize("per_band", [False, True])
def test_trainable_pcen_starts_as_the_fixed_one_and_learns_every_parameter(per_band):
    energies = tf.constant(mel_power(40))
    trainable = PCEN(trainable=True, per_band=per_band, num_smoothers=3)
    fixed = PCEN(num_smoothers=3)
    with tf.GradientTape() as tape:
        output = trainable(energies)
        loss = tf.reduce_sum(output * tf.range(1, MELS + 1, dtype=tf.float32))  # bands weigh differently
    np.testing.assert_allclose(output.numpy(), fixed(energies).numpy(), rtol=1e-5, atol=1e-6)
    assert fixed.weights == []
    gradients = tape.gradient(loss, trainable.trainable_weights)
    assert {weight.name: tuple(weight.shape) for weight in trainable.trainable_weights} == {
        "alpha_logit": (MELS if per_band else 1,), "log_delta": (MELS if per_band else 1,),
        "root_logit": (MELS if per_band else 1,), "mixture_logits": (3, MELS if per_band else 1)}
    for weight, gradient in zip(trainable.trainable_weights, gradients):
        assert np.all(np.abs(gradient.numpy()) > 0), weight.name
    if per_band:  # one value per band: band b's parameters move band b's output only
        assert len(np.unique(np.round(gradients[0].numpy(), 6))) == MELS


def test_pcen_mixture_of_smoothers_averages_halving_smoothing_values():
    energies = mel_power(30)
    smoothed = [scipy.signal.lfilter([s], [1, s - 1], energies, axis=1, zi=np.full((2, 1, MELS), 1 - s))[0]
                for s in (0.04, 0.02)]
    smoother = np.mean(smoothed, axis=0)
    expected = (energies / (1e-6 + smoother) ** 0.98 + 2.0) ** 0.5 - 2.0 ** 0.5
    np.testing.assert_allclose(PCEN(num_smoothers=2)(energies).numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arguments, message", [
    (dict(per_band=True), "per_band=True needs trainable=True"),
    (dict(trainable=True, alpha=1.0), "invalid alpha=1.0"),
    (dict(smoothing=0.0), "invalid smoothing=0.0"),
    (dict(num_smoothers=0), "invalid num_smoothers=0")])
def test_pcen_rejects_invalid_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        PCEN(**arguments)


def gwrp_reference(masks, decay):
    values = np.sort(masks.reshape(masks.shape[0], -1, masks.shape[-1]).astype(np.float64), axis=1)[:, ::-1]
    weights = decay ** np.arange(values.shape[1], dtype=np.float64)
    return np.einsum("bnc,n->bc", values, weights) / weights.sum()


@pytest.mark.parametrize("frames", [7, 8])
def test_relative_decibels_subtract_each_bands_median_and_ignore_level_and_colour(frames):
    energies = mel_power(frames, seed=3)
    decibels = 10 * np.log10(energies.astype(np.float64) + 1e-10)
    median = np.sort(decibels, axis=1)[:, frames // 2][:, None, :]  # the upper middle for an even count
    np.testing.assert_allclose(RelativeDecibels()(energies).numpy(), (decibels - median) / 20, atol=1e-5)
    audible = energies + 1e-3  # well above the -100 dB floor
    coloured = audible * np.logspace(-3, 2, MELS, dtype=np.float32)  # another level in every band
    np.testing.assert_allclose(RelativeDecibels()(coloured).numpy(), RelativeDecibels()(audible).numpy(), atol=1e-4)


def test_pcen_and_relative_decibels_are_two_input_maps_of_the_mask_model():
    energies = mel_power(FRAMES, seed=4)
    maps = PcenAndRelativeDecibels()(energies).numpy()
    assert maps.shape == (*energies.shape, 2)
    np.testing.assert_allclose(maps[..., 0], PCEN()(energies).numpy(), atol=1e-6)
    np.testing.assert_allclose(maps[..., 1], RelativeDecibels()(energies).numpy(), atol=1e-6)
    model = build_weak_label_model(MELS, CLASSES, TINY_MASKS, "gwrp", CLASSIFIER_OPTIONS["gwrp"],
                                   front_end="pcen_relative_db")
    first_convolution = model.get_layer("mask_model").get_layer("block_0_conv")
    assert first_convolution.kernel.shape[2] == 2  # each filter sees both maps
    outputs = model(energies)
    assert outputs["masks"].shape == (*energies.shape, CLASSES) and outputs["probabilities"].shape == (2, CLASSES)


def test_gwrp_is_average_pooling_at_one_max_pooling_at_zero_and_rank_weighting_between():
    masks = np.random.default_rng(1).uniform(0, 1, (2, FRAMES, MELS, CLASSES)).astype(np.float32)
    np.testing.assert_allclose(GlobalWeightedRankPooling(1.0)(masks).numpy(), masks.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(GlobalWeightedRankPooling(0.0)(masks).numpy(), masks.max(axis=(1, 2)))
    for decay in (0.9, 0.999):
        np.testing.assert_allclose(GlobalWeightedRankPooling(decay)(masks).numpy(), gwrp_reference(masks, decay),
                                   rtol=1e-5)
    many = np.random.default_rng(2).uniform(0, 1, (1, 400, 64, 2)).astype(np.float32)  # 25600 values per class
    for decay in (0.9, 0.9995):  # d^j underflows to 0 for most ranks / sums to about 2000
        np.testing.assert_allclose(GlobalWeightedRankPooling(decay)(many).numpy(), gwrp_reference(many, decay),
                                   rtol=1e-4)


def test_gwrp_affine_starts_as_gwrp_and_learns_a_scale_and_offset_per_class():
    masks = np.random.default_rng(1).uniform(0, 1, (4, FRAMES, MELS, CLASSES)).astype(np.float32) ** 4
    classifier = build_classifier("gwrp_affine", CLASSES, MELS, decay=0.9)
    np.testing.assert_allclose(classifier(masks).numpy(), gwrp_reference(masks, 0.9), rtol=1e-4)
    readout = classifier.get_layer("logit_affine")
    readout.scale.assign([2.0, 1.0, 0.5])
    readout.offset.assign([1.0, 0.0, -1.0])
    pooled = gwrp_reference(masks, 0.9)
    logits = np.log(pooled) - np.log1p(-pooled)
    expected = 1 / (1 + np.exp(-(np.array([2.0, 1.0, 0.5]) * logits + np.array([1.0, 0.0, -1.0]))))
    np.testing.assert_allclose(classifier(masks).numpy(), expected, rtol=1e-4)
    assert np.all(np.isfinite(classifier(np.ones((1, FRAMES, MELS, CLASSES), np.float32)).numpy()))
    # A short event's few high values pool to 0.19, a faint mask to 0.05: GWRP alone cannot make
    # either confident, the read-out learns to (masks fixed, only the scale and offset train).
    readout.scale.assign([1.0] * CLASSES)
    readout.offset.assign([0.0] * CLASSES)
    clips = np.full((2, FRAMES, MELS, CLASSES), 0.05, np.float32)
    clips[0, 3, 2:4] = 1.0
    labels = np.array([[1.0] * CLASSES, [0.0] * CLASSES], np.float32)
    optimizer = keras.optimizers.Adam(0.1)
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = keras.losses.binary_crossentropy(labels, classifier(clips))
        optimizer.apply(tape.gradient(loss, [readout.scale, readout.offset]), [readout.scale, readout.offset])
    probabilities = classifier(clips).numpy()
    assert np.all(probabilities[0] > 0.9) and np.all(probabilities[1] < 0.1)


def test_linear_softmax_pooling_scores_a_binary_event_mask_one_whatever_its_extent():
    masks = np.random.default_rng(1).uniform(0, 1, (2, FRAMES, MELS, CLASSES)).astype(np.float32)
    np.testing.assert_allclose(LinearSoftmaxPooling()(masks).numpy(),
                               (masks ** 2).sum(axis=(1, 2)) / masks.sum(axis=(1, 2)), rtol=1e-5)
    events = np.zeros((3, FRAMES, MELS, 1), np.float32)
    events[0, 3, 2], events[1, 2:6, 1:5], events[2] = 1.0, 1.0, 1.0  # 1 value, 16 values, all 128
    np.testing.assert_allclose(LinearSoftmaxPooling()(events).numpy(), 1.0, rtol=1e-6)
    # GWRP's answer to the same masks depends on how many values the event covers
    assert len(set(np.round(GlobalWeightedRankPooling(0.9)(events).numpy()[:, 0], 3))) == 3
    assert LinearSoftmaxPooling()(np.zeros((1, FRAMES, MELS, 1), np.float32)).numpy()[0, 0] == 0.0
    masks = tf.Variable(events[1:2] * 0.8 + 0.1)  # event at 0.9, the rest at 0.1: P = 0.5
    with tf.GradientTape() as tape:
        probability = LinearSoftmaxPooling()(masks)[0, 0]
    gradient = tape.gradient(probability, masks).numpy()
    # raising P raises the values above P / 2 and lowers the others: masks are driven towards 0 / 1
    assert np.all(gradient[events[1:2] > 0] > 0) and np.all(gradient[events[1:2] == 0] < 0)


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_each_classifier_gives_per_class_probabilities_with_gradients(kind):
    keras.utils.set_random_seed(0)
    classifier = build_classifier(kind, CLASSES, MELS, **CLASSIFIER_OPTIONS[kind])
    masks = tf.constant(np.random.default_rng(3).uniform(0, 1, (2, FRAMES, MELS, CLASSES)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(masks)
        probabilities = classifier(masks)
        first_class = probabilities[:, 0]
    assert tuple(probabilities.shape) == (2, CLASSES) and probabilities.dtype == tf.float32
    assert np.all((probabilities.numpy() >= 0) & (probabilities.numpy() <= 1))
    gradient = tape.gradient(first_class, masks).numpy()
    assert np.any(gradient[..., 0] != 0) and np.all(gradient[..., 1:] == 0)  # class 0 depends on its own mask only
    changed = masks.numpy()
    changed[..., 0] = np.random.default_rng(4).uniform(0, 1, (2, FRAMES, MELS)) ** 3
    changed_probabilities = classifier(changed).numpy()
    np.testing.assert_array_equal(changed_probabilities[:, 1:], probabilities.numpy()[:, 1:])
    assert np.all(changed_probabilities[:, 0] != probabilities.numpy()[:, 0])


def test_classifier_options_are_checked():
    with pytest.raises(ValueError, match="option num_frames is required"):
        build_classifier("dense", CLASSES, MELS)
    with pytest.raises(ValueError, match=r"unknown options \['decay'\]"):
        build_classifier("max", CLASSES, MELS, decay=0.9)
    with pytest.raises(ValueError, match="unknown kind 'mean'"):
        build_classifier("mean", CLASSES, MELS)


def test_mask_model_settings_and_parameter_counts():
    def conv_bn(inputs, outputs, kernel):  # no conv bias; batch norm has 4 values per map
        return kernel * kernel * inputs * outputs + 4 * outputs

    thesis = conv_bn(1, 64, 5) + conv_bn(64, 64, 5) + conv_bn(64, 3, 5)
    kong = conv_bn(1, 64, 3) + 7 * conv_bn(64, 64, 3) + 64 * 3 + 3
    assert build_mask_model(64, 3, "thesis").count_params() == thesis
    assert build_mask_model(64, 3, "kong").count_params() == kong
    assert build_mask_model(64, 3, "thesis", "softmax").count_params() == thesis + conv_bn(64, 1, 5)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_mask_model(MELS, CLASSES, kernel_size=4)


def _bands_seen(model, frames=20, bands=64, band=32):
    """The input bands whose values move one mask value in the middle of the clip."""
    features = tf.Variable(np.random.default_rng(0).normal(size=(1, frames, bands)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(model(features, training=False)[0, frames // 2, band])
    return np.flatnonzero(np.abs(tape.gradient(value, features).numpy()[0]).sum(axis=0))


@pytest.mark.parametrize("setting, dilations, seen", [
    ("thesis", None, (24, 40)), ("thesis", [1, 3, 9], (4, 60)),
    ("kong", None, (24, 40)), ("kong", [1, 1, 2, 4], (16, 48))])
def test_frequency_dilations_widen_the_bands_each_mask_value_sees_without_gaps(setting, dilations, seen):
    options = dict(channels=4, num_blocks=4, dropout=0.0)
    model = build_mask_model(64, CLASSES, setting, frequency_dilations=dilations, **options)
    bands = _bands_seen(model)
    assert (bands[0], bands[-1]) == seen and len(bands) == seen[1] - seen[0] + 1
    # The same weights, only spread further apart: no parameter is added.
    assert model.count_params() == build_mask_model(64, CLASSES, setting, **options).count_params()
    assert model(np.zeros((1, 7, 64), np.float32)).shape == (1, 7, 64, CLASSES)


def test_checkpoint_spec_rebuilds_the_frequency_dilations():
    config = dict(num_mels=64, mask_setting="thesis", mask_activation="sigmoid", mask_channels=4,
                  mask_kernel_size=None, mask_dropout=None, mask_blocks=4, mask_frequency_dilations=[1, 3, 9],
                  synchronized_batch_norm=False, classifier="gwrp", classifier_options={}, gwrp_decay=0.98,
                  front_end="pcen")
    model = build_weak_label_model(**model_spec_of(config, CLASSES, num_frames=FRAMES))
    assert [layer.dilation_rate for layer in model.get_layer("mask_model").layers
            if isinstance(layer, keras.layers.Conv2D)] == [(1, 1), (1, 3), (1, 9), (1, 1)]


@pytest.mark.parametrize("dilations", [[1, 3], [1, 3, 9, 27], [1, 0, 3], [1, 2.0, 3], [1, True, 3]])
def test_frequency_dilations_need_one_positive_integer_per_hidden_block(dilations):
    with pytest.raises(ValueError, match="frequency_dilations must be 3 positive integers, one per hidden block"):
        build_mask_model(64, CLASSES, "thesis", channels=4, num_blocks=4, frequency_dilations=dilations)


@pytest.mark.parametrize("setting", ["thesis", "kong"])
def test_masks_keep_any_clip_length_and_softmax_leaves_the_background(setting):
    sigmoid = build_mask_model(MELS, CLASSES, setting, **TINY_MASKS)
    softmax = build_mask_model(MELS, CLASSES, setting, "softmax", **TINY_MASKS)
    for frames in (7, FRAMES):
        features = np.random.default_rng(frames).normal(size=(2, frames, MELS)).astype(np.float32)
        masks = sigmoid(features).numpy()
        assert masks.shape == (2, frames, MELS, CLASSES) and np.all((masks > 0) & (masks < 1))
        np.testing.assert_allclose(background_mask(masks), 1 - np.clip(masks.sum(-1), 0, 1), rtol=1e-6)
        class_masks = softmax(features).numpy()
        assert class_masks.shape == (2, frames, MELS, CLASSES)
        total = class_masks.sum(-1)  # the dropped background channel holds the rest
        assert np.all((total > 0) & (total < 1))


def test_one_fit_epoch_reduces_the_clip_bce():
    keras.utils.set_random_seed(0)
    model = build_weak_label_model(MELS, CLASSES, dict(TINY_MASKS, dropout=0.0), "gwrp", {"decay": 0.9})
    model.compile(keras.optimizers.Adam(1e-2), loss={"probabilities": "binary_crossentropy"})
    features = np.random.default_rng(5).normal(size=(8, FRAMES, MELS)).astype(np.float32)
    labels = np.random.default_rng(6).integers(0, 2, (8, CLASSES)).astype(np.float32)

    def batch_bce():  # with batch statistics: 16 steps barely move batch norm's moving averages
        probabilities = model(features, training=True)["probabilities"].numpy().astype(np.float64)
        return -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))

    before = batch_bce()
    model.fit(np.tile(features, (16, 1, 1)), {"probabilities": np.tile(labels, (16, 1))}, batch_size=8, epochs=1,
              shuffle=False, verbose=0)
    assert batch_bce() < 0.8 * before


@pytest.mark.parametrize("kind, front_end", [*((kind, "trainable_pcen") for kind in sorted(CLASSIFIERS)),
                                             ("gwrp", "relative_db"), ("gwrp", "pcen_relative_db")])
def test_weak_label_model_with_a_front_end_layer_survives_saving(kind, front_end, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_weak_label_model(MELS, CLASSES, dict(TINY_MASKS, last_activation="softmax"), kind,
                                   CLASSIFIER_OPTIONS[kind], front_end=front_end)
    # Weights away from their initial values, so that loading must restore them.
    model.set_weights([weight + 0.1 for weight in model.get_weights()])
    path = str(tmp_path / "weak_label.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    energies = mel_power(FRAMES, seed=7)
    for name, output in model(energies).items():
        np.testing.assert_allclose(loaded(energies)[name].numpy(), output.numpy(), rtol=1e-5, atol=1e-6)


def test_per_band_trainable_pcen_survives_saving(tmp_path):
    energies = keras.Input((None, MELS))
    model = keras.Model(energies, PCEN(trainable=True, per_band=True, num_smoothers=2)(energies))
    model.set_weights([weight + 0.1 * np.arange(weight.size).reshape(weight.shape) for weight in model.get_weights()])
    path = str(tmp_path / "pcen.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(mel_power(FRAMES, seed=8)).numpy(), model(mel_power(FRAMES, seed=8)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_fixed_frame_classifier_leaves_the_mask_model_open_for_any_length():
    model = build_weak_label_model(MELS, CLASSES, TINY_MASKS, "dense", {"num_frames": FRAMES})
    outputs = model(np.zeros((2, FRAMES, MELS), np.float32))
    assert tuple(outputs["probabilities"].shape) == (2, CLASSES)
    assert tuple(model.get_layer("mask_model")(np.zeros((1, 3 * FRAMES, MELS), np.float32)).shape) == (
        1, 3 * FRAMES, MELS, CLASSES)
