"""What makes the weak-label joint model learn on real-like data (issue 16): the start at the
class priors, the linear floor beside it, the augmentation keys, the checks of bad labels,
and a tiny run on noisy bursts over structured backgrounds that beats chance."""
import logging

import numpy as np
import pytest
import soundfile
import tensorflow as tf

from Models.weak_label.augmentation import Augmentation, check_augmentation_keys
from Models.weak_label.linear_floor import LinearFloor, pooled_statistics
from Models.weak_label.model import Standardisation, build_weak_label_model, split_outputs
from Models.weak_label.prior_bias import start_at_priors

RATE = 8000
PRIORS = np.array([0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------------------------
# The sparsity term


@pytest.mark.parametrize("covered", ["absent", "all"])
def test_the_sparsity_term_averages_the_masks_of_the_pairs_it_covers(covered):
    from Models.weak_label.solver import JointModel

    spec = dict(num_mels=4, num_classes=2, mask_options={"channels": 2, "num_blocks": 2}, classifier_kind="max",
                classifier_options={})
    joint = JointModel(spec, sparsity_weight=0.25, jit_compile=False, sparsity_masks=covered)
    labels = tf.constant([[1.0, 0.0], [0.0, 0.0]])
    masks = tf.constant(np.stack([np.full((3, 4), value, np.float32) for value in (0.8, 0.1, 0.3, 0.5)]
                                 ).reshape(2, 2, 3, 4).transpose(0, 2, 3, 1))  # (clips, frames, mels, classes)
    probabilities = tf.constant([[0.9, 0.2], [0.3, 0.4]])
    losses = joint.losses(labels, masks, probabilities)
    # mask means per (clip, class): 0.8 (present), 0.1, 0.3, 0.5 (absent)
    expected = (0.1 + 0.3 + 0.5) / 3 if covered == "absent" else (0.8 + 0.1 + 0.3 + 0.5) / 4
    np.testing.assert_allclose(float(losses["sparsity"]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(losses["loss"]), 0.75 * float(losses["bce"]) + 0.25 * expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# The moving average of the weights


def test_the_averaged_weights_are_the_moving_average_of_the_steps_and_training_goes_on_from_its_own():
    from Models.weak_label.solver import JointModel
    from Models.weak_label.training import ema_momentum

    assert ema_momentum(0, 50) == 0.0 and ema_momentum(2, 50) == pytest.approx(0.99)
    assert ema_momentum(0.5, 1) == 0.0  # an average over less than a step is the weights themselves
    spec = dict(num_mels=4, num_classes=2, mask_options={"channels": 2, "num_blocks": 2}, classifier_kind="max",
                classifier_options={})
    rng = np.random.default_rng(0)
    features = rng.standard_normal((4, 6, 4)).astype(np.float32)
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    joint = JointModel(spec, 1e-2, jit_compile=False, ema_momentum=0.6)
    expected = None
    for _ in range(4):
        joint.train_step(features, labels)
        weights = [variable.numpy() for variable in joint.model.trainable_variables]
        # the first step starts the average at the weights
        expected = weights if expected is None else [0.6 * e + 0.4 * w for e, w in zip(expected, weights)]
    with joint.averaged_weights():
        for variable, value in zip(joint.model.trainable_variables, expected):
            np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-6)
    assert max(np.abs(w - e).max() for w, e in zip(weights, expected)) > 1e-3  # not the same weights
    for variable, value in zip(joint.model.trainable_variables, weights):
        np.testing.assert_array_equal(variable.numpy(), value)
    plain = JointModel(spec, 1e-2, jit_compile=False)
    before = [variable.numpy() for variable in plain.model.trainable_variables]
    with plain.averaged_weights():
        for variable, value in zip(plain.model.trainable_variables, before):
            np.testing.assert_array_equal(variable.numpy(), value)


# ----------------------------------------------------------------------------------------------
# Starting at the priors


@pytest.mark.parametrize("setting, activation, kind", [
    ("thesis", "sigmoid", "gwrp"), ("thesis", "sigmoid", "gwrp_affine"), ("thesis", "sigmoid", "linear_softmax"),
    ("thesis", "sigmoid", "max"), ("kong", "sigmoid", "average"),
    ("kong", "softmax", "gwrp"), ("thesis", "sigmoid", "dense"), ("kong", "sigmoid", "gru")])
def test_the_model_starts_at_the_class_priors_and_keeps_its_other_variables(setting, activation, kind):
    tf.keras.utils.set_random_seed(0)
    features = np.random.default_rng(0).standard_normal((8, 40, 16)).astype(np.float32)
    model = build_weak_label_model(16, 3, {"setting": setting, "channels": 8, "last_activation": activation}, kind,
                                   {"num_frames": 40} if kind == "dense" else {})
    _, before = split_outputs(model(features, training=True))
    assert np.abs(before.numpy().mean(axis=0) - PRIORS).max() > 0.05  # zero biases: about the same for every class
    names = [variable.path for variable in model.variables]
    values = [variable.numpy() for variable in model.variables]
    start_at_priors(model, kind, features, PRIORS)
    changed = [name for name, value, variable in zip(names, values, model.variables)
               if not np.array_equal(value, variable.numpy())]
    assert len(changed) == 1 and changed[0].endswith(("beta", "bias"))  # the class bias alone
    _, after = split_outputs(model(features, training=True))
    np.testing.assert_allclose(after.numpy().mean(axis=0), PRIORS, atol=2e-3)


# ----------------------------------------------------------------------------------------------
# The linear floor


def test_pooled_statistics_are_per_band_mean_max_std_and_90th_percentile():
    clip = np.arange(20, dtype=np.float32).reshape(10, 2)  # band 0: 0, 2, ..., 18; band 1: 1, 3, ..., 19
    statistics = pooled_statistics([clip, clip[:4] + 1])
    assert statistics.shape == (2, 8)
    np.testing.assert_allclose(statistics[0], [9, 10, 18, 19, clip[:, 0].std(), clip[:, 1].std(), 16.2, 17.2],
                               rtol=1e-6)
    assert statistics[1, 0] == pytest.approx(4.0)  # clips of other lengths pool alike


def test_linear_floor_separates_spectral_shapes_and_refuses_constant_classes():
    rng = np.random.default_rng(0)

    def clips(count):  # class 0 raises the low bands of the clip, class 1 the high ones
        labels = (rng.random((count, 2)) < 0.5).astype(np.float32)
        log_mels = [rng.standard_normal((30, 8)) + np.r_[[0.8 * a] * 4, [0.8 * b] * 4] for a, b in labels]
        return log_mels, labels

    train, test = clips(80), clips(40)
    floor = LinearFloor().fit(*train)
    tagging = floor.tagging(*test, ["low", "high"])
    assert tagging["weighted_auc"] > 0.9 and tagging["mean_average_precision"] > 0.85
    assert floor.probabilities(test[0]).shape == (40, 2)
    with pytest.raises(ValueError, match=r"classes \[1\] .* constant over the training clips"):
        LinearFloor().fit(train[0], np.c_[train[1][:, 0], np.ones(80)])


def test_clip_statistics_readout_is_the_fitted_floor_and_fuses_in_the_logit_domain():
    from Models.weak_label.clip_statistics import ClipStatisticsReadout, fuse

    rng = np.random.default_rng(1)
    labels = (rng.random((60, 2)) < 0.5).astype(np.float32)
    log_mels = [rng.standard_normal((30, 8)) + np.r_[[a] * 4, [b] * 4] for a, b in labels]
    floor = LinearFloor().fit(log_mels, labels)
    readout = ClipStatisticsReadout.from_state(ClipStatisticsReadout.of(floor, 0.25).to_state())
    np.testing.assert_allclose(readout.probabilities(log_mels), floor.probabilities(log_mels), rtol=1e-9, atol=1e-12)
    masks = rng.random((60, 2))
    statistics = readout.probabilities(log_mels)
    np.testing.assert_array_equal(fuse(masks, statistics, 0.0), masks)
    np.testing.assert_allclose(fuse(masks, statistics, 1.0), statistics, rtol=1e-9)
    odds = (masks / (1 - masks)) ** 0.75 * (statistics / (1 - statistics)) ** 0.25  # the weighted logits, as odds
    np.testing.assert_allclose(readout.fuse(masks, log_mels), odds / (1 + odds), rtol=1e-9)
    assert np.all(np.isfinite(fuse(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), 0.5)))  # no infinite logit
    per_class = ClipStatisticsReadout.from_state(ClipStatisticsReadout.of(floor, np.array([0.0, 0.5])).to_state())
    fused = per_class.fuse(masks, log_mels)  # a weight per class weighs each class's column alone
    np.testing.assert_allclose(fused[:, 0], masks[:, 0], rtol=1e-12)
    np.testing.assert_allclose(fused[:, 1], fuse(masks, statistics, 0.5)[:, 1], rtol=1e-12)


def test_the_fusion_weight_is_chosen_on_validation_auc_and_the_smaller_wins_ties():
    from Models.weak_label.clip_statistics import choose_weight

    rng = np.random.default_rng(2)
    labels = rng.random((200, 2)) < 0.5
    noise = rng.standard_normal((2, 200, 2))
    # each source ranks one class well and the other poorly: together they rank both
    masks = 1 / (1 + np.exp(-(labels * np.array([3.0, 0.3]) + noise[0])))
    statistics = 1 / (1 + np.exp(-(labels * np.array([0.3, 3.0]) + noise[1])))
    assert choose_weight(labels, masks, statistics, ["a", "b"]) in (0.375, 0.5)
    assert choose_weight(labels, masks, masks, ["a", "b"]) == 0.0  # every weight ranks alike: the masks alone


def test_per_class_fusion_weights_follow_each_class_validation_auc():
    from Models.weak_label.clip_statistics import choose_class_weights, choose_weight, settled_weight

    rng = np.random.default_rng(3)
    labels = rng.random((300, 3)) < 0.5
    labels[:, 2] = False  # no clip with the third class: no AUC to choose by
    noise = rng.standard_normal((2, 300, 3))
    # the masks rank class a almost perfectly and class b barely; the statistics the other way round
    masks = 1 / (1 + np.exp(-(labels * np.array([6.0, 0.2, 0.0]) + noise[0])))
    statistics = 1 / (1 + np.exp(-(labels * np.array([0.2, 6.0, 0.0]) + noise[1])))
    weights = choose_class_weights(labels, masks, statistics, ["a", "b", "c"])
    assert weights[0] < weights[1] and weights[1] == 0.5
    assert weights[2] == choose_weight(labels, masks, statistics, ["a", "b", "c"])
    np.testing.assert_array_equal(settled_weight("validation_per_class", labels, masks, statistics, ["a", "b", "c"]),
                                  weights)
    assert settled_weight(0.25, labels, masks, statistics, ["a", "b", "c"]) == 0.25


# ----------------------------------------------------------------------------------------------
# Augmentation


def _log_mel_batch(rng, clips=6, frames=20, mels=8):
    log_mels = np.log(rng.uniform(0.01, 1.0, (clips, frames, mels)) + 1e-8)
    standardisation = Standardisation(np.full(mels, -1.5, np.float32), np.full(mels, 1.2, np.float32))
    return standardisation(log_mels), standardisation


def test_augmentation_off_leaves_batches_alone_and_keys_are_checked():
    rng = np.random.default_rng(0)
    features, _ = _log_mel_batch(rng)
    labels = np.eye(6, 3, dtype=np.float32)
    same_features, same_labels = Augmentation()(features, labels, 0)
    assert same_features is features and same_labels is labels
    config = {"expected_sr": 16000, "num_hop": 512, "front_end": "logmel", "augment_gain_db": 6,
              "augment_time_shift": 1.0, "augment_mix_probability": 0.5}
    assert Augmentation.of(config).time_shift_frames == 31  # 1 s at 31.25 frames/s
    check_augmentation_keys(config)
    for key, value in (("augment_gain_db", -1), ("augment_time_shift", "1 s"), ("augment_mix_probability", 1.5)):
        with pytest.raises(ValueError, match=f"`{key}` must be"):
            check_augmentation_keys({**config, key: value})


def test_gain_shifts_log_mels_by_the_drawn_decibels_and_scales_energies():
    rng = np.random.default_rng(1)
    features, standardisation = _log_mel_batch(rng)
    labels = np.zeros((6, 3), np.float32)
    louder, same_labels = Augmentation(gain_db=6.0, standardisation=standardisation)(features, labels, 7)
    shifts = (louder - features) * standardisation.std  # log-mel units
    decibels = shifts * 20 / np.log(10)
    np.testing.assert_allclose(decibels, decibels[:, :1, :1] * np.ones_like(decibels), atol=1e-3)  # one gain a clip
    assert np.all(np.abs(decibels) <= 6.0 + 1e-3) and np.ptp(decibels[:, 0, 0]) > 1.0
    np.testing.assert_array_equal(same_labels, labels)
    energies = rng.uniform(0, 1, (6, 20, 8)).astype(np.float32)
    scaled, _ = Augmentation(gain_db=6.0, front_end="pcen")(energies, labels, 7)
    np.testing.assert_allclose(10 * np.log10(scaled / energies), decibels[:, :1, :1] * np.ones_like(energies),
                               atol=1e-3)  # energies: the square of the magnitudes' gain


def test_time_shift_rolls_each_clip_along_its_frames():
    rng = np.random.default_rng(2)
    features, standardisation = _log_mel_batch(rng)
    shifted, _ = Augmentation(time_shift_frames=5, standardisation=standardisation)(
        features, np.zeros((6, 3), np.float32), 3)
    found = []
    for original, rolled in zip(features, shifted):
        matches = [shift for shift in range(-5, 6) if np.allclose(np.roll(original, shift, axis=0), rolled, atol=1e-5)]
        assert len(matches) == 1
        found.append(matches[0])
    assert len(set(found)) > 1  # drawn per clip


def test_mixing_adds_magnitudes_of_two_clips_and_joins_their_labels():
    rng = np.random.default_rng(3)
    features, standardisation = _log_mel_batch(rng)
    labels = np.eye(6, 3, dtype=np.float32)
    mixed, mixed_labels = Augmentation(mix_probability=1.0, standardisation=standardisation)(features, labels, 5)
    magnitudes = np.exp(features * standardisation.std + standardisation.mean)
    mixed_magnitudes = np.exp(mixed * standardisation.std + standardisation.mean)
    for index in range(6):  # every clip is itself plus one other clip of the batch, labels joined
        partner = [other for other in range(6) if other != index and np.allclose(
            magnitudes[index] + magnitudes[other], mixed_magnitudes[index], rtol=1e-4)]
        assert len(partner) == 1
        np.testing.assert_array_equal(mixed_labels[index], np.maximum(labels[index], labels[partner[0]]))
    again, _ = Augmentation(mix_probability=1.0, standardisation=standardisation)(features, labels, 5)
    np.testing.assert_array_equal(again, mixed)  # the same seed draws the same batch


# ----------------------------------------------------------------------------------------------
# Real-like data: noisy bursts of three kinds over music-like backgrounds, at 0 dB


def _burst(kind: str, rng) -> np.ndarray:
    seconds = rng.uniform(0.12, 0.3)
    times = np.arange(int(seconds * RATE)) / RATE
    decay = np.exp(-times / rng.uniform(0.03, 0.08))
    noise = rng.standard_normal(len(times))
    if kind == "thump":  # low-passed noise: a drum
        signal = np.cumsum(noise) * decay
        signal -= np.linspace(signal[0], signal[-1], len(signal))
    elif kind == "hiss":  # high-passed noise: a hi-hat
        signal = np.diff(noise, prepend=0.0) * decay
    else:  # a voiced call: a few harmonics with vibrato, plus breath
        f0 = rng.uniform(180, 320) * (1 + 0.03 * np.sin(2 * np.pi * 6 * times))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        signal = sum(np.sin(k * phase) / k for k in range(1, 5)) * np.hanning(len(times)) + 0.1 * noise * decay
    return signal / np.max(np.abs(signal))


def _background(rng, seconds: float = 3.0) -> np.ndarray:
    """Brownish noise with notes that come and go: a stand-in for music and ambience."""
    frames = int(seconds * RATE)
    signal = np.cumsum(rng.standard_normal(frames)) * 0.02
    signal -= np.convolve(signal, np.ones(400) / 400, mode="same")
    times = np.arange(frames) / RATE
    for _ in range(6):
        start, length = rng.uniform(0, seconds - 0.5), rng.uniform(0.2, 0.5)
        note = np.sin(2 * np.pi * rng.uniform(150, 1500) * times) * ((times > start) & (times < start + length))
        signal += 0.3 * note
    return signal / np.max(np.abs(signal)) * 0.5


@pytest.fixture(scope="module")
def real_like_root(tmp_path_factory):
    """The generic recipe's layout: events/<class>/<group>/ with 3 groups of 4 files per class,
    backgrounds/ with 6 recordings."""
    root = tmp_path_factory.mktemp("real_like")
    rng = np.random.default_rng(0)
    for kind in ("thump", "hiss", "call"):
        for group in range(3):
            for number in range(4):
                path = root / "events" / kind / f"group{group}" / f"{number}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), _burst(kind, rng), RATE, subtype="FLOAT")
    (root / "backgrounds").mkdir()
    for number in range(6):
        soundfile.write(str(root / "backgrounds" / f"{number}.wav"), _background(rng), RATE, subtype="FLOAT")
    return root


def test_tiny_run_on_real_like_data_beats_chance_and_reports_the_floor(real_like_root, tmp_path):
    from Training import ex

    config = dict(method="weak_label", weak_label_recipe="generic", data_root=str(real_like_root),
                  recipe_options={"sample_rate": RATE, "clip_seconds": 1.0, "events_per_clip": [1, 1],
                                  "ebr_db": [0, 0], "clips_per_split": {"train": 96, "valid": 24, "test": 30}},
                  expected_sr=RATE, num_fft=256, num_hop=128, num_mels=16, mel_fmax=4000.0, stft_window="hamming",
                  mask_channels=8, mask_blocks=3, batch_size=8, max_epochs=5, patience=5, learning_rate=3e-3,
                  jit_compile=False, seed=4, run_dir=None, model_base_dir=str(tmp_path / "checkpoints"),
                  log_dir=str(tmp_path / "logs"), cache_dir=str(tmp_path / "cache"))
    result = ex.run(config_updates=config).result["weak_label"]
    assert result["test_weighted_auc"] > 0.7  # chance is 0.5
    assert 0.5 < result["test_floor_weighted_auc"] <= 1.0 and "test_floor_mean_average_precision" in result
    assert result["train_clips"] == 96 and 0 < result["epoch_seconds"] < 60


def test_the_development_set_benchmark_reports_model_floor_and_oracles_and_resumes(real_like_root, tmp_path, capsys):
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import weak_label_dev_set

    tiny = dict(recipe_options={"sample_rate": RATE, "clip_seconds": 1.0, "events_per_clip": [1, 1], "ebr_db": [0, 0],
                                "clips_per_split": {"train": 48, "valid": 18, "test": 18}},
                expected_sr=RATE, num_fft=256, num_hop=128, num_mels=16, mel_fmax=4000.0, mask_channels=4,
                mask_blocks=2, batch_size=8, max_epochs=2, patience=2, cache_dir=str(tmp_path / "cache"))
    arguments = ["--data-root", str(real_like_root), "--classifiers", "gwrp", "--seeds", "3",
                 "--output", str(tmp_path / "bench")]
    for key, value in tiny.items():
        arguments += ["--with", f"{key}={json.dumps(value)}"]
    results = weak_label_dev_set.main(arguments)
    figures = results["gwrp split=0 seed=3"]
    for split in ("valid", "test"):
        assert figures[split]["events"] == 18 and 0 <= figures[split]["missed"] <= 18
        assert 0 <= figures[split]["weighted_auc"] <= 1 and 0.5 < figures[split]["floor_weighted_auc"] <= 1
        assert figures[split]["ideal_binary_mask_sdr"] > figures[split]["mixture_sdr"]
    assert figures["train_clips"] == 48 and figures["epoch_seconds"] > 0
    classes = figures["test"]["per_class"]
    assert sorted(classes) == ["call", "hiss", "thump"] and all(0 <= entry["auc"] <= 1 for entry in classes.values())
    for key in ("events", "missed", "false_alarms"):  # the classes' events are the report's
        assert sum(entry[key] for entry in classes.values()) == figures["test"][key]
    table = capsys.readouterr().out
    assert "| gwrp | 0 | test | 1 |" in table and "(48) |" in table and "| all |" not in table
    assert all(f"| gwrp | {name} | 1 | " in table for name in classes)
    checkpoint = figures["checkpoint"]

    # the recorded models scored again without weak_label_demo's background gate: the same tags, other separations
    rescore = ["--data-root", str(real_like_root), "--rescore", str(tmp_path / "bench"), "--output",
               str(tmp_path / "ungated")]
    ungated = weak_label_dev_set.main(rescore + ["--with", "background_gate_db=0"])["gwrp split=0 seed=3"]
    assert ungated["test"]["weighted_auc"] == figures["test"]["weighted_auc"]
    assert ungated["test"]["event_sdr"] != figures["test"]["event_sdr"]
    assert ungated["checkpoint"] == checkpoint and ungated["epoch_seconds"] == figures["epoch_seconds"]
    # ... and detecting by the masks alone (weak_label_demo fuses the clip statistics), at another false-alarm
    # rate, settled anew on validation: other tags from the same masks
    masks_alone = weak_label_dev_set.main(rescore[:-1] + [str(tmp_path / "masks"), "--with", "clip_statistics_weight=0",
                                                          "--with", "detection_false_alarm_rate=0.2"])
    masks_alone = masks_alone["gwrp split=0 seed=3"]
    assert figures["test"]["weighted_auc"] != figures["test"]["masks_weighted_auc"]
    assert len(figures["clip_statistics_weight"]) == 3 and masks_alone["clip_statistics_weight"] == 0.0  # per class
    assert masks_alone["test"]["weighted_auc"] == masks_alone["test"]["masks_weighted_auc"] \
        == figures["test"]["masks_weighted_auc"]
    assert masks_alone["valid"]["false_alarms"] == sum(int(0.2 * (18 - entry["events"]))
                                                       for entry in masks_alone["valid"]["per_class"].values())
    capsys.readouterr()
    with pytest.raises(SystemExit):
        weak_label_dev_set.main(rescore + ["--with", "learning_rate=0.1"])
    assert "--rescore takes only the settings that leave the trained masks alone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        weak_label_dev_set.main(rescore[:-1] + [str(tmp_path / "bad"), "--with", "detection_false_alarm_rate=2"])
    assert "`detection_false_alarm_rate` must be a share in [0, 1]" in capsys.readouterr().err

    os.remove(checkpoint)  # a rerun takes the saved results instead of training again
    assert weak_label_dev_set.main(arguments)["gwrp split=0 seed=3"] == figures
    capsys.readouterr()

    # another split deals the recordings anew: other test clips, the same saved run of split 0
    both = weak_label_dev_set.main(arguments + ["--splits", "0", "1"])
    assert both["gwrp split=0 seed=3"] == figures
    other = both["gwrp split=1 seed=3"]
    assert other["checkpoint"] != checkpoint
    assert other["test"]["floor_weighted_auc"] != figures["test"]["floor_weighted_auc"]
    assert "| gwrp | 1 | test | 1 |" in (table := capsys.readouterr().out) and "| gwrp | all | test | 2 |" in table


# ----------------------------------------------------------------------------------------------
# Bad labels


def _folder(tmp_path, rows, classes=("dog", "siren")):
    import csv

    root = tmp_path / "folder"
    (root / "mixtures").mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    rng = np.random.default_rng(0)
    for filename, _, _ in rows:
        soundfile.write(str(root / filename), 0.1 * rng.standard_normal(RATE // 2), RATE, subtype="FLOAT")
    with open(root / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows([("filename", "split", "labels"), *rows])
    return str(root)


def _rows(split, labels):
    return [(f"mixtures/{split}{number}.wav", split, label) for number, label in enumerate(labels)]


def _features_of(folder, tmp_path):
    from Models.weak_label.training import load_features

    config = {"weak_label_recipe": "folder", "data_root": folder, "expected_sr": RATE, "num_fft": 256,
              "num_hop": 128, "num_mels": 16, "mel_fmin": 0.0, "mel_fmax": 4000.0, "stft_window": "hann",
              "front_end": "logmel", "standardise_per_band": True, "cache_dir": str(tmp_path / "cache"),
              "num_workers": 1}
    return load_features(config, logging.getLogger("test"))


def test_classes_with_fewer_than_two_training_clips_are_named(tmp_path):
    from Models.weak_label.training import check_labels

    rows = _rows("train", ["dog", "dog", "siren;cat"]) + _rows("valid", ["dog", "siren"]) + _rows("test", ["dog"])
    folder = _folder(tmp_path, rows, classes=("dog", "siren", "cat"))
    with pytest.raises(ValueError, match=r"labels\.csv: class\(es\) 'siren' \(1\), 'cat' \(1\) have fewer than 2 "
                                         r"training clips"):
        check_labels(_features_of(folder, tmp_path), logging.getLogger("test"))


def test_constant_training_labels_are_refused_before_training(tmp_path):
    from Models.weak_label.training import check_labels

    rows = _rows("train", ["dog;siren", "dog", "dog;siren"]) + _rows("valid", ["dog", "siren"]) + _rows("test", ["dog"])
    with pytest.raises(ValueError, match=r"class\(es\) dog are present in every training clip: nothing tells"):
        check_labels(_features_of(_folder(tmp_path, rows), tmp_path), logging.getLogger("test"))
    rows = _rows("train", ["dog;siren"] * 3) + _rows("valid", ["dog", "siren"]) + _rows("test", ["dog"])
    with pytest.raises(ValueError, match=r"the same for every training clip \(all classes present\): nothing to learn"):
        check_labels(_features_of(_folder(tmp_path / "all", rows), tmp_path), logging.getLogger("test"))


def test_a_class_missing_from_validation_is_named_skipped_and_warned_about(tmp_path, caplog):
    from Models.weak_label.tagging import tagging_metrics
    from Models.weak_label.training import check_labels

    rows = _rows("train", ["dog", "siren", "dog", "siren"]) + _rows("valid", ["dog", "", "dog"]) + _rows(
        "test", ["dog", "siren"])
    data = _features_of(_folder(tmp_path, rows), tmp_path)
    with caplog.at_level(logging.WARNING):
        check_labels(data, logging.getLogger("test"))
    assert "The valid split" in caplog.text and "class(es) siren in no clip or in every clip" in caplog.text
    assert "left out of the weighted average" in caplog.text
    metrics = tagging_metrics(data.labelled["valid"].labels, np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]]),
                              ["dog", "siren"])
    assert metrics["undefined"] == ["siren"] and metrics["weighted_auc"] == 1.0
