"""Run by tests/test_distribution.py in a process of its own, since logical devices must be set
up before TensorFlow starts: one supervised step, one critic iteration, one semi-supervised
separator step and one weak-label step on one device (no strategy) and on two replicas
(MirroredStrategy over two logical CPUs), from the same weights, batches and noise (the
weak-label model without dropout, with synchronized batch normalisation). Prints, after each
step as JSON, the loss difference, the largest relative weight difference and how many weight
values (of how many) differ by more than OFF of their tensor's largest magnitude.

Why a count as well as the largest difference: Adam's first step moves every weight by about
lr * sign(gradient), so a gradient that is zero up to float32 rounding steps one way or the
other with the order of the sums (seen once in CI: the critic's largest difference 0.059, two
learning rates over its kernel's largest weight). A replica bug (a slice lost, a sum not
averaged) moves most weights; rounding moves one of the hundreds or thousands here."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from Models.adversarial.model import AdversarialSeparator  # noqa: E402
from Models.registry import SeparatorSpec  # noqa: E402
from Models.weak_label.solver import JointModel  # noqa: E402

SPEC = SeparatorSpec("unet", 33, ("accompaniment", "voice"), {"num_layers": 2, "base_filters": 4})
BATCH = 4


def model(strategy):
    keras.utils.set_random_seed(0)
    return AdversarialSeparator(SPEC, num_frames=8, critic_base_filters=4, critic_max_filters=8, critic_dense_units=4,
                                supervised_lr=1e-2, semi_supervised_lr=1e-2, critic_lr=1e-2, alpha=0.5, beta=0.5,
                                num_disc=1, seed=3, strategy=strategy)


def batches(shapes):
    rng = np.random.default_rng(1)
    mixture_shape, source_shape = (BATCH, shapes.input_bins, shapes.input_frames, 1), \
        (BATCH, shapes.output_bins, shapes.output_frames)
    draw = lambda *shape: rng.uniform(0, 1, shape).astype(np.float32)  # noqa: E731
    paired = (draw(*mixture_shape), draw(*source_shape, 2))
    unpaired = [(draw(*mixture_shape), (draw(*source_shape, 1), draw(*source_shape, 1))) for _ in range(2)]
    return paired, unpaired


def weights(model):
    return [w.numpy() for w in model.separator.weights] + [w.numpy() for c in model.critics.values() for w in c.weights]


OFF = 1e-5


def differences(first, second) -> dict:
    relative = [np.abs(a - b) / max(float(np.max(np.abs(a))), 1e-12) for a, b in zip(first, second)]
    return {"relative_weight_difference": max(float(np.max(values)) for values in relative),
            "weights_off": sum(int(np.sum(values > OFF)) for values in relative),
            "weights": sum(values.size for values in relative)}


TWO_CPUS = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
single, mirrored = model(None), model(TWO_CPUS)
assert mirrored.strategy.num_replicas_in_sync == 2
(mixture, sources), unpaired = batches(single.shapes)
report = {}
for step in ("supervised", "critic", "separator"):
    losses = []
    for candidate in (single, mirrored):
        if step == "supervised":
            metrics = candidate.supervised_step(mixture, sources)
        elif step == "critic":
            metrics = candidate.critic_step(*unpaired[0])
        else:
            metrics = candidate.separator_step(mixture, sources, unpaired[1][0])
        losses.append({name: float(value) for name, value in metrics.items()})
    report[step] = {**differences(weights(single), weights(mirrored)),
                    "loss_difference": max(abs(losses[0][k] - losses[1][k]) for k in losses[0])}
WEAK_LABEL_SPEC = {"num_mels": 16, "num_classes": 3, "classifier_kind": "gwrp", "classifier_options": {"decay": 0.9},
                   "mask_options": {"setting": "thesis", "channels": 4, "num_blocks": 2, "dropout": 0.0,
                                    "synchronized_batch_norm": True}}
rng = np.random.default_rng(2)
features = rng.standard_normal((8, 20, 16)).astype(np.float32)
labels = (rng.random((8, 3)) < 0.4).astype(np.float32)
joints, losses = [], []
for strategy in (None, TWO_CPUS):
    keras.utils.set_random_seed(0)
    joint = JointModel(WEAK_LABEL_SPEC, 1e-2, sparsity_weight=0.3, jit_compile=False, strategy=strategy,
                       ema_momentum=0.5)
    joint.train_step(features, labels)
    losses.append({name: float(value) for name, value in joint.train_step(features, labels).items()})
    with joint.averaged_weights():  # the moving average is kept the same way on every replica
        averaged = [w.numpy() for w in joint.model.weights]
    joints.append([w.numpy() for w in joint.model.weights] + averaged)
report["weak_label"] = {**differences(*joints),
                        "loss_difference": max(abs(losses[0][k] - losses[1][k]) for k in losses[0])}
print(json.dumps(report))
