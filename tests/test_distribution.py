"""Training on several replicas with tf.distribute (Models/distribution.py)."""
import glob
import json
import os
import pickle
import subprocess
import sys

import pytest

from conftest import REPO
from Models.distribution import check_global_batch, make_strategy


def test_two_replicas_train_to_the_weights_of_one_device():
    """One supervised step, one critic iteration, one semi-supervised separator step with the
    gradient penalty, and one weak-label step: MirroredStrategy over two logical CPUs against no
    strategy, with the same global batch, weights and noise."""
    completed = subprocess.run([sys.executable, os.path.join(REPO, "tests", "scripts", "replica_equivalence.py")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(report) == {"supervised", "critic", "separator", "weak_label"}
    for step, differences in report.items():
        # a weight or two of hundreds may be off by rounding (tests/scripts/replica_equivalence.py says why)
        assert differences["weights_off"] <= 2 and differences["weights"] > 400, (step, differences)
        assert differences["relative_weight_difference"] < 0.1, (step, differences)
        assert differences["loss_difference"] < 1e-5, (step, differences)


def test_a_mirrored_run_trains_and_scores(tiny_config):
    from Training import ex

    run = ex.run(config_updates=dict(tiny_config, distribution="mirrored", devices=["/cpu:0"], phases=["supervised"],
                                     max_epochs=1))
    assert run.status == "COMPLETED" and "voice_median_SDR" in run.result["supervised"]


def test_a_mirrored_weak_label_run_trains_and_reports(tmp_path):
    from Training import ex
    from test_weak_label_training import TINY_DEMO

    run = ex.run(config_updates=dict(
        method="weak_label", weak_label_recipe="demo", recipe_options=TINY_DEMO, expected_sr=8000, num_fft=256,
        num_hop=128, num_mels=16, mel_fmax=4000.0, mask_channels=8, mask_blocks=3, batch_size=8, max_epochs=1,
        jit_compile=False, distribution="mirrored", devices=["/cpu:0"], run_dir=None,
        model_base_dir=str(tmp_path / "checkpoints"), log_dir=str(tmp_path / "logs"),
        cache_dir=str(tmp_path / "cache")))
    assert run.status == "COMPLETED" and "test_weighted_auc" in run.result["weak_label"]


@pytest.mark.parametrize("updates, message", [
    ({"distribution": "horovod"}, r"`distribution` must be one of \('none', 'mirrored', 'multi_worker'\)"),
    ({"devices": ["/gpu:0"]}, "only distribution='mirrored' places replicas on named devices"),
])
def test_bad_distribution_settings_are_refused_before_a_run(tiny_config, updates, message):
    from Training import ex

    with pytest.raises(ValueError, match=message):
        ex.run(config_updates=dict(tiny_config, **updates))
    assert not os.path.exists(tiny_config["run_dir"])


def test_devices_that_do_not_exist_are_named_with_the_ones_that_do():
    with pytest.raises(ValueError, match=r"\['/gpu:7'\] do not exist here; the devices are \['/cpu:0'"):
        make_strategy("mirrored", ["/gpu:7"])


def test_a_global_batch_that_does_not_divide_among_the_replicas():
    class TwoReplicas:
        num_replicas_in_sync = 2

    check_global_batch(4, TwoReplicas())
    with pytest.raises(ValueError, match=r"`batch_size` \(5\) is the global batch and must divide among the 2 "
                                         "replicas: use a multiple of 2"):
        check_global_batch(5, TwoReplicas())


def test_checkpoints_move_between_one_device_and_several_replicas(tiny_config, monkeypatch):
    """A run interrupted on replicas resumes on one device, and the other way round: checkpoints
    hold plain weights and the streams' states, whatever the strategy."""
    from Models.adversarial import solver
    from Training import ex

    original_step = solver.Solver.train_step

    def interrupted_in_the_second_epoch(self, phase):
        if self.progress.epoch == 1 and self.progress.step_in_epoch == 1:
            raise KeyboardInterrupt
        return original_step(self, phase)

    devices = {"mirrored": ["/cpu:0"], "none": []}
    for first, then in (("mirrored", "none"), ("none", "mirrored")):
        config = dict(tiny_config, phases=["supervised"], max_epochs=2, patience=5,
                      model_base_dir=os.path.join(tiny_config["model_base_dir"], first))
        monkeypatch.setattr(solver.Solver, "train_step", interrupted_in_the_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            ex.run(config_updates=dict(config, distribution=first, devices=devices[first]))
        monkeypatch.setattr(solver.Solver, "train_step", original_step)
        [run_folder] = glob.glob(os.path.join(config["model_base_dir"], "*"))
        resumed = ex.run(config_updates=dict(config, distribution=then, devices=devices[then], resume=run_folder))
        assert resumed.status == "COMPLETED"
        with open(os.path.join(run_folder, "last.pkl"), "rb") as handle:
            assert pickle.load(handle)["progress"]["global_step"] == 2 * config["epoch_it"]


def test_two_local_workers_train_once_and_score_as_one_process(tiny_config, tmp_path):
    """A multi_worker run of two processes on 127.0.0.1, started by the launcher: one run is
    recorded, one set of checkpoints and TensorBoard events is written (by the chief), and its
    test scores equal those of the same run in one process."""
    from Training import ex

    config = dict(tiny_config, phases=["supervised"], max_epochs=2)
    workers = dict(config, distribution="multi_worker", **{key: str(tmp_path / "workers" / key) for key in
                                                           ("run_dir", "model_base_dir", "log_dir")})
    arguments = ["Training.py", "with", *(f"{key}={value!r}" for key, value in workers.items())]
    completed = subprocess.run([sys.executable, "-m", "Models.distribution", "--workers", "2", *arguments], cwd=REPO,
                               capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
    assert completed.returncode == 0, completed.stderr[-3000:]
    [run_id] = [name for name in os.listdir(workers["run_dir"]) if name != "_sources"]
    assert len(os.listdir(workers["model_base_dir"])) == 1 and len(os.listdir(workers["log_dir"])) == 1
    with open(os.path.join(workers["run_dir"], run_id, "run.json")) as handle:
        distributed = json.load(handle)["result"]["supervised"]
    single = ex.run(config_updates=config).result["supervised"]
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        assert distributed[key] == pytest.approx(value, abs=0.02), key


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not usable"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "is not one of the 1 workers of its cluster"),
])
def test_multi_worker_without_a_valid_tf_config_is_refused_before_a_run(tiny_config, monkeypatch, tf_config, message):
    from Training import ex

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        ex.run(config_updates=dict(tiny_config, distribution="multi_worker"))
    assert not os.path.exists(tiny_config["run_dir"])


def test_the_launcher_stops_the_other_workers_when_one_fails():
    import time

    from Models.distribution import launch_local_workers

    waits_unless_first = ("import json, os, sys, time; index = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
                          "sys.exit(3) if index == 1 else time.sleep(120)")
    start = time.monotonic()
    assert launch_local_workers(2, ["-c", waits_unless_first]) == 3
    assert time.monotonic() - start < 60


def test_a_worker_that_dies_stops_the_others_and_the_run_resumes_from_the_chief_checkpoint(tiny_config):
    """Worker 1 is killed after the chief's first checkpoint: the chief stops within the
    collective timeout with a message naming the folder to resume, and two new workers
    resumed from it complete the run."""
    import signal
    import time

    from Models.distribution import launch_local_workers, loopback_tf_configs

    config = dict(tiny_config, phases=["supervised"], max_epochs=10_000, patience=10_000, distribution="multi_worker",
                  collective_timeout=30.0)

    def command(config):
        return [os.path.join(REPO, "Training.py"), "with", *(f"{key}={value!r}" for key, value in config.items())]

    workers = [subprocess.Popen([sys.executable, *command(config)], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": REPO, "TF_CONFIG": tf_config})
               for tf_config in loopback_tf_configs(2)]
    try:
        start = time.monotonic()
        while not glob.glob(os.path.join(config["model_base_dir"], "*", "last.pkl")):
            assert time.monotonic() - start < 300 and workers[0].poll() is None, "the chief saved no checkpoint"
            time.sleep(0.2)
        workers[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, chief_errors = workers[0].communicate(timeout=config["collective_timeout"] + 60)
        stopped_after = time.monotonic() - killed
    finally:
        for worker in workers:
            worker.kill()
    [run_folder] = glob.glob(os.path.join(config["model_base_dir"], "*"))
    assert workers[0].returncode == 1 and stopped_after < config["collective_timeout"] + 30
    assert "Another worker of this run died or stopped answering" in chief_errors
    assert f"resume={run_folder}" in chief_errors

    with open(os.path.join(run_folder, "last.pkl"), "rb") as handle:
        saved = pickle.load(handle)["progress"]
    resumed = dict(config, max_epochs=saved["epoch"] + 1, resume=run_folder)
    assert launch_local_workers(2, command(resumed)) == 0
    with open(os.path.join(run_folder, "last.pkl"), "rb") as handle:
        progress = pickle.load(handle)["progress"]
    assert progress["completed_stages"] == ["supervised"]
    assert progress["global_step"] == (saved["epoch"] + 1) * config["epoch_it"]
