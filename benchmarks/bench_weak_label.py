"""Training throughput of the weak-label mask model at TUT shapes, against a plain Keras `fit`.

Run:  python benchmarks/bench_weak_label.py [--batch-size 32] [--steps 3] [--classifier gwrp]

TUT shapes (SPEC section 3): 4 s clips at 16 kHz, hop 512 -> 126 frames, 64 mel bands, 3
classes; the thesis mask model (3 blocks of 5x5 convolutions, 64 maps) and global weighted
rank pooling. All figures come from this one run, so a busy machine slows every one alike:
* the machine's float32 matmul rate, the yardstick for GFLOP/s (3x the forward FLOPs per
  training example);
* plain Keras `fit` of the same model (Adam, BCE on the probabilities), with Keras's default
  `jit_compile="auto"` (XLA) and with XLA off;
* the project's training step (Models/weak_label/solver.py, JointModel), with and without XLA.
Each is timed twice, alternating, and the faster round kept.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_training import _BatchClock, forward_flops, matmul_gflops, timed_loop  # noqa: E402
from Models.weak_label.model import build_weak_label_model  # noqa: E402
from Models.weak_label.solver import JointModel  # noqa: E402

FRAMES, MELS, CLASSES = 126, 64, 3


def spec(classifier: str) -> dict:
    """The arguments of build_weak_label_model at TUT shapes."""
    return {"num_mels": MELS, "num_classes": CLASSES, "mask_options": {"setting": "thesis"},
            "classifier_kind": classifier, "classifier_options": {"decay": 0.999} if classifier == "gwrp" else {}}


def plain_fit(features, labels, classifier: str, jit_compile):
    model = build_weak_label_model(**spec(classifier))
    model.compile(keras.optimizers.Adam(1e-3), loss={"probabilities": "binary_crossentropy"},
                  jit_compile=jit_compile)
    dataset = tf.data.Dataset.from_tensors((features, {"probabilities": labels})).repeat()
    clock = _BatchClock()

    def seconds_per_step(steps: int) -> float:
        model.fit(dataset, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[clock])
        return (clock.ends[-1] - clock.ends[1]) / steps
    return seconds_per_step


def project_step(features, labels, classifier: str, jit_compile: bool):
    joint = JointModel(spec(classifier), 1e-3, jit_compile=jit_compile)
    return timed_loop(lambda: joint.train_step(features, labels)["loss"].numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--classifier", default="gwrp")
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal((arguments.batch_size, FRAMES, MELS)).astype(np.float32))
    labels = tf.constant((rng.random((arguments.batch_size, CLASSES)) < 0.4).astype(np.float32))
    matmul = matmul_gflops()
    mask_model = build_weak_label_model(**spec(arguments.classifier)).get_layer("mask_model")
    flops = 3 * forward_flops(mask_model, (FRAMES, MELS))
    print(f"machine: {matmul:.0f} GFLOP/s float32 matmul; mask model training step {flops / 1e9:.2f} GFLOP/example; "
          f"batch {arguments.batch_size}, classifier {arguments.classifier}")
    runners = {"plain fit, jit auto (XLA)": plain_fit(features, labels, arguments.classifier, "auto"),
               "plain fit, XLA off": plain_fit(features, labels, arguments.classifier, False),
               "project step, XLA": project_step(features, labels, arguments.classifier, True),
               "project step, XLA off": project_step(features, labels, arguments.classifier, False)}
    seconds = {name: min(runner(arguments.steps) for _ in range(2)) for name, runner in runners.items()}
    for name, value in seconds.items():
        rate = arguments.batch_size / value
        print(f"{name:>26}: {rate:6.1f} examples/s, {rate * flops / 1e9:5.1f} GFLOP/s "
              f"({100 * rate * flops / 1e9 / matmul:.0f}% of matmul)")
    best_plain = min(seconds["plain fit, jit auto (XLA)"], seconds["plain fit, XLA off"])
    ours = seconds["project step, XLA off"]
    print(f"project step (as Training.py runs it: XLA off) over plain fit: "
          f"{seconds['plain fit, jit auto (XLA)'] / ours:.2f}x Keras's default fit, "
          f"{best_plain / ours:.2f}x the faster fit")


if __name__ == "__main__":
    main()
