"""The tf.distribute strategy a config asks for (`distribution`, `devices`).

    "none"      one device, TensorFlow's default placement (a GPU when there is one)
    "mirrored"  MirroredStrategy over all local GPUs (the CPU without one), or over the devices
                listed in `devices`

`batch_size` stays the global batch: every step splits it among the replicas, which must
divide it.
"""
from __future__ import annotations

import tensorflow as tf

DISTRIBUTIONS = ("none", "mirrored")


def check_distribution(distribution: str, devices: list[str]) -> None:
    """Config-level checks that need no devices."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Config key `distribution` must be one of {DISTRIBUTIONS}, got {distribution!r}.")
    if devices and distribution != "mirrored":
        raise ValueError(f"Config key `devices` lists {devices}, but only distribution='mirrored' places replicas on "
                         "named devices.")


def make_strategy(distribution: str, devices: list[str]) -> tf.distribute.Strategy:
    check_distribution(distribution, devices)
    if distribution == "none":
        return tf.distribute.get_strategy()
    if devices:
        known = {_normalised(device.name) for device in tf.config.list_logical_devices()}
        unknown = [device for device in devices if _normalised(device) not in known]
        if unknown:
            raise ValueError(f"Config key `devices`: {unknown} do not exist here; the devices are "
                             f"{sorted(known)}.")
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MirroredStrategy()


def _normalised(device: str) -> str:
    """'/gpu:0', 'GPU:0', '/device:GPU:0' or '/job:localhost/replica:0/task:0/device:GPU:0' -> '/gpu:0'."""
    return "/" + device.lower().rsplit("/", 1)[-1].replace("device:", "")


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"Config key `batch_size` ({batch_size}) is the global batch and must divide among the "
                         f"{replicas} replicas: use a multiple of {replicas}.")
