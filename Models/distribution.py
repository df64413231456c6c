"""The tf.distribute strategy a config asks for (`distribution`, `devices`), and a launcher of
local workers.

    "none"          one device, TensorFlow's default placement (a GPU when there is one)
    "mirrored"      MirroredStrategy over all local GPUs (the CPU without one), or over the
                    devices listed in `devices`
    "multi_worker"  MultiWorkerMirroredStrategy: every worker runs the same command, and the
                    cluster and this process's place in it come from the TF_CONFIG environment
                    variable, as TensorFlow documents. Worker 0 is the chief: only it writes
                    checkpoints, TensorBoard events, Sacred records and test reports.

`batch_size` stays the global batch: every step splits it among the replicas, which must
divide it. A collective operation that waits longer than `collective_timeout` seconds (a
worker died) stops the others with an error instead of a hang.

    python -m Models.distribution --workers 2 Training.py with demo distribution=multi_worker
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")

log = logging.getLogger(__name__)


def check_distribution(distribution: str, devices: list[str]) -> None:
    """Config-level checks that need no devices."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Config key `distribution` must be one of {DISTRIBUTIONS}, got {distribution!r}.")
    if devices and distribution != "mirrored":
        raise ValueError(f"Config key `devices` lists {devices}, but only distribution='mirrored' places replicas on "
                         "named devices.")
    if distribution == "multi_worker":
        cluster()


def cluster() -> dict:
    """TF_CONFIG, checked: a cluster of workers, and this process's task in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("distribution='multi_worker' needs the TF_CONFIG environment variable: JSON with "
                         "\"cluster\": {\"worker\": [\"host:port\", ...]} and \"task\": {\"type\": \"worker\", "
                         "\"index\": N} for this process (README, 'Train on several GPUs or machines'; "
                         "python -m Models.distribution starts local workers with it).")
    try:
        config = json.loads(raw)
        workers, task = config["cluster"]["worker"], config["task"]
        valid = task["type"] == "worker" and 0 <= task["index"] < len(workers)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not usable ({error!r}): it needs \"cluster\": {{\"worker\": [...]}} and "
                         f"\"task\": {{\"type\": \"worker\", \"index\": N}}; got {raw}") from error
    if not valid:
        raise ValueError(f"TF_CONFIG's task {task} is not one of the {len(workers)} workers of its cluster.")
    return config


def is_chief(distribution: str) -> bool:
    """Whether this process writes: always, but for the workers other than 0 of a multi_worker run."""
    return distribution != "multi_worker" or cluster()["task"]["index"] == 0


def make_strategy(distribution: str, devices: list[str], collective_timeout: float = 300.0):
    """The tf.distribute.Strategy of the config (TensorFlow is imported only here, so that the
    checks above stay cheap)."""
    import tensorflow as tf

    check_distribution(distribution, devices)
    if distribution == "none":
        return tf.distribute.get_strategy()
    if distribution == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
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


def strategy_for(config: dict):
    """The strategy of a Training.py config, once its global batch is known to divide among the replicas."""
    strategy = make_strategy(config["distribution"], config["devices"], config["collective_timeout"])
    check_global_batch(config["batch_size"], strategy)
    return strategy


def xla_allowed(strategy, jit_compile: bool) -> bool:
    """Whether the steps may be XLA-compiled under `strategy`: TensorFlow's XLA cannot compile
    the gradient all-reduce between CPU replicas, so several CPU replicas run without it."""
    cpu_replicas = strategy.num_replicas_in_sync > 1 and any(
        "CPU" in device.upper() for device in strategy.extended.worker_devices)
    if jit_compile and cpu_replicas:
        log.warning("jit_compile=True: XLA cannot compile collectives between CPU replicas, so the training steps "
                    "of this run are compiled without it.")
    return jit_compile and not cpu_replicas


def replicated_step(strategy, replica_step, jit_compile: bool):
    """`step(batches, global_batch)`: `replica_step` on every replica of `strategy`, each on its
    slice of the batches (see `split_among_replicas`), XLA-compiled where allowed; its dict of
    metrics, each already the replica's share of the global batch's value, summed over replicas."""
    import tensorflow as tf

    replica_step = tf.function(replica_step, jit_compile=xla_allowed(strategy, jit_compile), reduce_retracing=True)

    def step(batches, global_batch: int) -> dict:
        metrics = strategy.run(replica_step, args=(batches, global_batch))
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for name, value in metrics.items()}
    return tf.function(step, reduce_retracing=True)


def split_among_replicas(strategy, batches):
    """Global numpy batches (any nesting, batch axis first) -> (per-replica slices, the global
    batch size). The global batch must divide among the replicas."""
    import tensorflow as tf

    global_batch = len(tf.nest.flatten(batches)[0])
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"The global batch of {global_batch} examples does not divide among {replicas} "
                         "replicas: choose a batch_size that is a multiple of the replica count.")
    local = global_batch // replicas

    def slice_for(context):
        start = context.replica_id_in_sync_group * local
        return tf.nest.map_structure(lambda batch: tf.constant(batch[start:start + local]), batches)
    return strategy.experimental_distribute_values_from_function(slice_for), global_batch


def check_global_batch(batch_size: int, strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"Config key `batch_size` ({batch_size}) is the global batch and must divide among the "
                         f"{replicas} replicas: use a multiple of {replicas}.")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_tf_configs(workers: int) -> list[str]:
    """The TF_CONFIG of each of `workers` processes forming a cluster on this machine."""
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(workers)]
    return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
            for index in range(workers)]


def launch_local_workers(workers: int, command: list[str]) -> int:
    """Runs `python COMMAND` in `workers` processes on this machine, each with the TF_CONFIG of
    its place in a loopback cluster. When one fails, the others are stopped (they would wait
    for it); returns the first non-zero exit status, or 0."""
    processes = [subprocess.Popen([sys.executable, *command], env={**os.environ, "TF_CONFIG": tf_config})
                 for tf_config in loopback_tf_configs(workers)]
    running = list(processes)
    while running:
        for process in list(running):
            if process.poll() is None:
                continue
            running.remove(process)
            if process.returncode:
                print(f"Worker {processes.index(process)} exited with status {process.returncode}; stopping the "
                      "others.", file=sys.stderr)
                for other in running:
                    other.terminate()
                for other in running:
                    other.wait()
                return process.returncode
        time.sleep(0.2)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start a multi_worker training as local worker processes.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="e.g. Training.py with demo distribution=multi_worker")
    arguments = parser.parse_args(argv)
    if not arguments.command:
        parser.error("name the command, e.g. Training.py with demo distribution=multi_worker")
    sys.exit(launch_local_workers(arguments.workers, arguments.command))


if __name__ == "__main__":
    main()
