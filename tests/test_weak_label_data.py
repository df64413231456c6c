"""Weak-label data: the folder format and its checks, and the demo, generic, TUT and DCASE 2013
recipes (deterministic, exact sums, the requested level ratios, clear errors on bad input)."""
import csv
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
import yaml

from Datasets.weak_label import SPLITS, cache_folder, load_clips, prepare
from Datasets.weak_label.__main__ import main as command_line
from Datasets.weak_label.mixing import PEAK_LIMIT

RATE = 8000
TINY = {"sample_rate": RATE, "clip_seconds": 1.0, "clips_per_split": {"train": 8, "valid": 3, "test": 3}}


def _write_noise(path, seconds, rate=RATE, channels=1, seed=0, level=0.1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    signal = level * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    soundfile.write(str(path), signal, rate, subtype="FLOAT")


def _write_tone(path, frequency, seconds, rate=RATE, channels=1, level=0.3):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    times = np.arange(int(seconds * rate)) / rate
    signal = level * np.sin(2 * np.pi * frequency * times) * np.hanning(len(times))
    soundfile.write(str(path), np.repeat(signal[:, None], channels, axis=1), rate, subtype="FLOAT")


@pytest.fixture
def generic_root(tmp_path):
    """events/{high,low,mid}/ with 3 tones each (one longer than the clips, at another rate and
    in stereo) and backgrounds/ with 3 noise recordings."""
    root = tmp_path / "user_data"
    for name, frequency in (("low", 300.0), ("mid", 900.0), ("high", 2500.0)):
        for number, seconds in enumerate((0.3, 0.5, 2.5)):
            _write_tone(root / "events" / name / f"{name}{number}.wav", frequency * (1 + 0.05 * number), seconds,
                        rate=16000 if number == 2 else RATE, channels=2 if number == 2 else 1)
    for number in range(3):
        _write_noise(root / "backgrounds" / f"noise{number}.wav", 3.0, seed=number)
    return root


def _files(folder) -> dict[str, bytes]:
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(parent, name), "rb") as file:
                found[os.path.relpath(os.path.join(parent, name), folder)] = file.read()
    return found


def _read(path) -> np.ndarray:
    return soundfile.read(path, dtype="float64")[0]


def _events(folder) -> list[dict]:
    with open(os.path.join(folder, "events.csv"), newline="") as file:
        return list(csv.DictReader(file))


def _measured_ratio(folder, event, rate, reference=None) -> float:
    """Event-to-background ratio of one events.csv row, from the written sources."""
    clip = os.path.splitext(os.path.basename(event["filename"]))[0]
    sources = os.path.join(folder, "sources", clip)
    start, stop = (int(round(float(event[key]) * rate)) for key in ("onset_seconds", "offset_seconds"))
    signal = _read(os.path.join(sources, f"{event['class']}.wav"))[start:stop]
    background = (reference if reference is not None else _read(os.path.join(sources, "background.wav")))[start:stop]
    return 20 * np.log10(np.sqrt(np.mean(signal ** 2)) / np.sqrt(np.mean(background ** 2)))


def _assert_mixtures_are_sums(clips):
    for clip in clips.clips:
        sources = os.path.join(clips.folder, "sources", clip.name)
        total = sum(_read(os.path.join(sources, name)) for name in os.listdir(sources))
        np.testing.assert_allclose(_read(clip.mixture_path), total, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Demo


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weak_label") / "demo"
    start = time.perf_counter()
    prepare("demo", str(folder))
    return str(folder), time.perf_counter() - start


def test_default_demo_is_made_in_seconds_with_every_class_in_every_split(default_demo):
    folder, seconds = default_demo
    assert seconds < 30
    clips = load_clips(folder)
    assert clips.classes == ["beeps", "chirp", "clicks", "harmonic", "noise_burst"]
    assert clips.sample_rate == 16000
    assert [len(clips.split(split)) for split in SPLITS] == [300, 80, 80]
    for split in SPLITS:
        counts = np.sum([clip.labels for clip in clips.split(split)], axis=0)
        assert counts.min() >= 0.25 * len(clips.split(split)), (split, counts)
    assert any(not clip.labels.any() for clip in clips.split("train"))  # a few clips without events
    lengths = {soundfile.info(clip.mixture_path).frames for clip in clips.clips}
    assert lengths == {4 * 16000}


def test_demo_events_sit_at_their_ratios_and_mixtures_are_sums(default_demo):
    folder, _ = default_demo
    events = _events(folder)[:60]
    ratios = [_measured_ratio(folder, event, 16000) for event in events]
    np.testing.assert_allclose(ratios, [float(event["ebr_db"]) for event in events], atol=0.01)
    assert min(ratios) >= -6.01 and max(ratios) <= 6.01 and np.ptp(ratios) > 6
    clips = load_clips(folder)
    _assert_mixtures_are_sums(type(clips)(clips.classes, clips.folder, clips.sample_rate, clips.clips[:40]))


def test_demo_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path):
    small = dict(TINY, event_files_per_class=3, background_files=3, background_seconds=2.0)
    first = _files(prepare("demo", str(tmp_path / "a"), seed=5, **small))
    again = _files(prepare("demo", str(tmp_path / "b"), seed=5, **small))
    other = _files(prepare("demo", str(tmp_path / "c"), seed=6, **small))
    assert first == again
    assert first["mixtures/train_00000.wav"] != other["mixtures/train_00000.wav"]
    clips = load_clips(str(tmp_path / "a"))
    for split in SPLITS:
        assert np.sum([clip.labels for clip in clips.split(split)], axis=0).min() >= 1


# ----------------------------------------------------------------------------------------------
# Generic recipe


def test_generic_reaches_the_requested_ratio_crops_long_events_and_sums(generic_root, tmp_path):
    folder = prepare("generic", str(tmp_path / "out"), data_root=str(generic_root), ebr_db=(3.0, 3.0),
                     events_per_clip=(1, 1), **TINY)
    events = _events(folder)
    assert len(events) == 14
    ratios = [_measured_ratio(folder, event, RATE) for event in events]
    np.testing.assert_allclose(ratios, 3.0, atol=0.1)
    durations = [float(event["offset_seconds"]) - float(event["onset_seconds"]) for event in events]
    assert max(durations) == pytest.approx(1.0)  # the 2.5 s events, cropped to the clip
    clips = load_clips(folder)
    assert clips.classes == ["high", "low", "mid"]
    assert {soundfile.info(clip.mixture_path).frames for clip in clips.clips} == {RATE}
    _assert_mixtures_are_sums(clips)
    for clip in clips.clips:
        present = [name for name, value in zip(clips.classes, clip.labels) if value]
        assert sorted(clip.source_paths) == present and clip.background_path is not None


def test_generic_events_do_not_overlap_and_test_files_stay_out_of_training(generic_root, tmp_path):
    folder = prepare("generic", str(tmp_path / "out"), data_root=str(generic_root), events_per_clip=(2, 3),
                     **TINY)
    by_clip = {}
    for event in _events(folder):
        by_clip.setdefault(event["filename"], []).append((float(event["onset_seconds"]),
                                                          float(event["offset_seconds"])))
    assert any(len(spans) == 3 for spans in by_clip.values())
    for spans in by_clip.values():
        spans.sort()
        assert all(end <= next_start + 1e-9 for (_, end), (next_start, _) in zip(spans, spans[1:]))
        assert 0 <= spans[0][0] and spans[-1][1] <= 1.0  # long events shortened to fit together
    files = {split: {event["source_file"] for event in _events(folder) if f"/{split}_" in event["filename"]}
             for split in SPLITS}
    assert not files["train"] & (files["valid"] | files["test"])


def test_generic_records_each_clips_background_recording_and_offset(generic_root, tmp_path):
    folder = prepare("generic", str(tmp_path / "out"), data_root=str(generic_root), solo_training_clips=True, **TINY)
    with open(os.path.join(folder, "backgrounds.csv"), newline="") as file:
        rows = {row["filename"]: row for row in csv.DictReader(file)}
    clips = load_clips(folder)
    assert set(rows) == {os.path.relpath(clip.mixture_path, folder) for clip in clips.clips
                         if not clip.name.endswith("_events")}  # solo event clips have no background
    for clip in clips.clips:
        row = rows.get(os.path.relpath(clip.mixture_path, folder))
        if row is None:
            continue
        written = _read(clip.background_path)
        start = int(round(float(row["offset_seconds"]) * RATE))
        cut = _read(generic_root / row["source_file"])[start:start + len(written)]
        scale = np.dot(written, cut) / np.dot(cut, cut)  # the clip's common peak scale
        np.testing.assert_allclose(written, scale * cut, atol=1e-6)
    heard = {split: {row["source_file"] for name, row in rows.items() if f"/{split}_" in name} for split in SPLITS}
    assert all(heard.values()) and not heard["train"] & (heard["valid"] | heard["test"])


def test_generic_keeps_each_subfolder_in_one_split(generic_root, tmp_path):
    for kit in range(4):  # takes of one drum kit sound alike: a kit goes to one split whole
        for take in range(3):
            _write_tone(generic_root / "events" / "low" / f"kit{kit}" / f"take{take}.wav", 200.0 + 20 * kit + take, 0.3)
    for path in (generic_root / "backgrounds").iterdir():
        path.unlink()
    frequencies = {"song/part0.wav": 1000.0, "song/part1.wav": 1250.0, "hum.wav": 2000.0, "whistle.wav": 3000.0}
    for name, frequency in frequencies.items():  # a background is told by its frequency in the clips
        _write_tone(generic_root / "backgrounds" / name, frequency, 3.0)
    folder = prepare("generic", str(tmp_path / "out"), data_root=str(generic_root),
                     **{**TINY, "clips_per_split": {"train": 12, "valid": 6, "test": 6}})
    kit_splits = {}
    for event in _events(folder):
        if "/kit" in event["source_file"]:
            split = os.path.basename(event["filename"]).split("_")[0]
            kit_splits.setdefault(os.path.dirname(event["source_file"]), set()).add(split)
    assert len(kit_splits) == 4 and all(len(splits) == 1 for splits in kit_splits.values())
    background_splits = {}
    for clip in load_clips(folder).clips:
        spectrum = np.abs(np.fft.rfft(_read(clip.background_path)))
        peak = np.argmax(spectrum) * RATE / (2 * (len(spectrum) - 1))
        heard = min(frequencies.values(), key=lambda frequency: abs(frequency - peak))
        background_splits.setdefault(heard, set()).add(clip.split)
    assert len(background_splits[1000.0] | background_splits[1250.0]) == 1
    for name, kit in (("mid0.wav", "kit0"), ("mid1.wav", "kit0"), ("mid2.wav", "kit1")):  # 2 units for 3 splits
        os.renames(generic_root / "events" / "mid" / name, generic_root / "events" / "mid" / kit / name)
    with pytest.raises(ValueError, match=r"Class 'mid' .*counting each subfolder as one file, has 2 file"):
        prepare("generic", str(tmp_path / "few"), data_root=str(generic_root), **TINY)


def test_generic_balances_training_kits_not_takes_when_asked(tmp_path):
    root = tmp_path / "kits"
    for name, frequency in (("low", 300.0), ("high", 2500.0)):
        for kit, takes in enumerate((6, 1, 1, 1, 1)):  # one kit with six takes among kits of one
            for take in range(takes):
                _write_tone(root / "events" / name / f"kit{kit}" / f"take{take}.wav", frequency + 30 * kit + take, 0.2)
    for number in range(3):
        _write_noise(root / "backgrounds" / f"noise{number}.wav", 3.0, seed=number)
    options = {**TINY, "events_per_clip": (1, 1), "clips_per_split": {"train": 40, "valid": 3, "test": 3}}
    uses, held_out = {}, {}  # per option: each class's (uses of each kit, uses of each take) in training
    for balanced in (False, True):
        events = _events(prepare("generic", str(tmp_path / str(balanced)), data_root=str(root),
                                 balanced_training_groups=balanced, **options))
        train = [event["source_file"] for event in events if "/train_" in event["filename"]]
        held_out[balanced] = sorted(event["source_file"] for event in events if "/train_" not in event["filename"])
        uses[balanced] = {name: (Counter(os.path.dirname(path) for path in train if f"/{name}/" in path),
                                 Counter(path for path in train if f"/{name}/" in path)) for name in ("low", "high")}
    assert held_out[True] == held_out[False]  # validation and test clips are those without it
    for name in ("low", "high"):  # seed 0 puts kit0 (six takes) and two kits of one take in training
        kits, _ = uses[True][name]
        assert len(kits) == 3 and max(kits.values()) - min(kits.values()) <= 1  # 20 events over 3 kits
        assert kits[f"events/{name}/kit0"] <= 7
        kits, takes = uses[False][name]
        assert max(takes.values()) - min(takes.values()) <= 1  # by takes: six of the eight are kit0's
        assert kits[f"events/{name}/kit0"] >= 14


def test_generic_is_deterministic_for_a_seed(generic_root, tmp_path):
    first = _files(prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), seed=2, **TINY))
    again = _files(prepare("generic", str(tmp_path / "b"), data_root=str(generic_root), seed=2, **TINY))
    other = _files(prepare("generic", str(tmp_path / "c"), data_root=str(generic_root), seed=3, **TINY))
    assert first == again and first["labels.csv"] == again["labels.csv"]
    assert first["mixtures/train_00000.wav"] != other["mixtures/train_00000.wav"]


def test_generic_solo_training_clips_split_each_training_mixture_into_its_parts(generic_root, tmp_path):
    options = {**TINY, "events_per_clip": (1, 2), "empty_clip_probability": 0.3, "seed": 4}
    plain = load_clips(prepare("generic", str(tmp_path / "plain"), data_root=str(generic_root), **options))
    solo = load_clips(prepare("generic", str(tmp_path / "solo"), data_root=str(generic_root),
                              solo_training_clips=True, **options))
    by_name = {clip.name: clip for clip in solo.clips}
    with_events = [clip for clip in plain.split("train") if clip.labels.any()]
    assert with_events and len(with_events) < len(plain.split("train"))  # clips without events stay alone
    assert len(solo.split("train")) == len(plain.split("train")) + 2 * len(with_events)
    for split in ("valid", "test"):  # mixtures only: their scores stay those of mixtures
        assert [clip.name for clip in solo.split(split)] == [clip.name for clip in plain.split(split)]
    for clip in plain.clips:  # the mixtures are drawn as without the option
        np.testing.assert_array_equal(_read(by_name[clip.name].mixture_path), _read(clip.mixture_path))
    for clip in with_events:
        events, background = by_name[f"{clip.name}_events"], by_name[f"{clip.name}_background"]
        np.testing.assert_array_equal(events.labels, clip.labels)
        assert not background.labels.any() and events.split == background.split == "train"
        event_sum = sum(_read(path) for path in clip.source_paths.values())
        np.testing.assert_allclose(_read(events.mixture_path), event_sum, atol=1e-6)
        np.testing.assert_allclose(_read(background.mixture_path), _read(clip.background_path), atol=1e-6)
        np.testing.assert_allclose(_read(events.mixture_path) + _read(background.mixture_path),
                                   _read(clip.mixture_path), atol=1e-6)
    _assert_mixtures_are_sums(solo)


def _durations(folder, split) -> list[float]:
    return [float(event["offset_seconds"]) - float(event["onset_seconds"]) for event in _events(folder)
            if f"/{split}_" in event["filename"]]


def _peak_frequency(path, rate=RATE) -> float:
    signal = _read(path)
    return float(np.argmax(np.abs(np.fft.rfft(signal))) * rate / len(signal))


def test_generic_varies_training_events_only(generic_root, tmp_path):
    options = {**TINY, "events_per_clip": (1, 1), "seed": 5}
    plain = prepare("generic", str(tmp_path / "plain"), data_root=str(generic_root), **options)
    octave = prepare("generic", str(tmp_path / "octave"), data_root=str(generic_root),
                     training_event_semitones=(-12, -12), **options)
    cut = prepare("generic", str(tmp_path / "cut"), data_root=str(generic_root), training_event_seconds=(0.1, 0.1),
                  **options)
    plain_files = _files(plain)
    for varied in (octave, cut):  # validation and test clips are those without the options
        varied_files = _files(varied)
        for name, content in plain_files.items():
            if "/valid_" in name or "/test_" in name:
                assert varied_files[name] == content, name
    # an octave down plays at half the speed: twice as long (cropped to the 1 s clip) and half the frequency
    np.testing.assert_allclose(sorted(_durations(octave, "train")),
                               sorted(min(duration * 2, 1.0) for duration in _durations(plain, "train")), atol=2e-3)
    plain_train = [event for event in _events(plain) if "/train_" in event["filename"]]
    octave_train = [event for event in _events(octave) if "/train_" in event["filename"]]
    for before, after in zip(plain_train, octave_train):
        assert before["source_file"] == after["source_file"]
        clip = os.path.splitext(os.path.basename(before["filename"]))[0]
        frequencies = [_peak_frequency(os.path.join(folder, "sources", clip, f"{before['class']}.wav"))
                       for folder in (plain, octave)]
        assert frequencies[1] == pytest.approx(frequencies[0] / 2, rel=0.05)
    np.testing.assert_allclose(_durations(cut, "train"), 0.1, atol=1e-3)  # every tone is longer than 0.1 s
    _assert_mixtures_are_sums(load_clips(cut))
    ratios = [_measured_ratio(cut, event, RATE) for event in _events(cut)]  # the ratio is that of the cut event
    assert np.mean(ratios) == pytest.approx(np.mean([_measured_ratio(plain, event, RATE) for event in _events(plain)]),
                                            abs=0.2)


def test_event_variation_cuts_with_a_fade_and_keeps_an_event_whose_cut_part_is_silent():
    from Datasets.weak_label.mixing import EventVariation

    tone = np.sin(np.arange(RATE) * 0.3)
    late = np.concatenate([np.zeros(RATE // 5), tone])
    cut = EventVariation(None, (0.1, 0.1))
    rng = np.random.default_rng(0)
    shortened = cut(tone, RATE, rng)
    assert len(shortened) == RATE // 10 and shortened[-1] == 0.0
    np.testing.assert_array_equal(shortened[:RATE // 20], tone[:RATE // 20])
    np.testing.assert_array_equal(cut(late, RATE, rng), late)  # 0.1 s of it would be silence


def test_short_background_is_looped_with_a_warning_or_refused(generic_root, tmp_path, caplog):
    short = generic_root / "backgrounds" / "noise1.wav"
    _write_noise(short, 0.4, seed=9)
    with caplog.at_level(logging.WARNING):
        folder = prepare("generic", str(tmp_path / "loop"), data_root=str(generic_root), **TINY)
    assert str(short) in caplog.text and "looped" in caplog.text
    assert {soundfile.info(clip.mixture_path).frames for clip in load_clips(folder).clips} == {RATE}
    with pytest.raises(ValueError, match=r"noise1\.wav.*0\.40 s.*short_background='loop'"):
        prepare("generic", str(tmp_path / "error"), data_root=str(generic_root), short_background="error", **TINY)


def test_generic_clips_without_events_have_all_zero_labels(generic_root, tmp_path):
    folder = prepare("generic", str(tmp_path / "out"), data_root=str(generic_root), empty_clip_probability=0.5,
                     **TINY)
    empty = [clip for clip in load_clips(folder).clips if not clip.labels.any()]
    assert empty and all(clip.source_paths == {} and clip.background_path for clip in empty)


def test_generic_bad_layouts_are_explained(generic_root, tmp_path):
    for path in (generic_root / "events" / "mid").iterdir():
        if path.name != "mid0.wav":
            path.unlink()
    with pytest.raises(ValueError, match=r"Class 'mid' .*has 1 file.*at least 3"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), **TINY)
    with pytest.raises(FileNotFoundError, match=r"data_root '.*nowhere' is not a folder"):
        prepare("generic", str(tmp_path / "b"), data_root=str(tmp_path / "nowhere"), **TINY)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"empty/events' does not exist.*events/<class>/\*\.wav"):
        prepare("generic", str(tmp_path / "b"), data_root=str(tmp_path / "empty"), **TINY)


# ----------------------------------------------------------------------------------------------
# prepare(): options and the cache


def test_unknown_options_and_bad_values_are_named(generic_root, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown option 'ebr'.*ebr_db"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), ebr=3)
    with pytest.raises(ValueError, match=r"Unknown option 'short_background' for the dcase2013 recipe"):
        prepare("dcase2013", str(tmp_path / "a"), data_root=str(generic_root), short_background="loop")
    with pytest.raises(ValueError, match=r"Option 'clips_per_split'"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), clips_per_split={"train": 3})
    with pytest.raises(ValueError, match=r"Option 'short_background'.*'loop', 'error'"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), short_background="pad")
    with pytest.raises(ValueError, match=r"Option 'training_event_seconds' must be positive"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), training_event_seconds=(0, 1))
    with pytest.raises(ValueError, match=r"Option 'training_event_semitones' must have low <= high"):
        prepare("generic", str(tmp_path / "a"), data_root=str(generic_root), training_event_semitones=(3, -3))
    with pytest.raises(ValueError, match=r"Unknown recipe 'esc50'"):
        prepare("esc50", str(tmp_path / "a"))


def test_complete_folders_are_reused_interrupted_ones_redone_and_user_files_kept(generic_root, tmp_path):
    folder = cache_folder(str(tmp_path / "cache"), "generic", str(generic_root), **TINY)
    assert folder != cache_folder(str(tmp_path / "cache"), "generic", str(generic_root), seed=1, **TINY)
    prepare("generic", folder, data_root=str(generic_root), **TINY)
    mixture = os.path.join(folder, "mixtures", "train_00000.wav")
    written = os.stat(mixture).st_mtime_ns
    prepare("generic", folder, data_root=str(generic_root), **TINY)
    assert os.stat(mixture).st_mtime_ns == written
    with open(os.path.join(folder, "recipe.json")) as file:
        assert json.load(file)["options"]["clips_per_split"] == TINY["clips_per_split"]
    os.remove(os.path.join(folder, "recipe.json"))  # as if interrupted before the end
    os.remove(mixture)
    prepare("generic", folder, data_root=str(generic_root), **TINY)
    assert os.path.isfile(mixture) and os.path.isfile(os.path.join(folder, "recipe.json"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"notes\.txt.*will not overwrite"):
        prepare("generic", str(mine), data_root=str(generic_root), **TINY)
    assert (mine / "notes.txt").read_text() == "keep"


def test_runs_asking_for_the_same_folder_at_once_make_it_once(generic_root, tmp_path, monkeypatch):
    from Datasets.weak_label import recipes

    kind, build = recipes.RECIPES["generic"]
    builds = []

    def slow_build(*arguments):
        builds.append(time.monotonic())
        time.sleep(0.5)  # long enough for the other run to find the folder unmade
        build(*arguments)

    monkeypatch.setitem(recipes.RECIPES, "generic", (kind, slow_build))
    folder = str(tmp_path / "shared")
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: prepare("generic", folder, data_root=str(generic_root), **TINY), range(2)))
    assert made == [os.path.abspath(folder)] * 2 and len(builds) == 1
    assert len(load_clips(folder).split("train")) == TINY["clips_per_split"]["train"]


def test_command_line_prints_the_folder_and_counts(generic_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    command_line(["generic", out, "--data-root", str(generic_root), "--seed", "4", "--option", "sample_rate=8000",
                  "--option", "clip_seconds=1", "--option", 'clips_per_split={"train": 6, "valid": 3, "test": 3}'])
    printed = capsys.readouterr().out
    assert out in printed and "train 6, valid 3, test 3" in printed
    assert all(name in printed for name in ("high", "low", "mid"))


# ----------------------------------------------------------------------------------------------
# load_clips(): bringing one's own data


def _user_folder(root, rows, classes=("dog", "siren")):
    os.makedirs(root / "mixtures", exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    for filename, _, _ in rows:
        if not filename.startswith("missing"):
            _write_noise(root / filename, 0.2)
    with open(root / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows([("filename", "split", "labels"), *rows])
    return str(root)


def test_user_folder_loads_with_empty_labels_and_without_sources(tmp_path):
    folder = _user_folder(tmp_path, [("mixtures/a.wav", "train", "dog"), ("mixtures/b.wav", "train", "siren;dog"),
                                     ("mixtures/c.wav", "valid", ""), ("mixtures/d.wav", "test", "siren")])
    clips = load_clips(folder)
    assert clips.sample_rate == RATE and [clip.name for clip in clips.split("train")] == ["a", "b"]
    np.testing.assert_array_equal([clip.labels for clip in clips.clips], [[1, 0], [1, 1], [0, 0], [0, 1]])
    assert clips.clips[0].labels.dtype == np.float32
    assert all(clip.source_paths == {} and clip.background_path is None for clip in clips.clips)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        clips.split("dev")


@pytest.mark.parametrize("rows, error, message", [
    ([("mixtures/a.wav", "train", "dog;cat")], ValueError,
     r"labels\.csv line 2: unknown class 'cat'; the known classes are dog, siren"),
    ([("mixtures/a.wav", "train", "dog;siren"), ("missing.wav", "test", "dog")], FileNotFoundError,
     r"labels\.csv line 3: the mixture file '.*missing\.wav' does not exist"),
    ([("mixtures/a.wav", "train", "dog"), ("mixtures/b.wav", "test", "siren")], ValueError,
     r"labels\.csv: class 'siren' has no training examples.*add examples or drop the class from classes\.txt"),
    ([("mixtures/a.wav", "train", "dog;siren"), ("mixtures/a.wav", "test", "dog")], ValueError,
     r"labels\.csv line 3: duplicate clip 'a', already on line 2"),
    ([("mixtures/a.wav", "training", "dog;siren")], ValueError,
     r"labels\.csv line 2: unknown split 'training'; the splits are train, valid, test"),
])
def test_bad_label_files_are_explained(tmp_path, rows, error, message):
    folder = _user_folder(tmp_path, rows)
    with pytest.raises(error, match=message):
        load_clips(folder)


def test_missing_class_list_is_explained_and_given_classes_replace_it(tmp_path):
    folder = _user_folder(tmp_path, [("mixtures/a.wav", "train", "dog;siren")])
    assert load_clips(folder, classes=["siren", "dog"]).clips[0].labels.tolist() == [1, 1]
    os.remove(os.path.join(folder, "classes.txt"))
    with pytest.raises(FileNotFoundError, match=r"classes\.txt' does not exist"):
        load_clips(folder)


# ----------------------------------------------------------------------------------------------
# TUT Rare Sound Events 2017


@pytest.fixture
def tut_root(tmp_path):
    """The TUT layout: 2 classes with 3 devtrain recordings (one event longer than a clip) and 1
    devtest recording each; 3 devtrain and 2 devtest backgrounds at 22050 Hz in stereo."""
    source = tmp_path / "TUT-rare-sound-events-2017-development" / "data" / "source_data"
    annotations = {"devtrain": {}, "devtest": {}}
    for name, frequency in (("babycry", 500.0), ("gunshot", 1500.0)):
        for number in range(4):
            subset = "devtest" if number == 3 else "devtrain"
            filename = f"{name}{number}.wav"
            _write_tone(source / "events" / name / filename, frequency, 6.0, rate=22050, channels=2)
            segment = [0.5, 5.5] if number == 0 else [1.0, 2.5 + 0.5 * number]  # 5 s: longer than a clip
            annotations[subset].setdefault(name, []).append({"audio_filename": filename, "segment": segment})
    backgrounds = {"devtrain": [], "devtest": []}
    for number in range(5):
        subset = "devtest" if number >= 3 else "devtrain"
        _write_noise(source / "bgs" / "audio" / f"a{number:03d}_0_30.wav", 6.0, rate=22050, channels=2, seed=number)
        backgrounds[subset].append({"filepath": f"audio/a{number:03d}_0_30.wav", "classname": "office"})
    os.makedirs(source / "cv_setup")
    for subset in ("devtrain", "devtest"):
        (source / "cv_setup" / f"events_{subset}.yaml").write_text(yaml.safe_dump(annotations[subset]))
        (source / "cv_setup" / f"bgs_{subset}.yaml").write_text(yaml.safe_dump(backgrounds[subset]))
    return source.parent.parent


def test_tut_mixes_each_event_at_0_db_with_solo_clips(tut_root, tmp_path):
    folder = prepare("tut", str(tmp_path / "out"), data_root=str(tut_root), sample_rate=RATE)
    clips = load_clips(folder)
    assert clips.classes == ["babycry", "gunshot", "background"]
    assert [len(clips.split(split)) for split in SPLITS] == [3 * 4, 3 * 2, 3 * 2]
    labels = {clip.name: [name for name, value in zip(clips.classes, clip.labels) if value] for clip in clips.clips}
    mixtures = [name for name in labels if not name.endswith(("_event", "_background"))]
    assert all(len(labels[name]) == 2 and labels[name][-1] == "background" for name in mixtures)
    assert all(labels[f"{name}_background"] == ["background"] for name in mixtures)
    assert all(labels[f"{name}_event"] == labels[name][:1] for name in mixtures)
    events = [event for event in _events(folder) if not event["filename"].endswith("_event.wav")]
    ratios = [_measured_ratio(folder, event, RATE) for event in events]
    np.testing.assert_allclose(ratios, 0.0, atol=0.1)
    onsets = [float(event["onset_seconds"]) for event in events]
    durations = [float(event["offset_seconds"]) - onset for event, onset in zip(events, onsets)]
    assert max(durations) == pytest.approx(4.0)  # the 5 s events, cropped to the clip
    offsets_from_centre = [onset - (4.0 - duration) / 2 for onset, duration in zip(onsets, durations)
                           if duration < 4.0]
    assert np.ptp(offsets_from_centre) > 1.0  # random onsets, not centred
    for name in mixtures:
        clip = next(clip for clip in clips.clips if clip.name == name)
        assert np.abs(_read(clip.mixture_path)).max() == pytest.approx(PEAK_LIMIT, abs=1e-6)
        assert clip.source_paths["background"] == clip.background_path
    _assert_mixtures_are_sums(clips)
    held_out = {event["source_file"] for event in _events(folder) if "valid_" in event["filename"]}
    trained = {event["source_file"] for event in _events(folder) if "train_" in event["filename"]}
    assert held_out and not held_out & trained
    with open(os.path.join(folder, "backgrounds.csv"), newline="") as file:
        backgrounds = {row["filename"]: row["source_file"] for row in csv.DictReader(file)}
    assert {os.path.basename(name)[:-4] for name in backgrounds} == {
        name for name in labels if not name.endswith("_event")}  # the solo event clips have none
    assert all(path.startswith("bgs/") for path in backgrounds.values())


def test_tut_without_solo_clips_and_with_bad_annotations(tut_root, tmp_path):
    folder = prepare("tut", str(tmp_path / "out"), data_root=str(tut_root), sample_rate=RATE, solo_clips=False)
    clips = load_clips(folder)
    assert clips.classes == ["babycry", "gunshot"] and len(clips.clips) == 8
    annotation = tut_root / "data" / "source_data" / "cv_setup" / "events_devtest.yaml"
    annotation.write_text(yaml.safe_dump({"babycry": [{"audio_filename": "babycry3.wav", "segment": [2.0, 1.0]}],
                                          "gunshot": [{"audio_filename": "gone.wav", "segment": [0.0, 1.0]}]}))
    with pytest.raises(ValueError, match=r"events_devtest\.yaml, class 'babycry', event 1: .*0 <= start < end"):
        prepare("tut", str(tmp_path / "bad"), data_root=str(tut_root), sample_rate=RATE)
    annotation.write_text(yaml.safe_dump({"babycry": [{"audio_filename": "babycry3.wav", "segment": [1.0, 2.0]}],
                                          "gunshot": [{"audio_filename": "gone.wav", "segment": [0.0, 1.0]}]}))
    with pytest.raises(FileNotFoundError, match=r"class 'gunshot', event 1: the event file '.*gone\.wav'"):
        prepare("tut", str(tmp_path / "bad"), data_root=str(tut_root), sample_rate=RATE)


# ----------------------------------------------------------------------------------------------
# DCASE 2013 office sounds


@pytest.fixture
def dcase2013_root(tmp_path):
    root = tmp_path / "singlesounds"
    for name, frequency in (("alert", 2000.0), ("cough", 400.0), ("keys", 3000.0)):
        for number in range(1, 4):
            _write_tone(root / f"{name}{number:02d}.wav", frequency, 0.3 * number, rate=22050, channels=2)
    return root


def test_dcase2013_clips_have_white_noise_10_db_below_the_events(dcase2013_root, tmp_path):
    options = dict(sample_rate=RATE, clip_seconds=3.0, events_per_clip=(1, 3),
                   clips_per_split={"train": 6, "valid": 3, "test": 3})
    folder = prepare("dcase2013", str(tmp_path / "a"), data_root=str(dcase2013_root), **options)
    assert _files(folder) == _files(prepare("dcase2013", str(tmp_path / "b"), data_root=str(dcase2013_root),
                                            **options))
    clips = load_clips(folder)
    assert clips.classes == ["alert", "cough", "keys"]
    _assert_mixtures_are_sums(clips)
    events = _events(folder)
    for clip in clips.clips:
        mine = [event for event in events if event["filename"] == f"mixtures/{clip.name}.wav"]
        sounding = np.zeros(3 * RATE, dtype=bool)
        for event in mine:
            sounding[round(float(event["onset_seconds"]) * RATE):round(float(event["offset_seconds"]) * RATE)] = True
        spans = sorted((float(event["onset_seconds"]), float(event["offset_seconds"])) for event in mine)
        assert all(end <= next_start + 1e-9 for (_, end), (next_start, _) in zip(spans, spans[1:]))
        events_sum = sum(_read(path) for path in clip.source_paths.values())
        noise = _read(clip.background_path)
        snr = 20 * np.log10(np.sqrt(np.mean(events_sum[sounding] ** 2)) / np.sqrt(np.mean(noise[sounding] ** 2)))
        assert snr == pytest.approx(10.0, abs=0.1)
        assert np.abs(np.fft.rfft(noise)).std() / np.abs(np.fft.rfft(noise)).mean() < 0.6  # flat spectrum


def test_dcase2013_refuses_files_of_unknown_classes(dcase2013_root, tmp_path):
    _write_tone(dcase2013_root / "bark01.wav", 500.0, 0.3)
    with pytest.raises(ValueError, match=r"bark01\.wav.*alert, clearthroat"):
        prepare("dcase2013", str(tmp_path / "out"), data_root=str(dcase2013_root), sample_rate=RATE)
