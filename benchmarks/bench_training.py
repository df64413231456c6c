"""Training throughput of the separator at paper shapes, against a plain Keras `fit`.

Run:  python benchmarks/bench_training.py [--batch-sizes 16 64] [--steps 4]
      python benchmarks/bench_training.py --strategies [--batch-sizes 16]   # on a GPU machine

All figures come from this one run, so a busy machine slows baseline and candidate alike:
* the machine's float32 matmul rate (2048 x 2048 products), the yardstick for GFLOP/s;
* a plain Keras `fit` of the same U-Net built from stock Keras layers (Adam, MSE on both
  outputs, in-memory batches);
* the project's compiled supervised step (Models/adversarial/model.py, XLA as in Training.py), and
  the same step with Keras's MaxPooling2D in place of the project's MaxPooling2x2;
* one semi-supervised step (num_disc=5 critic iterations plus the separator step) and its
  parts, with and without XLA, against 10 supervised steps measured in the same run (issue
  15's yardstick); --semi-only measures only this.
Training FLOPs are counted as 3x the forward pass (forward, input and weight gradients).
Baselines and candidates alternate and the best of two rounds is kept for each.
With --strategies it prints instead the supervised step's examples/s with distribution none
and mirrored (MirroredStrategy over every local GPU, or the CPU), XLA and mixed precision on
and off, each against the first row (none, no XLA, float32).
Targets (issue 3): supervised step >= 1.5x the plain fit at batch 16 and 64.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import Models.separator  # noqa: E402
from Models.adversarial.model import AdversarialSeparator  # noqa: E402
from Models.separator import build_separator  # noqa: E402

SUPERVISED_STEPS = 10  # issue 15: a semi-supervised step costs about this many supervised ones


def keras_pooling() -> contextlib.AbstractContextManager:
    """While active, separators are built with `keras.layers.MaxPooling2D`, as a plain
    implementation would be."""
    return mock.patch.object(Models.separator, "MaxPooling2x2", lambda name: keras.layers.MaxPooling2D(2, name=name))


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a = tf.random.uniform((size, size))
    product = tf.function(lambda x: tf.linalg.matmul(x, x))
    product(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = product(a)
    result.numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops(model: keras.Model, input_shape: tuple[int, ...]) -> float:
    """Multiply-adds x 2 of every convolution for one example of `input_shape`."""
    model = keras.models.clone_model(model, input_tensors=keras.Input(input_shape))  # static shapes
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels = layer.input.shape
            total += height * width * channels * np.prod(layer.kernel_size) * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * np.prod(layer.kernel_size) * layer.input.shape[-1]
    return 2.0 * total


def timed_loop(step):
    """A runner: `runner(steps)` is the seconds per call of `step` after two warm-up calls
    (tracing, XLA compilation)."""
    def seconds_per_step(steps: int) -> float:
        for _ in range(2):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps
    return seconds_per_step


class _BatchClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def plain_fit(mixture, sources):
    """A runner like `timed_loop`'s: one `fit` call, per-step times from a callback."""
    with keras_pooling():
        separator = build_separator()
    stacked = keras.layers.Concatenate()(list(separator.outputs))
    model = keras.Model(separator.inputs, stacked)
    model.compile(keras.optimizers.Adam(5e-5), "mse")
    dataset = tf.data.Dataset.from_tensors((mixture, sources)).repeat()
    clock = _BatchClock()

    def seconds_per_step(steps: int) -> float:
        model.fit(dataset, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[clock])
        return (clock.ends[-1] - clock.ends[1]) / steps
    return seconds_per_step


def batches_of(rng, batch_size: int) -> tuple:
    """A paired batch at paper shapes: mixtures (350 x 158) and both sources (258 x 66)."""
    return (tf.constant(rng.uniform(0, 1, (batch_size, 350, 158, 1)).astype(np.float32)),
            tf.constant(rng.uniform(0, 1, (batch_size, 258, 66, 2)).astype(np.float32)))


def project_step(mixture, sources, jit_compile: bool = True):
    model = AdversarialSeparator(jit_compile=jit_compile)
    return timed_loop(lambda: model.supervised_step(mixture, sources)["supervised_loss"].numpy())


def semi_supervised_parts(batch_size: int, jit_compile: bool) -> dict:
    """Runners of one semi-supervised step (num_disc=5) and of its parts: one critic iteration
    (the separator's estimates for an unpaired batch, then one Adam step of each critic with
    its gradient penalty) and the separator's step."""
    model = AdversarialSeparator(num_disc=5, jit_compile=jit_compile, jit_compile_semi_supervised=jit_compile)
    shapes, rng = model.shapes, np.random.default_rng(0)

    def batch(*shape):
        return tf.constant(rng.uniform(0, 1, (batch_size, *shape)).astype(np.float32))

    mixture_shape, source_shape = (shapes.input_bins, shapes.input_frames, 1), (shapes.output_bins, shapes.output_frames)
    paired = (batch(*mixture_shape), batch(*source_shape, 2))
    unpaired = [(batch(*mixture_shape), (batch(*source_shape, 1), batch(*source_shape, 1))) for _ in range(6)]
    return {"semi-supervised step": timed_loop(
                lambda: model.semi_supervised_step(*paired, unpaired)["separator_loss"].numpy()),
            "critic iteration": timed_loop(
                lambda: model.critic_step(*unpaired[0])["critic_loss/voice"].numpy()),
            "separator step": timed_loop(
                lambda: model.separator_step(*paired, unpaired[0][0])["separator_loss"].numpy())}


def strategy_table(batch_size: int, steps: int) -> None:
    """Examples/s of the supervised step for each strategy, XLA and precision setting."""
    rng = np.random.default_rng(0)
    mixture = tf.constant(rng.uniform(0, 1, (batch_size, 350, 158, 1)).astype(np.float32))
    sources = tf.constant(rng.uniform(0, 1, (batch_size, 258, 66, 2)).astype(np.float32))
    baseline = None
    print(f"| distribution | XLA | mixed precision | examples/s (batch {batch_size}) | vs first row |")
    print("| --- | --- | --- | --- | --- |")
    for distribution in ("none", "mirrored"):
        for jit_compile in (False, True):
            for mixed_precision in (False, True):
                strategy = tf.distribute.MirroredStrategy() if distribution == "mirrored" else None
                model = AdversarialSeparator(jit_compile=jit_compile, mixed_precision=mixed_precision,
                                             strategy=strategy)
                seconds = timed_loop(lambda: model.supervised_step(mixture, sources)["supervised_loss"].numpy())(steps)
                keras.mixed_precision.set_global_policy("float32")
                rate = batch_size / seconds
                baseline = baseline or rate
                print(f"| {distribution} | {jit_compile} | {mixed_precision} | {rate:.1f} | {rate / baseline:.2f}x |",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--semi-only", action="store_true", help="only the semi-supervised step and its parts")
    parser.add_argument("--strategies", action="store_true",
                        help="the table of distribution, XLA and mixed precision settings instead")
    arguments = parser.parse_args()
    if arguments.strategies:
        print(f"devices: {[device.name for device in tf.config.list_logical_devices()]}")
        strategy_table(arguments.batch_sizes[0], arguments.steps)
        return
    matmul = matmul_gflops()
    flops = 3 * forward_flops(build_separator(), (350, 158, 1))
    print(f"machine: {matmul:.0f} GFLOP/s float32 matmul; separator training step {flops / 1e9:.2f} GFLOP/example")
    rng = np.random.default_rng(0)
    for batch_size in [] if arguments.semi_only else arguments.batch_sizes:
        mixture, sources = batches_of(rng, batch_size)
        plain, ours = plain_fit(mixture, sources), project_step(mixture, sources)
        with keras_pooling():
            ours_keras_pooling = project_step(mixture, sources)
        rounds = [(plain(arguments.steps), ours(arguments.steps), ours_keras_pooling(arguments.steps))
                  for _ in range(2)]
        plain_time, ours_time, keras_pooling_time = (min(times) for times in zip(*rounds))
        for name, seconds in (("plain Keras fit", plain_time), ("project step", ours_time),
                              ("with MaxPooling2D", keras_pooling_time)):
            rate = batch_size / seconds
            print(f"batch {batch_size:3d} {name:>17}: {rate:6.1f} examples/s, {rate * flops / 1e9:5.1f} GFLOP/s "
                  f"({100 * rate * flops / 1e9 / matmul:.0f}% of matmul)")
        print(f"batch {batch_size:3d} speed-up over plain fit: {plain_time / ours_time:.2f}x (target >= 1.5x); "
              f"MaxPooling2x2 over MaxPooling2D: {keras_pooling_time / ours_time:.2f}x")
    batch_size = arguments.batch_sizes[0]
    print(f"semi-supervised step (num_disc=5), batch {batch_size}, against {SUPERVISED_STEPS} supervised steps:")
    for jit_compile in (True, False):
        supervised = project_step(*batches_of(rng, batch_size), jit_compile=jit_compile)(arguments.steps)
        parts = {name: runner(2) for name, runner in semi_supervised_parts(batch_size, jit_compile).items()}
        print(f"  {'XLA' if jit_compile else 'no XLA'}: {parts['semi-supervised step']:.2f} s = "
              f"{parts['semi-supervised step'] / supervised:.1f} supervised steps ({supervised:.3f} s each; "
              f"{SUPERVISED_STEPS} take {SUPERVISED_STEPS * supervised:.2f} s); of it 5 critic iterations "
              f"{5 * parts['critic iteration']:.2f} s and the separator step {parts['separator step']:.2f} s")


if __name__ == "__main__":
    main()
