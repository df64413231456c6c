"""End-to-end runs of the Sacred experiment at tiny shapes, resume, and bad configs."""
import glob
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from Models.adversarial import solver as Solver
from Models.checkpoint import CheckpointError, load_separator
from Models.training_loop import TrainingDiverged
from Training import ex
from conftest import REPO


def _last_state(run_folder):
    with open(os.path.join(run_folder, "last.pkl"), "rb") as handle:
        return pickle.load(handle)


def _assert_same_state(got, want, where="state"):
    """Nested dicts, lists and arrays equal bit for bit."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _assert_same_state(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for index, (got_item, want_item) in enumerate(zip(got, want)):
            _assert_same_state(got_item, want_item, f"{where}[{index}]")
    else:
        np.testing.assert_array_equal(got, want, err_msg=where)


def test_tiny_run_writes_config_metrics_checkpoints_and_tensorboard(tiny_config, tmp_path):
    run = ex.run(config_updates=dict(tiny_config, jit_compile=True))  # the default: the supervised step under XLA
    assert run.status == "COMPLETED"
    run_folder = os.path.join(tiny_config["run_dir"], str(run._id))
    with open(os.path.join(run_folder, "config.json")) as handle:
        assert json.load(handle)["alpha"] == 0.001
    with open(os.path.join(run_folder, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert len(metrics["supervised.validation_loss"]["values"]) == 2
    assert len(metrics["semi_supervised.validation_loss"]["values"]) == 2
    assert set(run.result) == {"supervised", "semi_supervised"}
    for phase in run.result.values():
        assert np.isfinite(phase["test_loss"]) and np.isfinite(phase["voice_median_SDR"])
        assert np.isfinite(phase["accompaniment_median_NSDR"])
    test_scores = run.info["results"]["supervised"]["test_tracks"]
    assert len(test_scores) == 2 and all(set(track["silent"]) <= {"voice"} for track in test_scores)
    assert {"best_supervised.pkl", "best_semi_supervised.pkl"} <= set(os.listdir(run_folder))  # artifacts
    checkpoint_dir = run.info["checkpoint_dir"]
    trained = load_separator(checkpoint_dir)
    assert trained.path.endswith("best_semi_supervised.pkl") and trained.source_names == ("accompaniment", "voice")
    with open(os.path.join(checkpoint_dir, "best_semi_supervised.pkl"), "rb") as handle:
        np.testing.assert_array_equal(trained.model.get_weights()[0], pickle.load(handle)["separator"][0])
    with pytest.raises(CheckpointError, match="No checkpoint in"):
        load_separator(str(tmp_path))
    with pytest.raises(CheckpointError, match="config.json. is not a checkpoint of this project"):
        load_separator(os.path.join(checkpoint_dir, "config.json"))
    assert {"last.pkl", "best_supervised.pkl", "best_semi_supervised.pkl", "config.json"} <= set(os.listdir(checkpoint_dir))
    assert _last_state(checkpoint_dir)["progress"]["global_step"] == 12

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run.info["tensorboard_dir"], size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"supervised/supervised_loss", "supervised/validation_loss", "semi_supervised/adversarial_loss",
            "semi_supervised/wasserstein/voice", "semi_supervised/gradient_penalty/accompaniment"} <= tags
    assert {"learning_rate/semi_supervised", "semi_supervised/spectrogram/voice_estimate",
            "semi_supervised/spectrogram/accompaniment_target", "supervised/audio/voice_estimate",
            "supervised/audio/mixture"} <= tags
    steps = [event.step for event in events.Tensors("semi_supervised/separator_loss")]
    assert steps == [7, 8, 9, 10, 11, 12]  # one global step across phases
    # the semi-supervised phase's diagnostics, on held-back (validation) songs
    import tensorflow as tf

    for tag in ("gradient_norm/adversarial", "gradient_ratio/additivity", "critic_accuracy/voice",
                "held_back_wasserstein/accompaniment"):
        values = [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(f"semi_supervised/diagnostics/{tag}")]
        assert len(values) == 6 and np.isfinite(values).all(), tag
    accuracies = [float(tf.make_ndarray(event.tensor_proto))
                  for event in events.Tensors("semi_supervised/diagnostics/critic_accuracy/voice")]
    assert all(0.0 <= accuracy <= 1.0 for accuracy in accuracies)


def test_interrupted_run_resumes_to_the_same_weights(tiny_config, tmp_path, monkeypatch):
    config = dict(tiny_config, max_epochs=2, patience=5)
    reference = ex.run(config_updates=dict(config, model_base_dir=str(tmp_path / "reference")))
    expected = _last_state(reference.info["checkpoint_dir"])

    original_step = Solver.Solver.train_step

    def interrupting_step(self, phase):
        if phase == "semi_supervised" and self.progress.step_in_epoch == 1 and self.progress.epoch == 1:
            raise KeyboardInterrupt
        return original_step(self, phase)

    monkeypatch.setattr(Solver.Solver, "train_step", interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        ex.run(config_updates=config)
    monkeypatch.setattr(Solver.Solver, "train_step", original_step)
    [run_folder] = glob.glob(os.path.join(config["model_base_dir"], "*"))
    interrupted = _last_state(run_folder)
    assert interrupted["progress"]["stage"] == "semi_supervised" and interrupted["progress"]["step_in_epoch"] == 1

    restored = {}
    original_load = Solver.Solver.load_model_state

    def recording_load(self, state):
        original_load(self, state)
        restored.update(self.model_state())

    monkeypatch.setattr(Solver.Solver, "load_model_state", recording_load)
    resumed_run = ex.run(config_updates=dict(config, resume=run_folder))
    resumed = _last_state(run_folder)
    # what the resumed run starts from is the saved state bit for bit: weights, every optimiser's
    # moments and step count, the excerpt streams' and the critics' noise generators
    training_state = ("separator", "critics", "optimizers", "noise_state", "paired_state", "unpaired_state",
                      "initial_separator")
    _assert_same_state({key: restored[key] for key in training_state},
                       {key: interrupted[key] for key in training_state})
    for phase in ("supervised", "semi_supervised"):  # each phase scored from its own best checkpoint
        for key, value in reference.result[phase].items():
            assert resumed_run.result[phase][key] == pytest.approx(value, rel=1e-4, abs=1e-4), (phase, key)
    # the best validation loss is a sum over threads: equal to rounding, not bit for bit
    assert resumed["progress"]["best_score"] == pytest.approx(expected["progress"]["best_score"], rel=1e-6)
    assert {**resumed["progress"], "best_score": None} == {**expected["progress"], "best_score": None}
    # The restored state is checked bit for bit above; the weights at the end only have to show
    # that the resumed run trained on the same batches. Two CI runs under xdist saw the critics
    # drift from the reference (up to 3.8e-4 on a bias) while the separator held to 1e-5; no run
    # since reproduced it (every probe, in a fresh process, under load and in the suite under
    # xdist, was bit for bit), so the critics are held below one Adam step (the learning rate,
    # 1e-3), which a wrong batch exceeds, and the separator to 1e-5.
    for got, want in zip(resumed["separator"], expected["separator"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for critic in expected["critics"]:
        for got, want in zip(resumed["critics"][critic], expected["critics"][critic]):
            np.testing.assert_allclose(got, want, rtol=1e-2, atol=8e-4)


@pytest.mark.parametrize("updates, message", [
    ({"alpha": -0.1}, "`alpha` must be a non-negative number"),
    ({"beta": "much"}, "`beta` must be a non-negative number"),
    ({"lam": float("nan")}, "`lam` must be a non-negative number"),
    ({"num_layers": 4}, r"num_layers=4 halves the time axis 4 times, so num_frames \(8\) must be at least 16"),
    ({"phases": ["supervised", "adversarial"]}, "`phases` must list"),
])
def test_bad_config_fails_before_training(tiny_config, updates, message):
    with pytest.raises(ValueError, match=message):
        ex.run(config_updates=dict(tiny_config, **updates))
    assert not os.path.exists(os.path.join(tiny_config["cache_dir"], "dataset.pkl"))


def test_unknown_config_key_is_refused(tiny_config):
    from sacred.utils import ConfigAddedError

    with pytest.raises(ConfigAddedError, match="alpah"):
        ex.run(config_updates=dict(tiny_config, alpah=0.1))


def test_semi_supervised_phase_without_unpaired_data(tiny_config):
    paired_only = [tiny_config["descriptors"][0]]
    with pytest.raises(ValueError, match="needs unpaired mixtures.*phases=\\['supervised'\\]"):
        ex.run(config_updates=dict(tiny_config, descriptors=paired_only))


def test_resume_with_an_incompatible_config(tiny_config, tmp_path):
    run = ex.run(config_updates=dict(tiny_config, phases=["supervised"], max_epochs=1))
    with pytest.raises(ValueError, match="base_filters: 4 there, 8 here"):
        ex.run(config_updates=dict(tiny_config, base_filters=8, resume=run.info["checkpoint_dir"]))
    with pytest.raises(FileNotFoundError, match="not a run's checkpoint folder"):
        ex.run(config_updates=dict(tiny_config, resume=str(tmp_path)))
    last = os.path.join(run.info["checkpoint_dir"], "last.pkl")
    state = _last_state(run.info["checkpoint_dir"])
    del state["noise_state"]  # as a state written before the field was added
    with open(last, "wb") as handle:
        pickle.dump(state, handle)
    with pytest.raises(ValueError, match=r"Cannot resume from .*last\.pkl: its training state does not match .*"
                                         r"noise_state.*Start a new run"):
        ex.run(config_updates=dict(tiny_config, phases=["supervised"], max_epochs=2, resume=run.info["checkpoint_dir"]))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, monkeypatch):
    original_step = Solver.Solver.train_step

    def diverging_step(self, phase):
        metrics = original_step(self, phase)
        return {**metrics, "supervised_loss": float("nan")} if self.progress.epoch == 1 else metrics

    monkeypatch.setattr(Solver.Solver, "train_step", diverging_step)
    with pytest.raises(TrainingDiverged, match="supervised_loss became nan.*last good checkpoint"):
        ex.run(config_updates=tiny_config)
    [run_folder] = glob.glob(os.path.join(tiny_config["model_base_dir"], "*"))
    assert _last_state(run_folder)["progress"]["epoch"] == 1


def test_unreachable_mongodb_fails_fast_with_the_url(tiny_config):
    import time

    url = "mongodb://127.0.0.1:9/sacred"  # the discard port: nothing listens there
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="Cannot reach MongoDB at mongodb://127.0.0.1:9/sacred .*mongo_url"):
        ex.run(config_updates=dict(tiny_config, mongo_url=url))
    assert time.perf_counter() - start < 5


def test_patience_allows_epochs_without_improvement_and_keeps_the_best(tiny_config, monkeypatch):
    validation_losses = iter([1.0, 1.1, 0.9, 1.2, 1.3, 0.1])
    original_loss = Solver.Solver.supervised_loss

    def scripted_loss(self, songs, separator=None):
        if songs is self.validation:
            return next(validation_losses)
        return original_loss(self, songs, separator)

    monkeypatch.setattr(Solver.Solver, "supervised_loss", scripted_loss)
    run = ex.run(config_updates=dict(tiny_config, phases=["supervised"], epoch_it=1, max_epochs=10, patience=2))
    # Epoch 2 did not improve but training went on (the original stopped there); epochs 4 and
    # 5 did not improve either, so the phase ended before the sixth epoch.
    assert run.info["results"]["supervised"]["validation_loss"] == 0.9
    state = _last_state(run.info["checkpoint_dir"])
    assert state["progress"]["best_epoch"] == 2 and state["progress"]["global_step"] == 5


def test_too_many_layers_for_the_frequency_bins_names_num_fft(tiny_config):
    """Case 8 of the reliability issue: 257 bins cannot be halved 9 times; raising num_frames
    would not help, so the message names num_fft and num_layers."""
    with pytest.raises(ValueError, match=r"num_layers=9 halves the frequency axis 9 times, so it needs at least 512 "
                                         r"frequency bins, but num_fft=512 gives 257: raise num_fft to at least "
                                         r"1022, or lower num_layers to at most 8\."):
        ex.run(config_updates=dict(tiny_config, num_fft=512, num_layers=9, num_frames=600))


def test_config_error_leaves_no_failed_run(tiny_config):
    """Case 9: a mistyped setting is refused before Sacred opens a run, so no FAILED run is left
    in the file observer's folder (nor in MongoDB: the observers are attached after the check)."""
    for updates in ({"alpha": -1.0}, {"resume": tiny_config["model_base_dir"] + "/no_such_run"},
                    {"num_layers": 9}):
        with pytest.raises((ValueError, FileNotFoundError)):
            ex.run(config_updates=dict(tiny_config, **updates))
    assert not os.path.exists(tiny_config["run_dir"])


def test_ctrl_c_prints_the_resume_command_without_a_traceback(tiny_config, tmp_path):
    """Case 6: Ctrl-C in the middle of an epoch saves the checkpoint and prints one line naming
    it and the exact command that continues the run; no traceback, exit status 130."""
    config = dict(tiny_config, epoch_it=100_000, phases=["supervised"])
    arguments = ["Training.py", "with", *(f"{key}={value!r}" for key, value in config.items())]
    process = subprocess.Popen([sys.executable, "-u", *arguments], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    output = []
    reader = threading.Thread(target=lambda: output.extend(iter(lambda: process.stdout.read(1), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while b"supervised_loss=" not in b"".join(output) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until the epoch's progress bar shows a loss: steps are being taken
    process.send_signal(signal.SIGINT)
    status = process.wait(timeout=120)
    reader.join(timeout=10)
    text = b"".join(output).decode()
    assert status == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    [run_folder] = glob.glob(os.path.join(config["model_base_dir"], "*"))
    checkpoint = os.path.join(run_folder, "last.pkl")
    last_line = text.rstrip().splitlines()[-1]
    assert last_line.startswith(f"Interrupted; saved {checkpoint}. Continue with: ")
    command = shlex.split(last_line.split("Continue with: ")[1])
    assert command[1:] == [*arguments, f"resume={run_folder}"]
    assert _last_state(run_folder)["progress"]["step_in_epoch"] > 0


def test_four_stems_train_one_critic_per_stem_and_score_every_stem(tiny_config):
    stems = ["vocals", "drums", "bass", "other"]
    run = ex.run(named_configs=["four_stems"], config_updates=dict(tiny_config, max_epochs=1))
    assert run.config["source_names"] == stems
    for phase in ("supervised", "semi_supervised"):
        result = run.result[phase]
        assert all(np.isfinite(result[f"{name}_median_SDR"]) and result[f"{name}_count_SDR"] >= 1 for name in stems)
    state = _last_state(run.info["checkpoint_dir"])
    assert list(state["critics"]) == stems and state["separator_spec"]["source_names"] == stems
    assert load_separator(run.info["checkpoint_dir"]).source_names == tuple(stems)
