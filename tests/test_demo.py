"""The built-in demo data: deterministic, in the promised layouts, cached, and a separation
problem that is learnable but not solved by a fixed filter."""
import os

import numpy as np
import pytest

from Datasets import audio, demo, features
from Datasets.descriptors import parse_descriptor

SMALL = dict(training_tracks=1, test_tracks=0, extra_tracks=1, instrumental_extra_tracks=0, duration=3.0)
MODEL_RATE = 8192  # the rate the separator works at


def _audio_files(root) -> dict[str, bytes]:
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".wav"):
                path = os.path.join(folder, name)
                with open(path, "rb") as file:
                    found[os.path.relpath(path, root)] = file.read()
    return found


def _read(database, track, name) -> np.ndarray:
    return audio.read(os.path.join(database.root, track.instruments_named(name)[0].relative_path))


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """Three paired songs and three extra ones, the last an instrumental; long enough for
    statistics about the signals."""
    root = tmp_path_factory.mktemp("demo")
    paths = demo.generate_demo_data(str(root), training_tracks=2, test_tracks=1, extra_tracks=3,
                                    instrumental_extra_tracks=1, duration=8.0)
    return [parse_descriptor(path) for path in paths]


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    def generated_files(folder: str, seed: int) -> dict[str, bytes]:
        demo.generate_demo_data(str(tmp_path / folder), seed=seed, **SMALL)
        return _audio_files(tmp_path / folder)

    first, again, other = generated_files("a", 3), generated_files("b", 3), generated_files("c", 4)
    assert len(first) == 5 + 6 and first == again
    assert first.keys() == other.keys()
    assert all(first[path] != other[path] for path in first)


def test_layouts_splits_and_formats(demo_set):
    paired, extra = demo_set
    assert (paired.name, paired.format, extra.name, extra.format) == ("DemoPaired", "DSD100", "DemoExtra", "CCMixter")
    assert [track.split for track in paired.tracks] == ["Training", "Training", "Test"]
    assert [track.name for track in paired.tracks] == [f"Demo - Song {number}" for number in (1, 2, 3)]
    assert {instrument.name for instrument in paired.tracks[0].instruments} == {"Mix", "Voice", "Bass", "Drums",
                                                                              "Other"}
    assert len(extra.tracks) == 3 and all(track.split is None for track in extra.tracks)
    assert [instrument.name for instrument in extra.tracks[0].instruments] == ["Mix", "Instrumental", "Voice", "Bass",
                                                                              "Drums", "Other"]
    for database in demo_set:
        for track in database.tracks:
            for instrument in track.instruments:
                sample = audio.info(os.path.join(database.root, instrument.relative_path))
                assert (sample.sample_rate, sample.channels, sample.num_frames) == (16000, 2, 8 * 16000)
                assert instrument.length == pytest.approx(8.0)


def test_mixtures_are_the_sums_of_their_stems_and_stay_in_range(demo_set):
    paired, extra = demo_set
    for track in paired.tracks:
        stems = [_read(paired, track, name) for name in ("Voice", "Bass", "Drums", "Other")]
        mixture = _read(paired, track, "Mix")
        np.testing.assert_allclose(mixture, sum(stems), atol=1e-6)
        assert np.abs(mixture).max() <= 1.0 and max(np.abs(stem).max() for stem in stems) < 0.9
    for track in extra.tracks:
        np.testing.assert_allclose(_read(extra, track, "Mix"),
                                   _read(extra, track, "Instrumental") + _read(extra, track, "Voice"), atol=1e-6)
        np.testing.assert_allclose(_read(extra, track, "Instrumental"),
                                   sum(_read(extra, track, name) for name in ("Bass", "Drums", "Other")), atol=1e-6)


def test_last_extra_song_is_an_instrumental(demo_set):
    extra = demo_set[1]
    assert not _read(extra, extra.tracks[-1], "Voice").any()
    assert np.abs(_read(extra, extra.tracks[0], "Voice")).max() > 0.01


def test_complete_set_is_reused_and_changed_settings_regenerate(tmp_path, monkeypatch):
    paths = demo.generate_demo_data(str(tmp_path), **SMALL)
    stamps = {path: os.stat(tmp_path / path).st_mtime_ns for path in _audio_files(tmp_path)}

    def must_not_run(*arguments):
        raise AssertionError("a complete demo set was generated again")

    with monkeypatch.context() as patch:
        patch.setattr(demo, "_write_songs", must_not_run)
        assert demo.generate_demo_data(str(tmp_path), **SMALL) == paths
    assert {path: os.stat(tmp_path / path).st_mtime_ns for path in _audio_files(tmp_path)} == stamps

    changed = dict(SMALL, training_tracks=2, extra_tracks=0, duration=2.0)
    paths = demo.generate_demo_data(str(tmp_path), **changed)
    assert [os.path.basename(path) for path in paths] == ["DemoPaired.xml"]
    assert len(parse_descriptor(paths[0]).tracks) == 2
    assert not os.path.exists(tmp_path / "DemoExtra.xml") and not os.path.exists(tmp_path / "extra")
    assert all(audio.info(tmp_path / path).duration == 2.0 for path in _audio_files(tmp_path))


def test_incomplete_set_is_regenerated(tmp_path):
    demo.generate_demo_data(str(tmp_path), **SMALL)
    stem = tmp_path / "paired" / "Sources" / "Dev" / "001 - Demo - Song 1" / "bass.wav"
    os.remove(stem)
    demo.generate_demo_data(str(tmp_path), **SMALL)
    assert stem.exists()


def _voice_and_accompaniment(database) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spectrograms as the separator sees them: mono at 8192 Hz, STFT 512/256."""
    pairs = []
    for track in database.tracks:
        voice = audio.resample(audio.to_mono(_read(database, track, "Voice")), 16000, MODEL_RATE)
        accompaniment = sum(audio.to_mono(_read(database, track, name)) for name in ("Bass", "Drums", "Other"))
        pairs.append((features.stft(voice), features.stft(audio.resample(accompaniment, 16000, MODEL_RATE))))
    return pairs


def _band_share(spectrogram: np.ndarray, low: float, high: float) -> float:
    frequencies = np.linspace(0, MODEL_RATE / 2, spectrogram.shape[0])
    power = np.abs(spectrogram) ** 2
    return float(power[(frequencies >= low) & (frequencies <= high)].sum() / power.sum())


def _sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(np.abs(reference) ** 2) / np.sum(np.abs(reference - estimate) ** 2)))


def test_voice_and_accompaniment_share_the_band_and_a_fixed_filter_separates_poorly(demo_set):
    pairs = _voice_and_accompaniment(demo_set[0])
    for voice, accompaniment in pairs:
        assert _band_share(voice, 200, 2000) > 0.5 and _band_share(accompaniment, 200, 2000) > 0.3
    voice = np.concatenate([voice for voice, _ in pairs], axis=1)
    accompaniment = np.concatenate([accompaniment for _, accompaniment in pairs], axis=1)
    mixture = voice + accompaniment
    # The best fixed filter: the Wiener gain of each frequency over the whole set.
    voice_power = np.mean(np.abs(voice) ** 2, axis=1, keepdims=True)
    fixed_gain = voice_power / (voice_power + np.mean(np.abs(accompaniment) ** 2, axis=1, keepdims=True))
    ideal_mask = np.abs(voice) / (np.abs(voice) + np.abs(accompaniment) + 1e-9)
    fixed, ideal = _sdr(voice, fixed_gain * mixture), _sdr(voice, ideal_mask * mixture)
    assert fixed < 7.0 and ideal > fixed + 5.0


def test_voice_pauses(demo_set):
    def silent_share(voice: np.ndarray) -> float:
        frame_power = np.mean(np.abs(voice) ** 2, axis=0)
        return float(np.mean(frame_power < frame_power.max() * 1e-4))

    shares = [silent_share(voice) for voice, _ in _voice_and_accompaniment(demo_set[0])]
    assert all(share > 0.2 for share in shares)


def test_rejects_impossible_settings(tmp_path):
    for settings in (dict(training_tracks=0, test_tracks=0), dict(extra_tracks=-1), dict(duration=0.5),
                     dict(channels=3), dict(sample_rate=4000)):
        with pytest.raises(ValueError):
            demo.generate_demo_data(str(tmp_path), **settings)


def test_command_line_prints_a_summary(tmp_path, capsys):
    arguments = [str(tmp_path), "--training-tracks", "1", "--test-tracks", "1", "--extra-tracks", "0",
                 "--duration", "2", "--channels", "1", "--sample-rate", "8000"]
    demo.main(arguments)
    assert capsys.readouterr().out.startswith("Generated in")
    demo.main(arguments)
    summary = capsys.readouterr().out
    assert summary.startswith("Found: 1 training + 1 test") and summary.count("\n") == 1
    sample = audio.info(tmp_path / "paired" / "Mixtures" / "Test" / "002 - Demo - Song 2" / "mixture.wav")
    assert (sample.sample_rate, sample.channels, sample.num_frames) == (8000, 1, 16000)
