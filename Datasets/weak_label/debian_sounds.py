"""python -m Datasets.weak_label.debian_sounds --cache-dir CACHE --output DATA [--packages-dir DIR] [--min-files N]
    [--overwrite]

Builds a weak-label development set of real recordings, in the generic recipe's layout, from
Debian packages: drum hits of hydrogen-drumkits and hedgehog voices of hedgewars-data as event
classes (`EVENT_CLASSES`), quiet game music of hedgewars-data and supertux-data and a rain
recording as backgrounds (`BACKGROUNDS`). Nothing is installed: each package is fetched with
`apt-get download` and unpacked with `dpkg -x` into the cache.

    CACHE/debian/debs/<package>_<version>_all.deb
    CACHE/debian/root/<package>/usr/share/...
    DATA/events/<class>/<group>/<name>.wav   a group is a drum kit or a voice
    DATA/backgrounds/<name>.wav              one file per recording, whole
    DATA/sources.csv                         the package and path each file was made from

Files are mono at the recording's own rate (the recipe resamples), with the silence at their
ends trimmed: the recipe sets an event's level by its RMS over its own samples, which padding
would dilute. The generic recipe puts each group in one split, so a test event's kit or voice
and a test background's recording are never heard in training. A recording that two packages
or voices share (the same file twice) is kept once. Then mix clips, e.g. one event per 4 s clip
at 0 dB:

    python -m Datasets.weak_label generic OUT --data-root DATA --option events_per_clip=[1,1] \\
        --option ebr_db=[0,0] --option 'clips_per_split={"train": 240, "valid": 60, "test": 60}'
"""
from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

import librosa
import numpy as np

from Datasets import audio
from Datasets.weak_label.generic import BACKGROUNDS_FOLDER, EVENTS_FOLDER

logger = logging.getLogger(__name__)

SOURCES_FILE = "sources.csv"
TRIM_DB = 50  # silence at the ends: frames this far below the file's loudest frame
MIN_GROUPS = 3  # the recipe puts at least one group in each of train, valid and test
_EVENT_SUBTYPE = "PCM_24"  # some drum kits are 24-bit
_BACKGROUND_SUBTYPE = "PCM_16"  # the music is Vorbis, the rain 16-bit: more bits would only add size


@dataclass(frozen=True)
class Recordings:
    """The files of `package` that match `patterns`, globs relative to `folder` (a path inside
    the package). A match in a subfolder of `folder` belongs to that subfolder's group."""

    package: str
    folder: str
    patterns: tuple[str, ...]


_DRUMKITS = "usr/share/hydrogen/data/drumkits"  # one subfolder per kit: the kits are the groups
_VOICES = "usr/share/games/hedgewars/Data/Sounds/voices"  # one subfolder per voice: the voices are the groups

# One kind of hit or call per class, each from several kits or voices. Drum patterns follow each
# kit's drumkit.xml (rumpf_kit's files are numbered, so they are named one by one); the Ow, Ooff
# and Ouch yelps are one class, the laughs another.
EVENT_CLASSES = {
    "kick": Recordings("hydrogen-drumkits", _DRUMKITS, (
        "BJA_Pacific/BD_*.aiff", "ColomboAcousticDrumkit/bassdrum-*.flac", "ElectricEmpireKit/EE_Kick_*.flac",
        "ForzeeStereo/Kick-*.wav", "HardElectro1/HardHse_K_*.flac", "HardElectro1/PowR_BD_*.flac",
        "Millo-Drums_v.1/bd*.flac", "Millo_MultiLayered2/bd_*.flac", "Millo_MultiLayered3/bd_*.flac",
        "The Black Pearl 1.0/PearlKick-*.wav", "VariBreaks/VP Kick *.flac", "rumpf_kit_z01_h2/beats_06-38.flac",
        "rumpf_kit_z01_h2/beats_06-46.flac", "rumpf_kit_z01_h2/beats_07-18.flac", "rumpf_kit_z01_h2/beats_07-20.flac")),
    "snare": Recordings("hydrogen-drumkits", _DRUMKITS, (
        "BJA_Pacific/SN_*.aiff", "BJA_Pacific/SN4_*.aiff", "ColomboAcousticDrumkit/snare-opaque-*normal[-_]shot*.flac",
        "ElectricEmpireKit/EE_Snare_*.flac", "ForzeeStereo/Snare-*.wav", "ForzeeStereo/SnareOff-*.wav",
        "HardElectro1/PowR_SN_*.flac", "Millo-Drums_v.1/snare*.flac", "Millo_MultiLayered2/jsnare_*.flac",
        "Millo_MultiLayered2/rsnare_*.flac", "Millo_MultiLayered3/sd_*.flac", "The Black Pearl 1.0/PearlSnare-*.wav",
        "VariBreaks/VP Snare *.flac", "rumpf_kit_z01_h2/beats_01-21.flac", "rumpf_kit_z01_h2/beats_06-25.flac")),
    "hihat_closed": Recordings("hydrogen-drumkits", _DRUMKITS, (
        "Audiophob/116973__cbeeching__hat-light.wav", "BJA_Pacific/HH_*.aiff",
        "ColomboAcousticDrumkit/hihat-closed-*.flac", "ElectricEmpireKit/EE_Hat_Cl_*.flac",
        "ForzeeStereo/HiHatClosed-*.wav", "HardElectro1/CHH_1.flac", "HardElectro1/FX_Chh_01.flac",
        "HardElectro1/Hard_CHH_*.flac", "Millo-Drums_v.1/closehihat*.flac", "Millo_MultiLayered2/hhclosed_*.flac",
        "Millo_MultiLayered3/hh_0*.flac", "The Black Pearl 1.0/SabianHatClosed-*.wav", "VariBreaks/VP Hat * Cl.flac",
        "rumpf_kit_z01_h2/beats_09-10.flac")),
    "crash": Recordings("hydrogen-drumkits", _DRUMKITS, (
        "Audiophob/124101__connersaw8__crash.wav", "BJA_Pacific/CB_*.aiff", "BJA_Pacific/CB2_*.aiff",
        "ColomboAcousticDrumkit/crash*__crash*.flac", "ForzeeStereo/Crash18-*.wav", "Millo-Drums_v.1/cra*.flac",
        "Millo_MultiLayered2/crash_*.flac", "Millo_MultiLayered3/cc_*.flac", "The Black Pearl 1.0/SabianCrash-*.wav",
        "rumpf_kit_z01_h2/beats_06-43.flac")),
    "ouch": Recordings("hedgewars-data", _VOICES, ("*/Ow[1-4].ogg", "*/Ooff[1-3].ogg", "*/Ouch.ogg")),
    "laugh": Recordings("hedgewars-data", _VOICES, ("*/Laugh.ogg",)),
}

# Backgrounds must hold no events of the classes, so the music is the packages' tracks with the
# least percussion (at most 12 % of the energy in librosa's percussive part of the first 90 s);
# rain is the ambience. Each file is one recording and goes to one split whole. frozen-bubble-data's
# three music tracks hold 16-24 % and pingus-data's music is tracker modules (.it), not recordings:
# neither package is read.
_SUPERTUX_MUSIC = "usr/share/games/supertux2/music"
BACKGROUNDS = (
    Recordings("hedgewars-data", "usr/share/games/hedgewars/Data/Music", (
        "EarthRise.ogg", "Freeway.ogg", "Fruit.ogg", "Jungle.ogg", "Nature.ogg", "Olympics.ogg", "hell.ogg",
        "oriental.ogg", "pirate.ogg", "snow.ogg")),
    Recordings("supertux-data", f"{_SUPERTUX_MUSIC}/antarctic", ("airship_remix.ogg", "jewels.ogg")),
    Recordings("supertux-data", f"{_SUPERTUX_MUSIC}/castle", ("darkforestkeep.ogg",)),
    Recordings("supertux-data", f"{_SUPERTUX_MUSIC}/forest", (
        "bright_thunders.ogg", "clavelian_march.ogg", "forest-cave.ogg", "forest_theme.ogg", "ghostforest.ogg",
        "ghostforest2.ogg", "wisphunt.ogg")),
    Recordings("supertux-data", f"{_SUPERTUX_MUSIC}/misc", ("credits.ogg", "halloween_1.ogg", "intro.ogg")),
    Recordings("supertux-data", f"{_SUPERTUX_MUSIC}/retro", ("ice_music.ogg",)),
    Recordings("supertux-data", "usr/share/games/supertux2/sounds", ("rain.wav",)),
)


def packages() -> list[str]:
    """The packages the tables read, sorted."""
    return sorted({recordings.package for recordings in (*EVENT_CLASSES.values(), *BACKGROUNDS)})


# ----------------------------------------------------------------------------------------------
# Packages


def _run(command: list[str], folder: str, package: str, advice: str) -> None:
    """Runs `command` in `folder`; an error naming the package, the command and its output otherwise."""
    try:
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise RuntimeError(f"Package '{package}': cannot run `{command[0]}` ({error}); {advice}") from error
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"Package '{package}': `{' '.join(command)}` failed in '{folder}' (exit status "
                           f"{result.returncode}: {' / '.join(output)}); {advice}")


_FETCH_ADVICE = ("check the network and the apt sources (`apt-get update`), or unpack the packages yourself "
                 "(`dpkg -x <package>.deb DIR/<package>`) and pass --packages-dir DIR.")


def _download(package: str, debs_folder: str) -> str:
    """The package's .deb in `debs_folder`, downloaded unless it is there."""
    found = sorted(glob.glob(os.path.join(glob.escape(debs_folder), f"{glob.escape(package)}_*.deb")))
    if len(found) > 1:
        raise ValueError(f"Package '{package}': several .deb files in '{debs_folder}' ({', '.join(found)}); "
                         "remove all but one.")
    if found:
        return found[0]
    os.makedirs(debs_folder, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{package}.partial-", dir=debs_folder)  # no half-downloaded .deb is reused
    try:
        _run(["apt-get", "download", package], partial, package, _FETCH_ADVICE)
        downloaded = [name for name in os.listdir(partial) if name.endswith(".deb")]
        if len(downloaded) != 1:
            raise RuntimeError(f"Package '{package}': `apt-get download {package}` left {len(downloaded)} .deb files "
                               f"instead of one; {_FETCH_ADVICE}")
        os.replace(os.path.join(partial, downloaded[0]), os.path.join(debs_folder, downloaded[0]))
    finally:
        shutil.rmtree(partial)
    logger.info("Downloaded %s", downloaded[0])
    return os.path.join(debs_folder, downloaded[0])


def _unpack(package: str, deb: str, root: str) -> None:
    """`dpkg -x` of `deb` into `root`, unless it is there (an interrupted unpacking is redone)."""
    if os.path.isdir(root):
        return
    partial = f"{root}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    _run(["dpkg", "-x", deb, partial], os.path.dirname(root), package,
         f"remove '{deb}' to download it again, or unpack it yourself and pass --packages-dir.")
    os.replace(partial, root)
    logger.info("Unpacked %s into %s", os.path.basename(deb), root)


def fetch(names: list[str], cache_dir: str) -> dict[str, str]:
    """Each package's unpacked root in `cache_dir`/debian/root, downloading and unpacking what is missing."""
    cache_dir = os.path.abspath(cache_dir)  # the commands run in folders of their own
    roots = {}
    for package in names:
        deb = _download(package, os.path.join(cache_dir, "debian", "debs"))
        roots[package] = os.path.join(cache_dir, "debian", "root", package)
        _unpack(package, deb, roots[package])
    return roots


def unpacked(names: list[str], packages_dir: str) -> dict[str, str]:
    """Each package's root in `packages_dir`, which must be there."""
    roots = {package: os.path.join(packages_dir, package) for package in names}
    for package, root in roots.items():
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Package '{package}' is not unpacked in '{packages_dir}': '{root}' does not "
                                    f"exist. Unpack it there (`apt-get download {package}`, then "
                                    f"`dpkg -x {package}_*.deb {root}`), or leave out --packages-dir to fetch it.")
    return roots


# ----------------------------------------------------------------------------------------------
# Recordings


@dataclass(frozen=True)
class Found:
    package: str
    source: str  # path inside the package
    group: str  # subfolder of the table's folder, "" for a file directly in it
    path: str  # on disk


def find(recordings: Recordings, root: str) -> list[Found]:
    """The files matching the table entry in the unpacked package `root`, sorted; a pattern that
    matches nothing is logged (the package's layout may have changed)."""
    folder = os.path.join(root, recordings.folder)
    matches = set()
    for pattern in recordings.patterns:
        files = [match for match in glob.glob(pattern, root_dir=folder) if os.path.isfile(os.path.join(folder, match))]
        if not files:
            logger.warning("Package %s: no file matches '%s' in '%s'.", recordings.package, pattern, folder)
        matches.update(files)
    return [Found(recordings.package, os.path.join(recordings.folder, match), os.path.dirname(match),
                  os.path.join(folder, match)) for match in sorted(matches)]


def _safe(name: str) -> str:
    """`name` as a file name without spaces or characters a shell or CSV reader would trip on."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


class _Writer:
    """Writes trimmed mono copies into `folder`, once per distinct recording, and lists them."""

    def __init__(self, folder: str):
        self.folder = folder
        self.rows: list[list[str]] = []
        self._written: dict[str, str] = {}  # output path -> source, to catch two sources on one name
        self._digests: dict[str, tuple[str, str]] = {}  # audio digest -> (what, source) first written

    def write(self, found: Found, relative_folder: str, what: str, subtype: str) -> float | None:
        """Writes `found` under `relative_folder`, its group as a subfolder; returns its seconds,
        or None (with the reason logged) for a silent file or a copy of one already written."""
        signal, rate = _read_trimmed(found.path)
        if signal is None:
            logger.warning("%s: '%s' of %s is silent; left out.", what, found.source, found.package)
            return None
        digest = hashlib.sha256(signal.tobytes() + str(rate).encode()).hexdigest()
        if digest in self._digests:
            first_what, first_source = self._digests[digest]
            if first_what != what:
                raise ValueError(f"'{found.source}' of {found.package} ({what}) is the same recording as "
                                 f"'{first_source}' ({first_what}): fix the patterns in "
                                 "Datasets/weak_label/debian_sounds.py so that it belongs to one of them.")
            logger.debug("%s: '%s' of %s repeats '%s'; kept once.", what, found.source, found.package, first_source)
            return None
        self._digests[digest] = (what, found.source)
        relative = os.path.join(relative_folder, _safe(found.group),
                                _safe(os.path.splitext(os.path.basename(found.path))[0]) + ".wav")
        if relative in self._written:
            raise ValueError(f"'{found.source}' and '{self._written[relative]}' would both be written to '{relative}': "
                             "fix the patterns in Datasets/weak_label/debian_sounds.py.")
        self._written[relative] = found.source
        audio.write(os.path.join(self.folder, relative), signal, rate, subtype=subtype)
        self.rows.append([relative, found.package, found.source])
        return len(signal) / rate

    def finish(self) -> None:
        with open(os.path.join(self.folder, SOURCES_FILE), "w", newline="", encoding="utf-8") as file:
            table = csv.writer(file)
            table.writerow(["file", "package", "source"])
            table.writerows(sorted(self.rows))


def _read_trimmed(path: str) -> tuple[np.ndarray | None, int]:
    """The file's mono downmix without the silence at its ends, and its rate; None if it is silent."""
    rate = audio.info(path).sample_rate
    signal = audio.read(path, mono=True)
    if not signal.any():
        return None, rate
    trimmed, _ = librosa.effects.trim(signal, top_db=TRIM_DB)
    return trimmed, rate


def _write_class(writer: _Writer, name: str, recordings: Recordings, root: str, min_files: int) -> None:
    seconds = {}
    matches = find(recordings, root)
    for found in matches:
        duration = writer.write(found, os.path.join(EVENTS_FOLDER, name), f"Class '{name}'", _EVENT_SUBTYPE)
        if duration is not None:
            seconds[found] = duration
    groups = {found.group for found in seconds}
    where = (f"package {recordings.package} ('{os.path.join(root, recordings.folder)}', patterns "
             f"{', '.join(recordings.patterns)})")
    if len(seconds) < min_files:
        raise ValueError(f"Class '{name}' has {len(seconds)} distinct recording(s) in {where}; at least {min_files} "
                         "are needed (--min-files). Check the package's layout with `dpkg -c` and fix the patterns "
                         "in Datasets/weak_label/debian_sounds.py.")
    if len(groups) < MIN_GROUPS:
        raise ValueError(f"Class '{name}' has recordings from {len(groups)} kit(s) or voice(s) in {where}; at least "
                         f"{MIN_GROUPS} are needed so that train, valid and test each get their own.")
    logger.info("%-13s %3d distinct recordings of %3d files, %2d groups, %6.1f s (median %.2f s) from %s", name,
                len(seconds), len(matches), len(groups), sum(seconds.values()), np.median(list(seconds.values())),
                recordings.package)


def _write_backgrounds(writer: _Writer, roots: dict[str, str]) -> None:
    seconds = {}
    for recordings in BACKGROUNDS:
        for found in find(recordings, roots[recordings.package]):
            duration = writer.write(found, BACKGROUNDS_FOLDER, "Backgrounds", _BACKGROUND_SUBTYPE)
            if duration is not None:
                seconds[found] = duration
    if len(seconds) < MIN_GROUPS:
        raise ValueError(f"Only {len(seconds)} background recording(s) found in {', '.join(sorted(roots))}; at "
                         f"least {MIN_GROUPS} are needed. Check BACKGROUNDS in Datasets/weak_label/debian_sounds.py.")
    logger.info("%-13s %3d recordings, %.1f min (%.0f to %.0f s each) from %s", "backgrounds", len(seconds),
                sum(seconds.values()) / 60, min(seconds.values()), max(seconds.values()),
                ", ".join(sorted({found.package for found in seconds})))


# ----------------------------------------------------------------------------------------------
# The output folder


def _check_output(output: str, overwrite: bool) -> None:
    if os.path.exists(output) and not os.path.isdir(output):
        raise NotADirectoryError(f"--output '{output}' is a file, not a folder: choose another --output.")
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise FileExistsError(f"--output '{output}' is not empty, and the builder does not overwrite a folder: "
                              "choose another --output, or pass --overwrite to replace it.")


def build(output: str, roots: dict[str, str], min_files: int = 10, overwrite: bool = False) -> None:
    """Writes the development set into `output` from the unpacked packages `roots` (package ->
    folder): a temporary folder beside it first, renamed to `output` once complete."""
    output = os.path.abspath(output)
    _check_output(output, overwrite)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        writer = _Writer(partial)
        for name, recordings in EVENT_CLASSES.items():
            _write_class(writer, name, recordings, roots[recordings.package], min_files)
        _write_backgrounds(writer, roots)
        writer.finish()
        _check_output(output, overwrite)
        if os.path.isdir(output):
            replaced = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.replaced-", dir=parent)
            os.replace(output, replaced)
            os.replace(partial, output)
            shutil.rmtree(replaced)
        else:
            os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Datasets.weak_label.debian_sounds",
                                     description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", help="where the packages are downloaded and unpacked")
    parser.add_argument("--output", required=True, help="the folder to write (DATA; must be empty or new)")
    parser.add_argument("--packages-dir", help="use the packages unpacked here (<package>/usr/share/...) instead")
    parser.add_argument("--min-files", type=int, default=10, help="fewest distinct recordings of a class")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    arguments = parser.parse_args(argv)
    if not arguments.cache_dir and not arguments.packages_dir:
        parser.error("give --cache-dir (to fetch the packages) or --packages-dir (where they are unpacked)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    start = time.perf_counter()
    _check_output(os.path.abspath(arguments.output), arguments.overwrite)  # before any download
    names = packages()
    roots = (unpacked(names, arguments.packages_dir) if arguments.packages_dir
             else fetch(names, arguments.cache_dir))
    build(arguments.output, roots, arguments.min_files, arguments.overwrite)
    logger.info("Wrote %s in %.0f s. Mix clips with: python -m Datasets.weak_label generic OUT --data-root %s "
                "--option events_per_clip=[1,1] --option ebr_db=[0,0]", arguments.output, time.perf_counter() - start,
                arguments.output)


if __name__ == "__main__":
    main()
