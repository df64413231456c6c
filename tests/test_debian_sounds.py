"""The weak-label development set from Debian packages (Datasets/weak_label/debian_sounds.py),
built from a fixture folder that mimics the unpacked packages; no network."""
import csv
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from Datasets.weak_label import debian_sounds, load_clips, prepare
from Datasets.weak_label.debian_sounds import main

ISSUE_PACKAGES = {"hedgewars-data", "supertux-data", "frozen-bubble-data", "neverball-data", "pingus-data",
                  "hydrogen-drumkits"}  # issue 16: "do not add any other package's recordings"
KITS = "hydrogen-drumkits/usr/share/hydrogen/data/drumkits"
VOICES = "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
EVENTS = {  # class -> fixture files the table must pick, from three kits or voices each
    "kick": [f"{KITS}/ForzeeStereo/Kick-0.wav", f"{KITS}/BJA_Pacific/BD_01.aiff",
             f"{KITS}/The Black Pearl 1.0/PearlKick-Soft.wav"],
    "snare": [f"{KITS}/ForzeeStereo/Snare-0.wav", f"{KITS}/ForzeeStereo/SnareOff-1.wav",
              f"{KITS}/Millo_MultiLayered3/sd_01.flac", f"{KITS}/VariBreaks/VP Snare 1.flac"],
    "hihat_closed": [f"{KITS}/ForzeeStereo/HiHatClosed-0.wav", f"{KITS}/HardElectro1/Hard_CHH_01.flac",
                     f"{KITS}/rumpf_kit_z01_h2/beats_09-10.flac"],
    "crash": [f"{KITS}/ForzeeStereo/Crash18-0.wav", f"{KITS}/Millo_MultiLayered2/crash_01.flac",
              f"{KITS}/Audiophob/124101__connersaw8__crash.wav"],
    "ouch": [f"{VOICES}/Pirate/Ow1.ogg", f"{VOICES}/Robot/Ooff2.ogg", f"{VOICES}/Surfer/Ouch.ogg"],
    "laugh": [f"{VOICES}/Pirate/Laugh.ogg", f"{VOICES}/Robot/Laugh.ogg", f"{VOICES}/Surfer/Laugh.ogg"],
}
REPEAT = (f"{VOICES}/Pirate/Ow1.ogg", f"{VOICES}/Default/Ow1.ogg")  # one take in two voices: kept once, as Default's
BACKGROUNDS = ["hedgewars-data/usr/share/games/hedgewars/Data/Music/Nature.ogg",
               "supertux-data/usr/share/games/supertux2/music/forest/forest_theme.ogg",
               "supertux-data/usr/share/games/supertux2/sounds/rain.wav"]
NOT_IN_TABLES = [f"{KITS}/ForzeeStereo/SnareRim-0.wav", f"{VOICES}/Pirate/Hello.ogg",
                 "hedgewars-data/usr/share/games/hedgewars/Data/Music/Rock.ogg"]
SILENCE_SECONDS, BURST_SECONDS = (0.1, 0.3), 0.15  # before and after each event's sound


def _write(path, signal, rate):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(str(path), signal, rate)  # the format (wav, aiff, flac, ogg) from the extension


def _event(seed, rate, channels):
    """A decaying noise burst between stretches of silence."""
    burst = np.random.default_rng(seed).uniform(-0.5, 0.5, int(BURST_SECONDS * rate))
    burst *= np.exp(-np.arange(len(burst)) / (0.03 * rate))
    signal = np.concatenate([np.zeros(int(SILENCE_SECONDS[0] * rate)), burst, np.zeros(int(SILENCE_SECONDS[1] * rate))])
    return np.repeat(signal[:, None], channels, axis=1)


@pytest.fixture
def packages_dir(tmp_path):
    """hydrogen-drumkits, hedgewars-data and supertux-data unpacked, with a few short files each."""
    root = tmp_path / "packages"
    for number, relative in enumerate([path for paths in EVENTS.values() for path in paths] + NOT_IN_TABLES[:2]):
        rate = 22050 if relative.endswith(".ogg") else 16000
        _write(root / relative, _event(number, rate, 2 if "Forzee" in relative else 1), rate)
    os.makedirs(os.path.dirname(root / REPEAT[1]))
    shutil.copy(root / REPEAT[0], root / REPEAT[1])
    for number, relative in enumerate(BACKGROUNDS + NOT_IN_TABLES[2:]):
        _write(root / relative, np.random.default_rng(100 + number).uniform(-0.1, 0.1, (3 * 16000, 2)), 16000)
    return root


def _build(packages_dir, output, *options):
    main(["--packages-dir", str(packages_dir), "--output", str(output), "--min-files", "3", *options])


def _relative_files(folder):
    return sorted(os.path.relpath(os.path.join(parent, name), folder)
                  for parent, _, names in os.walk(folder) for name in names)


def test_the_tables_read_only_the_packages_the_issue_names():
    assert set(debian_sounds.packages()) <= ISSUE_PACKAGES
    assert len(debian_sounds.EVENT_CLASSES) >= 5


def test_the_class_table_puts_each_kit_or_voice_in_a_folder_of_mono_trimmed_files(packages_dir, tmp_path):
    data = tmp_path / "data"
    _build(packages_dir, data)
    assert _relative_files(data) == sorted([
        "events/kick/ForzeeStereo/Kick-0.wav", "events/kick/BJA_Pacific/BD_01.wav",
        "events/kick/The_Black_Pearl_1.0/PearlKick-Soft.wav",
        "events/snare/ForzeeStereo/Snare-0.wav", "events/snare/ForzeeStereo/SnareOff-1.wav",
        "events/snare/Millo_MultiLayered3/sd_01.wav", "events/snare/VariBreaks/VP_Snare_1.wav",
        "events/hihat_closed/ForzeeStereo/HiHatClosed-0.wav", "events/hihat_closed/HardElectro1/Hard_CHH_01.wav",
        "events/hihat_closed/rumpf_kit_z01_h2/beats_09-10.wav",
        "events/crash/ForzeeStereo/Crash18-0.wav", "events/crash/Millo_MultiLayered2/crash_01.wav",
        "events/crash/Audiophob/124101__connersaw8__crash.wav",
        "events/ouch/Default/Ow1.wav", "events/ouch/Robot/Ooff2.wav", "events/ouch/Surfer/Ouch.wav",
        "events/laugh/Pirate/Laugh.wav", "events/laugh/Robot/Laugh.wav", "events/laugh/Surfer/Laugh.wav",
        "backgrounds/Nature.wav", "backgrounds/forest_theme.wav", "backgrounds/rain.wav", "sources.csv"])
    with open(data / "sources.csv", newline="") as file:
        sources = {row["file"]: (row["package"], row["source"]) for row in csv.DictReader(file)}
    assert sources["events/kick/The_Black_Pearl_1.0/PearlKick-Soft.wav"] == (
        "hydrogen-drumkits", "usr/share/hydrogen/data/drumkits/The Black Pearl 1.0/PearlKick-Soft.wav")
    assert sources["backgrounds/rain.wav"] == ("supertux-data", "usr/share/games/supertux2/sounds/rain.wav")
    for relative, rate in (("events/kick/ForzeeStereo/Kick-0.wav", 16000), ("events/laugh/Robot/Laugh.wav", 22050)):
        info = soundfile.info(str(data / relative))
        assert info.channels == 1 and info.samplerate == rate
        assert BURST_SECONDS <= info.duration < BURST_SECONDS + sum(SILENCE_SECONDS) / 2  # most silence trimmed


def test_the_generic_recipe_keeps_each_kit_and_voice_in_one_split(packages_dir, tmp_path):
    data = tmp_path / "data"
    _build(packages_dir, data)
    folder = prepare("generic", str(tmp_path / "clips"), data_root=str(data), sample_rate=8000, clip_seconds=1.0,
                     events_per_clip=(1, 1), ebr_db=(0.0, 0.0), clips_per_split={"train": 18, "valid": 6, "test": 6})
    with open(os.path.join(folder, "events.csv"), newline="") as file:
        events = list(csv.DictReader(file))
    splits_of_group = {}
    for event in events:
        split = os.path.basename(event["filename"]).split("_")[0]
        splits_of_group.setdefault(os.path.dirname(event["source_file"]), set()).add(split)
    assert len(splits_of_group) == 18  # every kit or voice of every class was heard, each in one split
    assert all(len(splits) == 1 for splits in splits_of_group.values())
    assert len(load_clips(folder).classes) == 6


def test_too_few_recordings_name_the_class_and_the_package(packages_dir, tmp_path):
    os.remove(packages_dir / EVENTS["laugh"][2])
    with pytest.raises(ValueError, match=r"Class 'laugh' has 2 distinct recording\(s\) in package hedgewars-data "
                                         r"\(.*voices'.*--min-files"):
        _build(packages_dir, tmp_path / "data")
    with pytest.raises(ValueError, match=r"Class 'laugh' has recordings from 2 kit\(s\) or voice\(s\) in package "
                                         r"hedgewars-data.*at least 3"):
        main(["--packages-dir", str(packages_dir), "--output", str(tmp_path / "data"), "--min-files", "2"])
    assert os.listdir(tmp_path) == ["packages"]  # nothing half-written left behind


def test_a_missing_package_root_is_named(packages_dir, tmp_path):
    shutil.rmtree(packages_dir / "supertux-data")
    with pytest.raises(FileNotFoundError, match=r"Package 'supertux-data' is not unpacked in .*packages'.*"
                                                r"dpkg -x supertux-data_\*\.deb"):
        _build(packages_dir, tmp_path / "data")


def test_a_non_empty_output_is_replaced_only_with_overwrite(packages_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match=r"'.*data' is not empty.*--overwrite"):
        _build(packages_dir, data)
    assert _relative_files(data) == ["mine.txt"]
    _build(packages_dir, data, "--overwrite")
    assert "mine.txt" not in _relative_files(data) and "backgrounds/rain.wav" in _relative_files(data)
    assert sorted(os.listdir(tmp_path)) == ["data", "packages"]


def _fake_apt_get(tmp_path, monkeypatch, script):
    """Puts an `apt-get` running `script` first on PATH."""
    fake = tmp_path / "bin" / "apt-get"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")


def test_a_failed_download_names_the_package_and_what_to_do(tmp_path, monkeypatch):
    _fake_apt_get(tmp_path, monkeypatch, "echo \"E: Failed to fetch: Temporary failure resolving 'deb.debian.org'\" >&2"
                                         "\nexit 100\n")
    with pytest.raises(RuntimeError, match=r"Package 'hedgewars-data': `apt-get download hedgewars-data` failed .*"
                                           r"exit status 100: E: Failed to fetch.*deb\.debian\.org.*--packages-dir"):
        main(["--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()
    assert os.listdir(tmp_path / "cache" / "debian" / "debs") == []  # no half-downloaded package kept


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build the fixture packages")
def test_packages_are_downloaded_and_unpacked_into_the_cache_once(packages_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for package in debian_sounds.packages():
        control = packages_dir / package / "DEBIAN"
        control.mkdir(mode=0o755)
        (control / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                          "Maintainer: Test <test@example.org>\nDescription: fixture\n")
        os.chmod(packages_dir / package, 0o755)
        subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(packages_dir / package),
                        str(mirror / f"{package}_1.0_all.deb")], check=True, capture_output=True)
    _fake_apt_get(tmp_path, monkeypatch, f'echo "$2" >> "{mirror}/calls"\ncp "{mirror}/$2"_*.deb .\n')
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path)  # a relative --cache-dir, as in the README
    main(["--cache-dir", "cache", "--output", "first", "--min-files", "3"])
    main(["--cache-dir", "cache", "--output", "second", "--min-files", "3"])
    assert (mirror / "calls").read_text().split() == debian_sounds.packages()  # the second run found them
    assert sorted(os.listdir(cache / "debian" / "root")) == debian_sounds.packages()
    assert _relative_files(tmp_path / "first") == _relative_files(tmp_path / "second")
    assert "events/kick/ForzeeStereo/Kick-0.wav" in _relative_files(tmp_path / "first")
