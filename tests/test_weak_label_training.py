"""The weak-label method end to end: features, tagging metrics, event separation and scoring,
the Sacred run (train, resume, test report), Evaluate.py and separation of files."""
import json
import os
import pickle

import numpy as np
import pytest
import soundfile
from sklearn.metrics import roc_auc_score

from Datasets import features
from Datasets.features import MelSettings
from Datasets.weak_label import Clip, load_clips
from Models.weak_label.separation import EventSeparator, evaluate_clips, summarise_events
from Models.weak_label.tagging import equal_error_rate, tagging_metrics
from Models.weak_label.model import Standardisation

SETTINGS = MelSettings(sample_rate=8000, n_fft=256, hop=128, n_mels=16, fmax=4000.0)
TINY_DEMO = {"clip_seconds": 1.0, "clips_per_split": {"train": 96, "valid": 24, "test": 24},
             "event_files_per_class": 3, "background_files": 3, "background_seconds": 3.0}


def test_mel_to_linear_matrix_has_unit_row_sums_and_keeps_constant_masks():
    for settings in (MelSettings(), SETTINGS, MelSettings(fmin=300.0, fmax=6000.0)):
        matrix = features.mel_to_linear_matrix(settings.filterbank())
        assert matrix.shape == (settings.n_fft // 2 + 1, settings.n_mels)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(matrix >= 0)
        np.testing.assert_allclose(np.full((3, settings.n_mels), 0.7) @ matrix.T, 0.7, atol=1e-6)


def test_tagging_metrics_agree_with_scikit_learn_and_name_undefined_classes():
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 3)) < 0.3).astype(np.float32)
    scores = np.clip(0.5 * labels + rng.random((120, 3)) * 0.8, 0, 1)
    metrics = tagging_metrics(labels, scores, ["a", "b", "c"])
    assert metrics["weighted_auc"] == pytest.approx(roc_auc_score(labels, scores, average="weighted"))
    assert metrics["undefined"] == []
    labels[:, 2] = 0  # no positive clip: no ROC curve, left out rather than scored 0.5
    metrics = tagging_metrics(labels, scores, ["a", "b", "c"])
    assert metrics["undefined"] == ["c"] and "auc" not in metrics["per_class"]["c"]
    assert metrics["weighted_auc"] == pytest.approx(roc_auc_score(labels[:, :2], scores[:, :2], average="weighted"))


def test_equal_error_thresholds_sit_where_false_alarms_and_misses_balance():
    from Models.weak_label.tagging import equal_error_thresholds

    rng = np.random.default_rng(3)
    labels = np.stack([rng.random(400) < 0.3, rng.random(400) < 0.5, np.zeros(400, bool)], axis=1)
    # class 0 scores are small but separable (as pooled probabilities of short events are)
    probabilities = np.stack([0.02 + 0.1 * labels[:, 0] + 0.05 * rng.random(400),
                              labels[:, 1] * 0.3 + rng.random(400) * 0.7, rng.random(400)], axis=1)
    thresholds = equal_error_thresholds(labels, probabilities)
    detected = probabilities >= thresholds
    assert 0.07 < thresholds[0] <= 0.17 and np.array_equal(detected[:, 0], labels[:, 0])
    misses, false_alarms = np.mean(~detected[labels[:, 1], 1]), np.mean(detected[~labels[:, 1], 1])
    assert abs(misses - false_alarms) < 0.05
    assert thresholds[2] == 0.5  # no positive clip: no curve, the default


def test_false_alarm_thresholds_are_the_lowest_that_keep_the_false_alarm_rate():
    from Models.weak_label.tagging import detection_thresholds, false_alarm_thresholds

    rng = np.random.default_rng(4)
    labels = np.stack([rng.random(300) < 0.2, rng.random(300) < 0.5, np.zeros(300, bool)], axis=1)
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random((300, 3)), 0, 1)
    for rate in (0.0, 0.1, 0.25):
        thresholds = false_alarm_thresholds(labels, probabilities, rate)
        for index in range(2):
            negatives = probabilities[~labels[:, index], index]
            allowed = int(rate * len(negatives))
            assert np.sum(negatives >= thresholds[index]) == allowed  # exactly the share (no ties here)
            highest_undetected = np.sort(negatives)[::-1][allowed]
            closest_above = probabilities[probabilities[:, index] > highest_undetected, index].min()
            assert thresholds[index] == pytest.approx((highest_undetected + closest_above) / 2)  # halfway
        assert thresholds[2] == 0.5  # no positive clip: the default
    assert np.all(false_alarm_thresholds(labels, probabilities, 1.0)[:2] == 0.0)  # every clip may be detected
    np.testing.assert_array_equal(detection_thresholds(0.3, labels, probabilities, 0.1), [0.3, 0.3, 0.3])
    np.testing.assert_array_equal(detection_thresholds("validation_false_alarms", labels, probabilities, 0.1),
                                  false_alarm_thresholds(labels, probabilities, 0.1))


def test_equal_error_rate():
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert equal_error_rate(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    labels = rng.random(4000) < 0.5
    assert equal_error_rate(labels, rng.random(4000)) == pytest.approx(0.5, abs=0.03)


class FixedPrediction:
    """Stands in for a trained model: given masks and probabilities for every clip."""

    def __init__(self, masks, probabilities):
        self.masks, self.probabilities = masks, probabilities

    def predict(self, features_batch, batch_size=32):
        return self.masks[None], self.probabilities[None]


def _clip_with_two_events(folder, rng):
    """1 s at 8 kHz: a 500 Hz tone (class "low"), a 2500 Hz tone ("high") and faint noise."""
    time = np.arange(8000) / 8000
    low, high = 0.3 * np.sin(2 * np.pi * 500 * time), 0.3 * np.sin(2 * np.pi * 2500 * time)
    background = 0.01 * rng.standard_normal(8000)
    paths = {}
    for name, signal in (("mixture", low + high + background), ("low", low), ("high", high),
                         ("background", background)):
        paths[name] = str(folder / f"{name}.wav")
        soundfile.write(paths[name], signal.astype(np.float32), 8000, subtype="FLOAT")
    return Clip(name="clip", split="test", mixture_path=paths["mixture"], labels=np.array([1.0, 1.0, 0.0], np.float32),
                source_paths={"low": paths["low"], "high": paths["high"]}, background_path=paths["background"])


def test_events_are_separated_by_the_predicted_class_and_scored_beside_the_baselines(tmp_path):
    clip = _clip_with_two_events(tmp_path, np.random.default_rng(2))
    classes = ["low", "high", "absent"]
    frames, centres = SETTINGS.num_frames(8000), librosa_mel_centres()
    masks = np.zeros((frames, SETTINGS.n_mels, 3), np.float32)
    masks[:, centres < 1500, 0] = 1.0  # the "low" mask keeps the lower bands
    masks[:, centres >= 1500, 1] = 1.0
    # "low" detected, "high" missed, "absent" falsely detected
    separator = EventSeparator(FixedPrediction(masks, np.array([0.9, 0.2, 0.8])), classes, SETTINGS,
                               Standardisation(np.zeros(16, np.float32), np.ones(16, np.float32)), "logmel",
                               np.array([0.5, 0.3, 0.7]))
    results, probabilities, mask_probabilities = evaluate_clips(separator, [clip], workers=1)
    np.testing.assert_allclose(probabilities, [[0.9, 0.2, 0.8]])
    np.testing.assert_array_equal(mask_probabilities, probabilities)  # no clip statistics fused
    events = results[0]["events"]
    assert set(events) == {"low", "high"}  # scored only where the ground truth has an event
    assert events["high"]["missed"] and "separated" not in events["high"]
    low = events["low"]
    assert low["separated"]["SDR"] > 15 and low["oracle_ibm"]["SDR"] > 15
    assert low["mixture"]["SDR"] == pytest.approx(0.0, abs=0.3)  # two equal tones: 0 dB
    assert low["separated"]["SIR"] > low["mixture"]["SIR"] + 15
    summary = summarise_events(results, classes)
    assert summary["all"]["events"] == 2 and summary["all"]["missed"] == 1
    assert results[0]["false_alarms"] == ["absent"]
    assert summary["absent"]["false_alarms"] == summary["all"]["false_alarms"] == 1
    assert summary["low"]["false_alarms"] == summary["high"]["false_alarms"] == 0
    assert summary["low"]["separated_median_SDR"] == low["separated"]["SDR"]
    assert "separated_median_SDR" not in summary["high"] and summary["high"]["oracle_ibm_median_SDR"] > 15

    mixture = soundfile.read(clip.mixture_path, dtype="float32")[0]
    separated, _ = separator.separate(mixture)
    assert set(separated) == {"low", "absent"}  # what the model predicts, not the ground truth

    half = np.full((frames, SETTINGS.n_mels), 0.5, np.float32)
    spectrogram = SETTINGS.spectrogram(mixture)
    np.testing.assert_allclose(separator.apply_mask(half, spectrogram, 8000), 0.5 * mixture, atol=1e-4)
    separator.mask_exponent = 2.0  # sharpening: a mask of 0.5 keeps a quarter
    np.testing.assert_allclose(separator.apply_mask(half, spectrogram, 8000), 0.25 * mixture, atol=1e-4)

    separator.mask_exponent = 1.0
    narrow, wide = (np.zeros((frames, SETTINGS.n_mels), np.float32) for _ in range(2))
    narrow[10:12, 4:6], wide[8:14, 3:7] = 1.0, 1.0
    separator.mask_dilation = (5, 3)  # two frames and one band further on each side
    dilated = separator.apply_mask(narrow, spectrogram, 8000)
    separator.mask_dilation = (1, 1)
    np.testing.assert_allclose(dilated, separator.apply_mask(wide, spectrogram, 8000), atol=1e-6)


def test_the_background_gate_keeps_what_stands_above_each_bands_median():
    from Models.weak_label.separation import background_gate

    energies = np.ones((5, 2))
    energies[3, 0], energies[4, 0] = 10.0, 1000.0  # 10 and 30 dB above the band's median
    energies[:, 1] = [1.0, 2.0, 4.0, 8.0, 400.0]  # median 4: below it, at it, 3 dB and 20 dB above it
    expected = np.array([[0, 0], [0, 0], [0, 0], [0.25, (10 * np.log10(2) / 20) ** 2], [1, 1]])
    np.testing.assert_allclose(background_gate(energies, 20.0), expected, atol=1e-6)

    # separating with the gate: a steady noise drops out, a burst 30 dB above it stays
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal(16000).astype(np.float32)
    burst = np.zeros_like(noise)
    burst[7000:9000] = 0.3 * rng.standard_normal(2000)
    frames = SETTINGS.num_frames(len(noise))
    separator = EventSeparator(FixedPrediction(np.ones((frames, SETTINGS.n_mels, 1), np.float32), np.array([1.0])),
                               ["burst"], SETTINGS, Standardisation(np.zeros(16, np.float32), np.ones(16, np.float32)),
                               "pcen", np.array([0.5]), background_gate_db=20.0)
    ones = np.ones((frames, SETTINGS.n_mels), np.float32)
    separated = separator.apply_mask(ones, SETTINGS.spectrogram(noise + burst), len(noise))
    quiet = np.r_[0:5000, 11000:16000]
    assert np.sqrt(np.mean(separated[quiet] ** 2)) < 0.1 * np.sqrt(np.mean(noise[quiet] ** 2))
    assert np.corrcoef(separated[7000:9000], burst[7000:9000])[0, 1] > 0.99
    separator.background_gate_db = 0.0  # no gate: a mask of ones gives the mixture back
    np.testing.assert_allclose(separator.apply_mask(ones, SETTINGS.spectrogram(noise + burst), len(noise)),
                               noise + burst, atol=1e-4)


def test_mask_dilation_takes_the_window_maximum_and_stops_at_the_clip_edges():
    from Models.weak_label.separation import dilate

    mask = np.zeros((6, 5), np.float32)
    mask[0, 2], mask[4, 4] = 0.5, 0.9
    expected = np.zeros_like(mask)
    expected[0:2, 1:4] = 0.5  # no frame before the first: the window is cut, not wrapped or mirrored
    expected[3:6, 3:5] = 0.9
    np.testing.assert_array_equal(dilate(mask, (3, 3)), expected)
    assert dilate(mask, (1, 1)) is mask


def librosa_mel_centres():
    import librosa

    return librosa.mel_frequencies(SETTINGS.n_mels + 2, fmin=SETTINGS.fmin, fmax=SETTINGS.fmax)[1:-1]


@pytest.fixture(scope="module")
def weak_label_run(tmp_path_factory):
    """One tiny weak-label training on a tiny demo, shared by the tests below."""
    from Training import ex

    root = tmp_path_factory.mktemp("weak_label")
    config = dict(method="weak_label", weak_label_recipe="demo", recipe_options=TINY_DEMO, expected_sr=8000,
                  num_fft=256, num_hop=128, num_mels=16, mel_fmax=4000.0, stft_window="hamming",
                  mask_channels=8, mask_blocks=3, batch_size=8, max_epochs=6, patience=6, learning_rate=3e-3,
                  ema_epochs=1, clip_statistics_weight=0.25, detection_threshold="validation_false_alarms",
                  detection_false_alarm_rate=0.2, jit_compile=False, summary_every=2, seed=3,
                  run_dir=str(root / "runs"), model_base_dir=str(root / "checkpoints"), log_dir=str(root / "logs"),
                  cache_dir=str(root / "cache"))
    run = ex.run(config_updates=config)
    return run, config


def test_tiny_weak_label_run_learns_and_reports_tagging_and_separation(weak_label_run):
    run, config = weak_label_run
    assert run.status == "COMPLETED"
    result = run.result["weak_label"]
    assert result["test_weighted_auc"] > 0.6  # chance is 0.5
    assert np.isfinite(result["event_oracle_ibm_median_SDR"]) and np.isfinite(result["event_mixture_median_SDR"])
    assert result["event_oracle_ibm_median_SDR"] > result["event_mixture_median_SDR"] + 5
    run_folder = os.path.join(config["run_dir"], str(run._id))
    with open(os.path.join(run_folder, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert len(metrics["valid.weighted_auc"]["values"]) == 6
    assert "best.pkl" in os.listdir(run_folder)  # the artifact
    with open(os.path.join(run.info["checkpoint_dir"], "best.pkl"), "rb") as handle:
        best = pickle.load(handle)
    assert best["classes"] == ["beeps", "chirp", "clicks", "harmonic", "noise_burst"]
    assert best["standardisation"]["mean"].shape == (16,) and best["mel_settings"]["n_mels"] == 16
    with open(os.path.join(run.info["checkpoint_dir"], "last.pkl"), "rb") as handle:
        last = pickle.load(handle)
    for finished, chosen in zip(last["weights"], best["weights"]):  # a finished run's model is its best one
        np.testing.assert_array_equal(finished, chosen)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run.info["tensorboard_dir"], size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"train/loss", "valid/weighted_auc", "valid/loss", "learning_rate", "valid/mask/chirp",
            "valid/features"} <= tags


def test_the_best_model_fuses_the_clip_statistics_and_detects_at_the_validation_false_alarm_rate(weak_label_run):
    from Models.checkpoint import load_event_separator
    from Models.weak_label.clip_statistics import fuse
    from Models.weak_label.linear_floor import clips_floor, clips_log_mels_and_labels
    from Models.weak_label.separation import clip_probabilities

    run, config = weak_label_run
    separator = load_event_separator(run.info["checkpoint_dir"])
    assert separator.clip_statistics.weight == 0.25
    clips = load_clips(run.info["data_folder"])
    valid = clips.split("valid")
    log_mels, labels = clips_log_mels_and_labels(valid, separator.settings)
    floor = clips_floor(clips.split("train"), separator.settings)
    probabilities, mask_probabilities = clip_probabilities(separator, valid)
    statistics = separator.clip_statistics.probabilities(log_mels)
    np.testing.assert_allclose(probabilities, fuse(mask_probabilities, statistics, 0.25), rtol=1e-9)
    # the floor fitted on the training clips (a refit's last digits differ where lbfgs stops at its tolerance)
    np.testing.assert_allclose(statistics, floor.probabilities(log_mels), atol=2e-3)
    detected, present = probabilities >= separator.thresholds, labels > 0.5
    for index in range(len(clips.classes)):  # a fifth of the clips without a class, rounded down
        negatives = probabilities[~present[:, index], index]
        assert np.sum(detected[~present[:, index], index]) == int(0.2 * len(negatives))
    result = run.result["weak_label"]
    assert result["test_masks_weighted_auc"] > 0.6 and result["test_masks_weighted_auc"] != result["test_weighted_auc"]


def test_resumed_weak_label_run_matches_the_uninterrupted_one(weak_label_run, tmp_path, monkeypatch):
    from Models.weak_label import solver as weak_label_solver
    from Training import ex

    run, config = weak_label_run
    config = {**config, "run_dir": str(tmp_path / "runs"), "model_base_dir": str(tmp_path / "checkpoints"),
              "log_dir": str(tmp_path / "logs")}
    original_batch = weak_label_solver.WeakLabelSolver._train_batch

    def interrupted(self, clips):
        if self.progress.epoch == 1 and self.progress.step_in_epoch == 3:
            raise KeyboardInterrupt
        return original_batch(self, clips)

    monkeypatch.setattr(weak_label_solver.WeakLabelSolver, "_train_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.run(config_updates=config)
    monkeypatch.setattr(weak_label_solver.WeakLabelSolver, "_train_batch", original_batch)
    checkpoint_dir = os.path.join(config["model_base_dir"], os.listdir(config["model_base_dir"])[0])
    with open(os.path.join(checkpoint_dir, "last.pkl"), "rb") as handle:
        assert pickle.load(handle)["progress"]["step_in_epoch"] == 3
    resumed = ex.run(config_updates={**config, "resume": checkpoint_dir})
    for name in ("last.pkl", "best.pkl"):
        with open(os.path.join(checkpoint_dir, name), "rb") as handle:
            resumed_state = pickle.load(handle)
        with open(os.path.join(run.info["checkpoint_dir"], name), "rb") as handle:
            uninterrupted_state = pickle.load(handle)
        if name == "best.pkl":  # saved mid-training: the moving average differs from the weights as trained
            assert any(np.abs(mine - theirs).max() > 1e-4
                       for mine, theirs in zip(resumed_state["weights"], resumed_state["training_weights"]))
        for weights in ("weights", "training_weights"):  # the moving average, and the weights as trained
            for mine, theirs in zip(resumed_state[weights], uninterrupted_state[weights]):
                np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    def scores(result):  # the wall-clock time per epoch differs between any two runs
        return {key: value for key, value in result["weak_label"].items() if key != "epoch_seconds"}

    assert scores(resumed.result) == pytest.approx(scores(run.result), rel=1e-4)


def test_evaluate_and_separate_weak_label_checkpoints(weak_label_run, tmp_path, monkeypatch):
    from Evaluate import ex as evaluation
    from Models.weak_label.linear_floor import LinearFloor

    run, config = weak_label_run
    checkpoint = run.info["checkpoint_dir"]
    evaluated = evaluation.run(config_updates={"checkpoint": checkpoint, "output_dir": str(tmp_path / "report"),
                                               "run_dir": None})
    assert evaluated.result["weighted_auc"] == pytest.approx(run.result["weak_label"]["test_weighted_auc"])
    assert evaluated.result["event_separated_median_SDR"] == pytest.approx(
        run.result["weak_label"]["event_separated_median_SDR"])
    sharper = evaluation.run(config_updates={"checkpoint": checkpoint, "output_dir": str(tmp_path / "sharper"),
                                             "run_dir": None, "mask_exponent": 4.0})
    assert sharper.result["event_separated_median_SIR"] > evaluated.result["event_separated_median_SIR"]
    wider = evaluation.run(config_updates={"checkpoint": checkpoint, "output_dir": str(tmp_path / "wider"),
                                           "run_dir": None, "mask_dilation": [9, 3]})
    assert wider.result["event_separated_median_SDR"] != pytest.approx(evaluated.result["event_separated_median_SDR"])
    with open(tmp_path / "wider" / "best_test.json") as handle:
        assert json.load(handle)["mask_dilation"] == [9, 3]
    with pytest.raises(ValueError, match="`mask_dilation` must be"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "mask_dilation": [2, 2]})
    gated = evaluation.run(config_updates={"checkpoint": checkpoint, "output_dir": str(tmp_path / "gated"),
                                           "run_dir": None, "background_gate_db": 20.0})
    assert gated.result["event_separated_median_SIR"] > evaluated.result["event_separated_median_SIR"]
    with open(tmp_path / "gated" / "best_test.json") as handle:
        assert json.load(handle)["background_gate_db"] == 20.0
    with pytest.raises(ValueError, match="`background_gate_db` must be a non-negative number of dB"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "background_gate_db": -1})
    with open(tmp_path / "report" / "best_test.json") as handle:
        report = json.load(handle)
    assert report["mask_dilation"] == [1, 1] and report["background_gate_db"] == 0.0  # as the checkpoint was trained
    assert report["clip_statistics_weight"] == 0.25
    assert evaluated.result["masks_weighted_auc"] == pytest.approx(report["tagging"]["masks"]["weighted_auc"])
    assert evaluated.result["masks_weighted_auc"] == pytest.approx(run.result["weak_label"]["test_masks_weighted_auc"])
    assert set(report["summary"]["events"]) == {"all", "beeps", "chirp", "clicks", "harmonic", "noise_burst"}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "output_dir": str(tmp_path / "report"),
                                       "run_dir": None})

    # which classes count as present, settled anew on the validation clips: the masks alone, at another false-alarm
    # rate; the same masks and probabilities, other thresholds. The floor that settles them is the report's: one fit.
    fits, fit = [], LinearFloor.fit
    monkeypatch.setattr(LinearFloor, "fit", lambda floor, *inputs: fits.append(1) or fit(floor, *inputs))
    as_trained, settled = (evaluation.run(config_updates={
        "checkpoint": checkpoint, "output_dir": str(tmp_path / folder), "run_dir": None, "partition": "valid",
        **updates}) for folder, updates in (("as_trained", {}), ("settled", {"clip_statistics_weight": 0.0,
                                                                           "detection_false_alarm_rate": 0.4})))
    assert len(fits) == 2
    with open(tmp_path / "settled" / "best_valid.json") as handle:
        settled_report = json.load(handle)
    assert settled_report["clip_statistics_weight"] == 0.0 and "masks" not in settled_report["tagging"]
    assert settled.result["weighted_auc"] == pytest.approx(as_trained.result["masks_weighted_auc"], rel=1e-9)
    assert settled.result["weighted_auc"] != pytest.approx(as_trained.result["weighted_auc"])
    for name, events in settled_report["summary"]["events"].items():  # clips without the class: 40% detected
        if name != "all":
            negatives = sum(name not in clip["labels"] for clip in settled_report["clips"])
            assert events["false_alarms"] == int(0.4 * negatives), name
    with pytest.raises(ValueError, match="`detection_false_alarm_rate` must be a share in"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "detection_false_alarm_rate": 2})

    all_clips = load_clips(run.info["data_folder"])
    clips = all_clips.split("test")
    mixture, _ = soundfile.read(clips[0].mixture_path, dtype="float32")
    stereo_input = str(tmp_path / "input.wav")  # another rate and two channels
    soundfile.write(stereo_input, np.stack([mixture, mixture], axis=1)[::1], 16000, subtype="PCM_16")
    written = evaluation.run("separate", config_updates={"checkpoint": checkpoint, "inputs": [stereo_input],
                                                         "output_dir": str(tmp_path / "out")}).result
    # every class, silent where it is not detected
    assert sorted(written) == sorted(str(tmp_path / "out" / "input" / f"{name}.wav") for name in all_clips.classes)
    for path in written:
        info = soundfile.info(path)
        assert info.samplerate == 16000 and info.frames == len(mixture)

    # the console command's overrides reach the masks as Evaluate.py's do
    from Models import cli

    evaluation.run("separate", config_updates={"checkpoint": checkpoint, "inputs": [stereo_input],
                                               "output_dir": str(tmp_path / "wider_out"), "mask_dilation": [9, 3]})
    cli.main([checkpoint, stereo_input, "-o", str(tmp_path / "cli"), "--mask-dilation", "9", "3"])
    detected = [name for name in all_clips.classes
                if np.any(soundfile.read(tmp_path / "out" / "input" / f"{name}.wav")[0])]
    assert detected
    for name in detected:
        undilated, dilated, command = (soundfile.read(tmp_path / folder / "input" / f"{name}.wav")[0]
                                       for folder in ("out", "wider_out", "cli"))
        np.testing.assert_array_equal(command, dilated)
        assert not np.allclose(dilated, undilated)

    # and its detection options: one threshold for every class needs no clips (0: every class separated); the
    # others settle anew on the validation clips, as Evaluate.py's keys do
    cli.main([checkpoint, stereo_input, "-o", str(tmp_path / "cli_every"), "--detection-threshold", "0"])
    for name in all_clips.classes:
        assert np.any(soundfile.read(tmp_path / "cli_every" / "input" / f"{name}.wav")[0]), name
    evaluation.run("separate", config_updates={"checkpoint": checkpoint, "inputs": [stereo_input],
                                               "output_dir": str(tmp_path / "settled_out"),
                                               "clip_statistics_weight": 0.0, "detection_false_alarm_rate": 0.4})
    cli.main([checkpoint, stereo_input, "-o", str(tmp_path / "cli_settled"), "--clip-statistics-weight", "0",
              "--detection-false-alarm-rate", "0.4"])
    for name in all_clips.classes:
        np.testing.assert_array_equal(*(soundfile.read(tmp_path / folder / "input" / f"{name}.wav")[0]
                                        for folder in ("settled_out", "cli_settled")))


def test_checkpoints_that_named_pcen_options_still_load(weak_label_run, tmp_path):
    from Models.checkpoint import load_event_separator

    run, _ = weak_label_run
    with open(os.path.join(run.info["checkpoint_dir"], "best.pkl"), "rb") as handle:
        state = pickle.load(handle)
    old = dict(state, model_spec={**{key: value for key, value in state["model_spec"].items() if key != "front_end"},
                                  "pcen_options": None})  # as written before the relative_db front end
    path = tmp_path / "old.pkl"
    with open(path, "wb") as handle:
        pickle.dump(old, handle)
    clip = load_clips(run.info["data_folder"]).split("test")[0]
    mixture, _ = soundfile.read(clip.mixture_path, dtype="float32")
    masks, probabilities, _, _ = load_event_separator(str(path)).masks_and_probabilities(mixture)
    expected = load_event_separator(os.path.join(run.info["checkpoint_dir"], "best.pkl")).masks_and_probabilities(
        mixture)
    np.testing.assert_array_equal(probabilities, expected[1])
    np.testing.assert_array_equal(masks, expected[0])


def test_bad_weak_label_configs_fail_before_training(tmp_path):
    from Training import ex

    base = dict(method="weak_label", run_dir=None, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="`classifier` must be one of"):
        ex.run(config_updates={**base, "classifier": "median"})
    with pytest.raises(ValueError, match="needs `data_root`"):
        ex.run(config_updates={**base, "weak_label_recipe": "tut"})
    with pytest.raises(FileNotFoundError, match="data_root"):
        ex.run(config_updates={**base, "weak_label_recipe": "generic", "data_root": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="`sparsity_weight` must lie in"):
        ex.run(config_updates={**base, "sparsity_weight": 1.5})
    with pytest.raises(ValueError, match="`detection_threshold` must be a probability or one of"):
        ex.run(config_updates={**base, "detection_threshold": "auto"})
    with pytest.raises(ValueError, match="`detection_false_alarm_rate` must be a share in"):
        ex.run(config_updates={**base, "detection_false_alarm_rate": 10})
    for weight in (1.5, "auto", True):
        with pytest.raises(ValueError, match="`clip_statistics_weight` must be a weight in"):
            ex.run(config_updates={**base, "clip_statistics_weight": weight})
    with pytest.raises(ValueError, match="`method` must be one of"):
        ex.run(config_updates={"method": "magic", "run_dir": None})
    for dilation in ([4, 3], [3], [3, 0], "3x3", [3.0, 1]):
        with pytest.raises(ValueError, match=r"`mask_dilation` must be \[frames, mel bands\]: positive odd"):
            ex.run(config_updates={**base, "mask_dilation": dilation})
    for gate in (-1.0, float("inf"), True, "20"):
        with pytest.raises(ValueError, match="`background_gate_db` must be a non-negative number of dB"):
            ex.run(config_updates={**base, "background_gate_db": gate})
    for rates, hidden in (([1, 3], 3), ([1, 3, 0], 3), ("1,3,9", 3), ([1, 3, 9], 4)):
        setting = {"mask_setting": "kong", "mask_blocks": 4} if hidden == 4 else {"mask_blocks": 4}
        with pytest.raises(ValueError, match=rf"`mask_frequency_dilations` must be null or {hidden} positive integers"):
            ex.run(config_updates={**base, **setting, "mask_frequency_dilations": rates})


def test_a_nan_loss_stops_weak_label_training_and_keeps_the_last_good_checkpoint(weak_label_run, tmp_path,
                                                                                  monkeypatch):
    from Models import training_loop
    from Models.weak_label import solver as weak_label_solver
    from Training import ex

    _, config = weak_label_run
    config = {**config, "max_epochs": 2, "model_base_dir": str(tmp_path / "checkpoints"),
              "log_dir": str(tmp_path / "logs"), "run_dir": None}
    original_batch = weak_label_solver.WeakLabelSolver._train_batch

    def diverging(self, clips):
        losses = original_batch(self, clips)
        return {**losses, "loss": float("nan")} if self.progress.epoch == 1 else losses

    monkeypatch.setattr(weak_label_solver.WeakLabelSolver, "_train_batch", diverging)
    with pytest.raises(training_loop.TrainingDiverged, match="loss became nan at step 12 .train epoch 2.*last.pkl"):
        ex.run(config_updates=config)
    checkpoint_dir = os.path.join(config["model_base_dir"], os.listdir(config["model_base_dir"])[0])
    with open(os.path.join(checkpoint_dir, "last.pkl"), "rb") as handle:
        state = pickle.load(handle)
    assert state["progress"]["epoch"] == 1 and all(np.all(np.isfinite(w)) for w in state["weights"])
