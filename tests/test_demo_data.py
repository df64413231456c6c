import filecmp
import os

import numpy as np

from Datasets import audio, features
from Datasets.demo import generate_demo_data
from Datasets.descriptors import parse_descriptor

SMALL = dict(training_tracks=2, test_tracks=2, extra_tracks=3, instrumental_extra_tracks=1, duration=4.0)


def _audio_files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root)
                  for name in names if name.endswith(".wav"))


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    first = generate_demo_data(str(tmp_path / "a"), seed=1, **SMALL)
    generate_demo_data(str(tmp_path / "b"), seed=1, **SMALL)
    generate_demo_data(str(tmp_path / "c"), seed=2, **SMALL)
    files = _audio_files(tmp_path / "a")
    assert len(files) == 4 * 5 + 3 * 3 and files == _audio_files(tmp_path / "b")
    assert all(filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False) for name in files)
    assert not filecmp.cmp(tmp_path / "a" / files[0], tmp_path / "c" / files[0], shallow=False)
    assert [os.path.basename(path) for path in first] == ["DemoPaired.xml", "DemoExtra.xml"]


def test_layout_descriptors_and_mixtures_are_sums_of_their_stems(tmp_path):
    paired_xml, extra_xml = generate_demo_data(str(tmp_path), seed=0, **SMALL)
    paired, extra = parse_descriptor(paired_xml), parse_descriptor(extra_xml)
    assert [track.split for track in paired.tracks] == ["Training", "Training", "Test", "Test"]
    assert paired.format == "DSD100" and extra.format == "CCMixter" and len(extra.tracks) == 3
    for database in (paired, extra):
        for track in database.tracks:
            signals = {instrument.name: audio.read(os.path.join(database.root, instrument.relative_path))
                       for instrument in track.instruments}
            mixture = signals.pop("Mix")
            parts = [signals["Instrumental"], signals["Voice"]] if database is extra else list(signals.values())
            np.testing.assert_allclose(mixture, np.sum(parts, axis=0), atol=1e-6)
            assert np.abs(mixture).max() <= 1.0
    silent_voice = audio.read(os.path.join(extra.root, extra.tracks[-1].instruments_named("Voice")[0].relative_path))
    assert not silent_voice.any()  # the instrumental extra song


def test_second_call_reuses_and_new_settings_regenerate(tmp_path):
    descriptors = generate_demo_data(str(tmp_path), seed=0, **SMALL)
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in _audio_files(tmp_path)}
    assert generate_demo_data(str(tmp_path), seed=0, **SMALL) == descriptors
    assert stamps == {name: os.stat(tmp_path / name).st_mtime_ns for name in _audio_files(tmp_path)}
    generate_demo_data(str(tmp_path), seed=0, **dict(SMALL, duration=3.0))
    assert len(audio.read(tmp_path / _audio_files(tmp_path)[0])) == 3 * 16000


def test_voice_and_accompaniment_overlap_in_frequency_and_the_voice_pauses(tmp_path):
    paired_xml, _ = generate_demo_data(str(tmp_path), seed=0, **dict(SMALL, duration=10.0))
    track = parse_descriptor(paired_xml).tracks[0]
    root = parse_descriptor(paired_xml).root

    def spectrum(name):
        signal = audio.read(os.path.join(root, track.instruments_named(name)[0].relative_path), mono=True)
        return np.abs(features.stft(signal, 1024, 256)) ** 2

    voice, chords = spectrum("Voice"), spectrum("Other")
    band = slice(int(200 / 16000 * 1024), int(2000 / 16000 * 1024))
    for power in (voice, chords):  # most of each source's energy lies in the shared band
        assert power[band].sum() / power.sum() > 0.5
    frame_energy = voice.sum(axis=0)
    assert np.mean(frame_energy < 1e-4 * frame_energy.max()) > 0.1  # pauses between phrases
