import logging
import os
import shutil
import time

import numpy as np
import pytest
import soundfile

from Datasets import audio
from Datasets.conversions import MissingAudioError, convert_track
from Datasets.descriptors import (Database, DescriptorError, Instrument, Track, parse_descriptor, scan_folder,
                                  write_descriptor)
from Datasets.partitions import (DatasetConfigError, Partitions, load_custom_partitions, load_partitions,
                                 split_tracks)
from Sample import SilentSample
from conftest import REPO, write_tone

XML = os.path.join(REPO, "dataset_xml")


@pytest.mark.parametrize("name, tracks, with_voice", [("DSD100", 100, 100), ("CCMixter", 50, 50),
                                                      ("MedleyDB", 122, 64)])
def test_reference_descriptors_parse_unchanged(name, tracks, with_voice):
    database = parse_descriptor(os.path.join(XML, f"{name}.xml"), root="/my/data")
    assert database.name == name and database.root == "/my/data"
    assert len(database.tracks) == tracks
    assert sum(bool(track.instruments_named("Voice")) for track in database.tracks) == with_voice


def test_paper_split_sizes():
    databases = [parse_descriptor(os.path.join(XML, f"{name}.xml")) for name in ("DSD100", "MedleyDB", "CCMixter")]
    split = split_tracks(databases, "paper")

    def count(partition, name):
        return sum(database.name == name for database, _ in split[partition])

    assert (count("train_sup", "DSD100"), count("valid", "DSD100"), count("test", "DSD100")) == (50, 25, 25)
    assert (count("train_unsup", "MedleyDB"), count("valid", "MedleyDB"), count("test", "MedleyDB")) == (41, 41, 40)
    assert (count("train_unsup", "CCMixter"), count("valid", "CCMixter"), count("test", "CCMixter")) == (17, 17, 16)
    assert count("train_sup", "MedleyDB") == count("train_unsup", "DSD100") == 0
    dsd_test = [track for track in databases[0].tracks if track.split == "Test"]
    assert [track for database, track in split["valid"] if database.name == "DSD100"] == dsd_test[:25]


def test_malformed_xml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<database>\n  <databaseName>X</databaseName>\n  <trackList>\n    <track>\n</database>\n")
    with pytest.raises(DescriptorError, match=r"bad\.xml, line \d+: malformed XML"):
        parse_descriptor(path)


def test_missing_element_names_line(tmp_path):
    path = tmp_path / "incomplete.xml"
    path.write_text("<database><databaseName>X</databaseName><databaseFolderPath>/x</databaseFolderPath>\n"
                    "<trackList><track><title>T</title><artist>A</artist><instrumentList>\n<instrument>"
                    "<relativeFilepath>a.wav</relativeFilepath><instrumentName>Mix</instrumentName>"
                    "<numChannels>2</numChannels></instrument></instrumentList></track></trackList></database>")
    with pytest.raises(DescriptorError, match=r"incomplete\.xml, line 3: <instrument> lacks <sampleRate>"):
        parse_descriptor(path)


def test_scan_write_parse_round_trip(dsd_folder, tmp_path):
    scanned = scan_folder(str(dsd_folder), "DSD100", name="MyDSD")
    assert len(scanned.tracks) == 8 and {t.split for t in scanned.tracks} == {"Training", "Test"}
    assert scanned.tracks[0].artist == "Artist 0" and scanned.tracks[0].title == "Song Dev 0"
    path = tmp_path / "MyDSD.xml"
    write_descriptor(scanned, path)
    parsed = parse_descriptor(path)
    assert parsed.tracks == scanned.tracks and parsed.format == "DSD100" and parsed.name == "MyDSD"
    with pytest.raises(FileExistsError):
        write_descriptor(scanned, path)


def test_scan_musdb18hq_layout(tmp_path):
    for split in ("train", "test"):
        for stem in ("mixture", "vocals", "drums", "bass", "other"):
            write_tone(str(tmp_path / split / "Artist - Title" / f"{stem}.wav"), seconds=0.2)
    database = scan_folder(str(tmp_path), "MUSDB18HQ")
    assert [track.split for track in database.tracks] == ["Training", "Test"]
    assert {i.name for i in database.tracks[0].instruments} == {"Mix", "Voice", "Drums", "Bass", "Other"}


def _descriptor(folder, tmp_path, name="MyDSD"):
    path = tmp_path / f"{name}.xml"
    if not path.exists():
        write_descriptor(scan_folder(str(folder), "DSD100", name=name), path)
    return str(path)


def test_dsd100_partitions_and_derived_accompaniment(dsd_folder, tmp_path):
    before = sorted(p for p in dsd_folder.rglob("*"))
    cache = tmp_path / "cache"
    partitions = load_partitions([_descriptor(dsd_folder, tmp_path)], str(cache), split="paper")
    assert (len(partitions.train_sup), len(partitions.valid), len(partitions.test)) == (4, 2, 2)
    track = partitions.train_sup[0]
    assert track.sources["accompaniment"].path.startswith(str(cache))
    assert sorted(p for p in dsd_folder.rglob("*")) == before  # nothing written beside the user's data
    mixture, vocals = audio.read(track.mixture), audio.read(track.sources["voice"])
    np.testing.assert_allclose(audio.read(track.sources["accompaniment"]), mixture - vocals, atol=1e-6)


def test_warm_cache_and_rebuild_reasons(dsd_folder, tmp_path, caplog):
    descriptor, cache = _descriptor(dsd_folder, tmp_path), str(tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="Datasets.partitions")
    load_partitions([descriptor], cache)
    assert "no cache yet" in caplog.text
    caplog.clear()
    start = time.perf_counter()
    load_partitions([descriptor], cache)
    assert caplog.text == "" and time.perf_counter() - start < 1.0

    with open(descriptor) as handle:
        text = handle.read()
    with open(descriptor, "w") as handle:  # drop the last Test track
        handle.write(text[:text.rindex("<track>")] + "</trackList></database>")
    partitions = load_partitions([descriptor], cache)
    assert "descriptor" in caplog.text and "changed" in caplog.text
    assert len(partitions.valid) + len(partitions.test) == 3

    caplog.clear()
    copy = tmp_path / "copy"
    shutil.copytree(dsd_folder, copy)
    partitions = load_partitions([descriptor], cache, dataset_roots={"MyDSD": str(copy)})
    assert "dataset_roots" in caplog.text
    assert partitions.train_sup[0].mixture.path.startswith(str(copy))


def test_root_folder_missing_names_config_key(dsd_folder, tmp_path):
    descriptor = _descriptor(dsd_folder, tmp_path)
    with pytest.raises(DatasetConfigError, match=r"does not exist.*dataset_roots\.MyDSD=.*dataset_root="):
        load_partitions([descriptor], str(tmp_path / "cache"), dataset_roots={"MyDSD": str(tmp_path / "nowhere")})
    with pytest.raises(DatasetConfigError, match="descriptors"):
        load_partitions([str(tmp_path / "none.xml")], str(tmp_path / "cache"))


def test_missing_audio_file_names_track_and_path_or_is_skipped(dsd_folder, tmp_path, caplog):
    descriptor = _descriptor(dsd_folder, tmp_path)
    missing = dsd_folder / "Sources" / "Dev" / "001 - Artist 1 - Song Dev 1" / "vocals.wav"
    os.remove(missing)
    with pytest.raises(MissingAudioError, match=f"Artist 1 - Song Dev 1.*{missing}.*skip_missing_files"):
        load_partitions([descriptor], str(tmp_path / "cache"))
    partitions = load_partitions([descriptor], str(tmp_path / "cache"), skip_missing_files=True)
    assert len(partitions.train_sup) == 3 and "Song Dev 1" in caplog.text


def _medleydb_track(root, title, stems):
    instruments = []
    for index, (name, frequency, rate, channels) in enumerate(stems):
        relative = f"Audio/{title}/{title}_STEM_{index:02d}.wav"
        write_tone(str(root / relative), frequency, seconds=0.5, rate=rate, channels=channels, amplitude=0.2)
        instruments.append(Instrument(relative, name, rate, channels))
    return Track(title=title, artist="A", instruments=tuple(instruments))


def test_medleydb_sums_each_stem_once_and_handles_mixed_formats(tmp_path):
    root = tmp_path / "MedleyDB"
    sung = _medleydb_track(root, "Sung", [("Voice", 500, 44100, 2), ("Voice", 700, 44100, 2),
                                          ("Bass", 60, 22050, 1), ("Other", 900, 44100, 2)])
    database = Database("MedleyDB", str(root), (sung,))
    track = convert_track(database, sung, str(tmp_path / "derived"))
    voice, accompaniment, mixture = (audio.read(s, mono=True) for s in (track.sources["voice"],
                                                                        track.sources["accompaniment"],
                                                                        track.mixture))
    stems = [audio.read(audio.info(root / i.relative_path), sample_rate=44100, mono=True)
             for i in sung.instruments]
    np.testing.assert_allclose(voice, stems[0] + stems[1], atol=1e-5)
    np.testing.assert_allclose(accompaniment, stems[2][:len(accompaniment)] + stems[3][:len(accompaniment)],
                               atol=1e-4)
    np.testing.assert_allclose(mixture, voice[:len(mixture)] + accompaniment[:len(mixture)], atol=1e-5)
    assert track.mixture.sample_rate == 44100


def test_medleydb_instrumental_track_has_silent_voice_left_out_of_unpaired(tmp_path):
    root = tmp_path / "MedleyDB"
    tracks = tuple(_medleydb_track(root, f"Song{i}", [("Other", 300, 16000, 1)] +
                                   ([("Voice", 500, 16000, 1)] if i % 2 else [])) for i in range(3))
    path = tmp_path / "MedleyDB.xml"
    write_descriptor(Database("MedleyDB", str(root), tracks), path)
    partitions = load_partitions([str(path)], str(tmp_path / "cache"))
    # Thirds in descriptor order: Song0 (instrumental) unpaired, Song1 (sung) valid, Song2 test.
    assert isinstance(partitions.test[0].sources["voice"], SilentSample)
    assert not partitions.valid[0].sources["voice"].is_silent
    assert len(partitions.train_unsup.mixtures) == 1 and partitions.train_unsup.sources["voice"] == []


def test_ikala_channels(tmp_path):
    root = tmp_path / "iKala"
    os.makedirs(root / "Wavfile")
    stereo = np.stack([np.full(800, 0.1), np.full(800, 0.3)], axis=1)
    soundfile.write(root / "Wavfile" / "10161_chorus.wav", stereo, 44100, subtype="FLOAT")
    database = scan_folder(str(root), "iKala")
    track = convert_track(database, database.tracks[0], str(tmp_path / "derived"))
    np.testing.assert_allclose(audio.read(track.sources["accompaniment"])[:, 0], 0.1, atol=1e-6)
    np.testing.assert_allclose(audio.read(track.sources["voice"])[:, 0], 0.3, atol=1e-6)
    np.testing.assert_allclose(audio.read(track.mixture)[:, 0], 0.4, atol=1e-6)


def test_custom_loader_hook(tmp_path, monkeypatch):
    for name in ("m", "a", "v"):
        write_tone(str(tmp_path / f"{name}.wav"), seconds=0.1)
    module = tmp_path / "my_loader.py"
    module.write_text(
        "from Datasets import audio\n"
        "from Sample import SilentSample\n"
        f"def load():\n    m, a, v = (audio.info(r'{tmp_path}/' + n + '.wav') for n in 'mav')\n"
        "    return {'train_sup': [(m, a, v)], 'train_unsup': [[m], [a], [v, SilentSample(1.0, 16000)]],\n"
        "            'train_valid': [(m, a, v)], 'train_test': []}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    partitions = load_custom_partitions("my_loader:load")
    assert isinstance(partitions, Partitions) and len(partitions.train_sup) == 1 and partitions.test == []
    assert len(partitions.train_unsup.sources["voice"]) == 1
    with pytest.raises(DatasetConfigError, match="nothere"):
        load_custom_partitions("nothere:load")


def _truncate(path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def test_truncated_audio_is_damaged_and_named_or_skipped(dsd_folder, tmp_path, caplog):
    """Case 4 of the reliability issue: a WAV whose header promises 1 s but that holds 0.05 s is
    damaged, named with its track, and left out only with skip_missing_files=True."""
    from Datasets.audio import DamagedAudioError
    from Datasets.conversions import TrackAudioError

    descriptor = _descriptor(dsd_folder, tmp_path)
    damaged = dsd_folder / "Sources" / "Dev" / "002 - Artist 2 - Song Dev 2" / "vocals.wav"
    _truncate(damaged, 100 + 2 * 800 * 4)  # float32 stereo: 800 of 16000 frames
    with pytest.raises(DamagedAudioError, match=r"promises 1\.00 s of audio but the file holds 0\.05 s"):
        audio.info(damaged)
    with pytest.raises(TrackAudioError, match=f"Artist 2 - Song Dev 2.*{damaged}.*damaged.*skip_missing_files"):
        load_partitions([descriptor], str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        partitions = load_partitions([descriptor], str(tmp_path / "cache"), skip_missing_files=True)
    assert len(partitions.train_sup) == 3 and "Song Dev 2" in caplog.text and "damaged" in caplog.text
    assert all("Song Dev 2" not in track.name for track in partitions.train_sup)


def test_streamed_wav_without_sizes_is_not_damaged(tmp_path):
    """A WAV written to a pipe keeps 0xFFFFFFFF as its sizes: it promises nothing and reads whole."""
    import struct

    signal = write_tone(str(tmp_path / "tone.wav"), seconds=0.5, rate=8000)
    data = bytearray((tmp_path / "tone.wav").read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    position = data.find(b"data")
    data[position + 4:position + 8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "streamed.wav").write_bytes(bytes(data))
    assert audio.info(tmp_path / "streamed.wav").num_frames == len(signal)
    np.testing.assert_array_equal(audio.read(tmp_path / "streamed.wav"), signal)


@pytest.mark.parametrize("layout", ["DSD100", "MUSDB18HQ"])
def test_four_stem_conversions_of_dsd100_and_musdb18hq_layouts(tmp_path, layout):
    root = tmp_path / layout
    stems = {"vocals": 600.0, "bass": 80.0, "drums": 200.0, "other": 1000.0}
    folders = ({"Dev": "001 - A - Song"} if layout == "DSD100" else {"train": "A - Song"})
    for split, folder in folders.items():
        if layout == "DSD100":
            source_folder, mixture_folder = root / "Sources" / split / folder, root / "Mixtures" / split / folder
        else:
            source_folder = mixture_folder = root / split / folder
        signals = {stem: write_tone(str(source_folder / f"{stem}.wav"), frequency, amplitude=0.1)
                   for stem, frequency in stems.items()}
        os.makedirs(mixture_folder, exist_ok=True)
        soundfile.write(str(mixture_folder / "mixture.wav"), sum(signals.values()), 16000, subtype="FLOAT")
    database = scan_folder(str(root), layout)
    names = ["vocals", "drums", "bass", "other"]
    track = convert_track(database, database.tracks[0], str(tmp_path / "derived"), names)
    assert list(track.sources) == names
    for name in names:
        np.testing.assert_allclose(audio.read(track.sources[name]), signals[name], atol=1e-6)
    # the accompaniment is the mixture minus the other named sources, whatever they are
    track = convert_track(database, database.tracks[0], str(tmp_path / "derived"), ["drums", "accompaniment"])
    np.testing.assert_allclose(audio.read(track.sources["accompaniment"]),
                               signals["vocals"] + signals["bass"] + signals["other"], atol=1e-6)


def test_four_stems_of_the_demo_data(tiny_demo, tmp_path):
    partitions = load_partitions(tiny_demo, str(tmp_path / "cache"), source_names=["vocals", "drums", "bass", "other"])
    for track in partitions.train_sup + partitions.valid + partitions.test:
        assert list(track.sources) == ["vocals", "drums", "bass", "other"]
        mixture = audio.read(track.mixture)
        np.testing.assert_allclose(sum(audio.read(source) for source in track.sources.values()), mixture, atol=1e-5)
    assert set(partitions.train_unsup.sources) == {"vocals", "drums", "bass", "other"}
    assert all(partitions.train_unsup.sources.values())


@pytest.mark.parametrize("names, message", [
    ([], "`source_names` is empty"),
    (["voice", "vocals"], r"names one stem twice: \['vocals', 'voice'\]"),
    (["vocals", "piano"], r"\['piano'\] name no stem"),
])
def test_bad_source_names(names, message):
    from Datasets.conversions import check_source_names

    with pytest.raises(ValueError, match=message):
        check_source_names(names)


def test_a_data_set_that_cannot_supply_a_source_names_its_stems(tmp_path):
    xml = os.path.join(REPO, "dataset_xml", "CCMixter.xml")
    root = tmp_path / "CCMixter"
    root.mkdir()
    with pytest.raises(ValueError, match=r"Data set CCMixter \(CCMixter format, .*CCMixter.xml\) cannot supply the "
                                         r"source\(s\) \['drums'\].*stems \['vocals', 'accompaniment'\]"):
        load_partitions([xml], str(tmp_path / "cache"), dataset_root=str(tmp_path), source_names=["vocals", "drums"])


def test_a_track_missing_a_stem_is_named_or_skipped(dsd_folder, tmp_path, caplog):
    from Datasets.conversions import MissingStemError

    descriptor = _descriptor(dsd_folder, tmp_path)
    database = parse_descriptor(descriptor)
    lacking = database.tracks[1]
    stripped = lacking.__class__(**{**lacking.__dict__, "instruments": tuple(
        instrument for instrument in lacking.instruments if instrument.name != "Drums")})
    edited = tmp_path / "edited.xml"
    write_descriptor(Database(database.name, database.root, (database.tracks[0], stripped, *database.tracks[2:]),
                              database.format), edited)
    names = ["vocals", "drums", "bass", "other"]
    with pytest.raises(MissingStemError, match=f"Track '{lacking.name}' of MyDSD has no 'Drums' instrument, which "
                                               "the source 'drums' needs.*skip_missing_files"):
        load_partitions([str(edited)], str(tmp_path / "cache"), source_names=names)
    with caplog.at_level(logging.WARNING):
        partitions = load_partitions([str(edited)], str(tmp_path / "cache"), source_names=names,
                                     skip_missing_files=True)
    assert len(partitions.train_sup) == 3 and "no 'Drums' instrument" in caplog.text
