"""Losses and compiled training steps of semi-supervised adversarial separation (SPEC section 2).

`AdversarialSeparator` holds the separator, one WGAN-GP critic per source and their
optimisers. Its two steps follow the paper:

* `supervised_step`: MSE between estimated and true log1p magnitudes, summed over sources.
* `semi_supervised_step`: `num_disc` critic iterations (one Adam step per critic, each on a
  fresh unpaired batch), then one separator step on
  `L_sup + alpha * L_adv + beta * L_add`, where L_adv asks every critic to score the
  separator's estimates for unpaired mixtures as real, and L_add asks those estimates to add
  up to the mixture in linear magnitude.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from Datasets.conversions import PAPER_SOURCES
from Datasets.windows import WindowShapes
from Models.adversarial.critic import build_critic
from Models.distribution import replicated_step, split_among_replicas
from Models.registry import SeparatorSpec

# The paper's separator: a 4-level U-Net with 16 base filters over the 257 bins of n_fft 512.
PAPER_SEPARATOR = SeparatorSpec("unet", 257, PAPER_SOURCES, {"num_layers": 4, "base_filters": 16})


def supervised_losses(estimates: dict, targets: tf.Tensor, source_names: tuple[str, ...]) -> tf.Tensor:
    """Per example: the sum over sources of the mean squared error in log1p space; targets are
    stacked last. (batch,)"""
    return tf.add_n([tf.reduce_mean(tf.square(estimates[name][..., 0] - targets[..., index]), axis=[1, 2])
                     for index, name in enumerate(source_names)])


def additivity_losses(mixture_input: tf.Tensor, estimates: dict, shapes: WindowShapes) -> tf.Tensor:
    """Per example: the MSE in linear magnitude between the mixture's output region and the sum
    of the estimates. (batch,)"""
    bins = (shapes.input_bins - shapes.output_bins) // 2
    frames = shapes.context_frames
    mixture = mixture_input[:, bins:bins + shapes.output_bins, frames:frames + shapes.output_frames, 0]
    total = tf.add_n([tf.math.expm1(estimate[..., 0]) for estimate in estimates.values()])
    return tf.reduce_mean(tf.square(tf.math.expm1(mixture) - total), axis=[1, 2])


def gradient_penalties(critic: keras.Model, real: tf.Tensor, fake: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
    """Per example: max(||grad D(x_hat)|| - 1, 0)^2, the one-sided penalty, at x_hat = epsilon *
    real + (1 - epsilon) * fake. Reals and fakes are independent draws (solo recordings, and
    estimates for other mixtures), so pairing them in batch order is a random pairing. (batch,)"""
    epsilon = tf.reshape(epsilon, [-1, 1, 1, 1])
    interpolates = epsilon * real + (1.0 - epsilon) * fake
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic(interpolates, training=True)
    gradients = tape.gradient(scores, interpolates)
    norms = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + 1e-12)
    return tf.square(tf.nn.relu(norms - 1.0))


class AdversarialSeparator:
    """Separator, critics and optimisers, with the two compiled training steps.

    The steps run on every replica of `strategy` (tf.distribute; by default the one device
    there is): each takes global batches, gives every replica its own slice, averages every
    loss over the global batch (so gradients summed over replicas are those of the global mean)
    and returns the global means. The penalty's interpolation weights are drawn per example
    with the batches, from a seeded generator whose state is checkpointed."""

    def __init__(self, spec: SeparatorSpec = PAPER_SEPARATOR, num_frames: int = 64, critic_base_filters: int = 32,
                 critic_max_filters: int = 256, critic_dense_units: int = 32, supervised_lr: float = 5e-5,
                 semi_supervised_lr: float = 5e-5, critic_lr: float = 5e-5, alpha: float = 1e-3,
                 beta: float = 1e-3, lam: float = 10.0, num_disc: int = 5, seed: int = 0,
                 jit_compile: bool = False, jit_compile_semi_supervised: bool = False, mixed_precision: bool = False,
                 strategy: tf.distribute.Strategy | None = None):
        """`spec` names the separator's architecture (Models/registry.py); its training windows
        predict at least `num_frames` frames."""
        self.spec = spec
        self.shapes = spec.geometry().windows(num_frames)
        self.source_names = spec.source_names
        self.alpha, self.beta, self.lam, self.num_disc = alpha, beta, lam, num_disc
        self.noise = np.random.default_rng([seed, 1])
        self.strategy = strategy or tf.distribute.get_strategy()
        # float16 compute with float32 weights and loss scaling: a large speed-up on GPUs with
        # tensor cores, none on CPUs. The policy is global in Keras, so it is set either way.
        keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
        with self.strategy.scope():
            self.separator = spec.build()
            self.critics = {name: build_critic(self.shapes, spec.num_bins, num_frames, critic_base_filters,
                                               critic_max_filters, critic_dense_units, name=f"critic_{name}")
                            for name in self.source_names}

            def adam(learning_rate, name):
                optimizer = keras.optimizers.Adam(learning_rate, name=name)
                return keras.optimizers.LossScaleOptimizer(optimizer, name=name) if mixed_precision else optimizer

            self.optimizers = {"supervised": adam(supervised_lr, "supervised"),
                               "semi_supervised": adam(semi_supervised_lr, "semi_supervised"),
                               **{f"critic_{name}": adam(critic_lr, f"critic_{name}") for name in self.source_names}}
            for name, optimizer in self.optimizers.items():
                model = self.critics[name[len("critic_"):]] if name.startswith("critic_") else self.separator
                optimizer.build(model.trainable_variables)
        # XLA helps the supervised step, but on the CPUs measured made the critic iterations (the
        # gradient penalty's second-order gradients) 1.7-5x slower (benchmarks/bench_training.py)
        self._steps = {name: replicated_step(self.strategy, step, xla)
                       for name, step, xla in (("supervised", self._supervised_step, jit_compile),
                                               ("critic", self._critic_step, jit_compile_semi_supervised),
                                               ("separator", self._separator_step, jit_compile_semi_supervised),
                                               ("diagnostics", self._diagnostics, jit_compile_semi_supervised))}

    def _run(self, name: str, *batches) -> dict:
        return self._steps[name](*split_among_replicas(self.strategy, batches))

    @staticmethod
    def _apply(optimizer, tape: tf.GradientTape, loss: tf.Tensor, variables: list) -> None:
        """One optimiser step. A loss-scaling optimiser needs the gradients of its scaled loss; as
        scaling is linear, the scale seeds the backward pass instead of multiplying the loss."""
        scale = optimizer.scale_loss(tf.ones_like(loss))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables, output_gradients=scale), variables))

    # ---- the steps ---------------------------------------------------------------------------
    def supervised_step(self, mixture, sources) -> dict:
        return self._run("supervised", mixture, sources)

    def _supervised_step(self, batches, global_batch: int) -> dict:
        mixture, sources = batches
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(
                supervised_losses(self.separator(mixture, training=True), sources, self.source_names),
                global_batch_size=global_batch)
        self._apply(self.optimizers["supervised"], tape, loss, self.separator.trainable_variables)
        return {"supervised_loss": loss}

    def critic_step(self, mixture, real_sources) -> dict:
        """One Adam step per critic: real solo excerpts against estimates for unpaired mixtures."""
        epsilon = self.noise.uniform(size=(len(mixture), len(self.source_names))).astype(np.float32)
        return self._run("critic", mixture, tuple(real_sources), epsilon)

    def _critic_step(self, batches, global_batch: int) -> dict:
        mixture, real_sources, epsilon = batches
        fakes = self.separator(mixture, training=False)
        metrics = {}
        for index, (name, real) in enumerate(zip(self.source_names, real_sources)):
            critic = self.critics[name]
            with tf.GradientTape() as tape:
                wasserstein = critic(real, training=True)[:, 0] - critic(fakes[name], training=True)[:, 0]
                penalty = gradient_penalties(critic, real, fakes[name], epsilon[:, index])
                losses = {"critic_loss": -wasserstein + self.lam * penalty, "wasserstein": wasserstein,
                          "gradient_penalty": penalty}
                losses = {key: tf.nn.compute_average_loss(value, global_batch_size=global_batch)
                          for key, value in losses.items()}
            self._apply(self.optimizers[f"critic_{name}"], tape, losses["critic_loss"], critic.trainable_variables)
            metrics.update({f"{key}/{name}": value for key, value in losses.items()})
        return metrics

    def semi_supervised_step(self, mixture, sources, unpaired_batches: list) -> dict:
        """`num_disc` critic iterations, one per unpaired batch but the last, then one separator
        step on the paired batch and the last unpaired batch's mixtures."""
        if len(unpaired_batches) != self.num_disc + 1:
            raise ValueError(f"a semi-supervised step needs num_disc + 1 = {self.num_disc + 1} unpaired batches")
        metrics = {}
        for unpaired_mixture, real_sources in unpaired_batches[:-1]:
            metrics = self.critic_step(unpaired_mixture, real_sources)
        return {**metrics, **self.separator_step(mixture, sources, unpaired_batches[-1][0])}

    def separator_step(self, mixture, sources, unpaired_mixture) -> dict:
        """The separator's half of a semi-supervised step."""
        return self._run("separator", mixture, sources, unpaired_mixture)

    def _separator_step(self, batches, global_batch: int) -> dict:
        mixture, sources, unpaired_mixture = batches
        with tf.GradientTape() as tape:
            supervised = supervised_losses(self.separator(mixture, training=True), sources, self.source_names)
            estimates = self.separator(unpaired_mixture, training=True)
            adversarial = -tf.add_n([self.critics[name](estimates[name], training=False)[:, 0]
                                     for name in self.source_names])
            additivity = additivity_losses(unpaired_mixture, estimates, self.shapes)
            losses = {"separator_loss": supervised + self.alpha * adversarial + self.beta * additivity,
                      "supervised_loss": supervised, "adversarial_loss": adversarial, "additivity_loss": additivity}
            losses = {key: tf.nn.compute_average_loss(value, global_batch_size=global_batch)
                      for key, value in losses.items()}
        self._apply(self.optimizers["semi_supervised"], tape, losses["separator_loss"],
                    self.separator.trainable_variables)
        return losses

    def diagnostics(self, mixture, sources, unpaired_mixture, held_back_mixture, held_back_sources) -> dict:
        """What the semi-supervised phase is doing, changing nothing: the global norm of the
        separator's gradient from each term of its loss (L_sup, alpha L_adv, beta L_add) on a
        step's batches, and per critic, on held-back batches (solo sources and estimates for
        mixtures of songs it never trains on), its Wasserstein estimate and its ranking
        accuracy: the share of (real, fake) pairs it scores in the right order (0.5: chance)."""
        return self._run("diagnostics", mixture, sources, unpaired_mixture, held_back_mixture,
                         tuple(held_back_sources))

    def _diagnostics(self, batches, global_batch: int) -> dict:
        mixture, sources, unpaired_mixture, held_back_mixture, held_back_sources = batches
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync  # the step sums every metric over the replicas

        def mean(losses):
            return tf.nn.compute_average_loss(losses, global_batch_size=global_batch)

        variables = self.separator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            estimates = self.separator(unpaired_mixture, training=True)
            terms = {"supervised": mean(supervised_losses(self.separator(mixture, training=True), sources,
                                                          self.source_names)),
                     "adversarial": self.alpha * mean(-tf.add_n([self.critics[name](estimates[name])[:, 0]
                                                                 for name in self.source_names])),
                     "additivity": self.beta * mean(additivity_losses(unpaired_mixture, estimates, self.shapes))}
        metrics = {}
        for term, loss in terms.items():
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, tape.gradient(loss, variables))
            metrics[f"diagnostics/gradient_norm/{term}"] = tf.linalg.global_norm(gradients) / replicas
        fakes = self.separator(held_back_mixture, training=False)
        for name, real in zip(self.source_names, held_back_sources):
            real_scores = self.critics[name](real)[:, 0]
            fake_scores = self.critics[name](fakes[name])[:, 0]
            in_order = tf.cast(real_scores[:, None] > fake_scores[None, :], tf.float32)
            metrics[f"diagnostics/critic_accuracy/{name}"] = tf.reduce_mean(in_order) / replicas
            metrics[f"diagnostics/held_back_wasserstein/{name}"] = \
                (tf.reduce_mean(real_scores) - tf.reduce_mean(fake_scores)) / replicas
        return metrics
