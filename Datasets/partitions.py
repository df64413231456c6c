"""Training, validation and test partitions, and the `dataset.pkl` cache that holds them.

Partitions (the sources are those `source_names` names, see Datasets/conversions.py):
    train_sup    paired tracks (mixture and its sources) for the supervised loss
    train_unsup  independent lists, never paired: mixtures, and one list per source
    valid, test  paired tracks

Splits ("split" in the config):
    paper   tracks tagged Training (DSD100) are supervised; Test-tagged tracks go first half to
            validation, second half to test; each untagged data set (MedleyDB, CCMixter, iKala)
            is cut in thirds, in descriptor order: unpaired training / validation / test.
    by_tag  databaseSplit decides: Training, Validation, Test; untagged tracks are unpaired.

A user-written loader can replace all of this (`dataset_loader="my_module:my_function"`): it is
called without arguments and returns a `Partitions`, or (for source_names ["accompaniment",
"voice"]) the original project's dict {"train_sup": [(mix, acc, voice), ...], "train_unsup":
[mixes, accs, voices], "train_valid": [...], "train_test": [...]} of `Sample.Sample` objects.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from Datasets.atomic import atomic_open
from Datasets.conversions import PAPER_SOURCES, SeparationTrack, TrackAudioError, check_format, convert_track
from Datasets.descriptors import Database, Track, parse_descriptor
from Sample import Sample

log = logging.getLogger(__name__)

SPLITS = ("paper", "by_tag")
_CACHE_VERSION = 2  # 2: tracks hold {source name: audio}


class DatasetConfigError(ValueError):
    """The data set settings point at something that does not exist or cannot be used."""


@dataclass
class UnpairedSources:
    """Unpaired training audio: mixtures, and per source its own list of solo recordings."""

    mixtures: list[Sample] = field(default_factory=list)
    sources: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, track: SeparationTrack) -> None:
        # Silent sources are left out: a critic must never learn that silence is a real voice.
        self.mixtures.append(track.mixture)
        for name, sample in track.sources.items():
            self.sources.setdefault(name, [])
            if not sample.is_silent:
                self.sources[name].append(sample)

    def __len__(self) -> int:
        return len(self.mixtures)


@dataclass
class Partitions:
    train_sup: list[SeparationTrack]
    train_unsup: UnpairedSources
    valid: list[SeparationTrack]
    test: list[SeparationTrack]

    def with_paired(self, count: int) -> Partitions:
        """Only the first `count` supervised training songs paired; the others join the unpaired
        songs (their mixture, and each source on its own), so that paired and unpaired audio
        never come from the same song: the scarce-pairs setting of the paper's claim."""
        if not 1 <= count <= len(self.train_sup):
            raise DatasetConfigError(f"Config key `paired_tracks`: {count} paired songs asked for, but the training "
                                     f"split has {len(self.train_sup)} (and at least 1 is needed).")
        unpaired = UnpairedSources(list(self.train_unsup.mixtures),
                                   {name: list(samples) for name, samples in self.train_unsup.sources.items()})
        for track in self.train_sup[count:]:
            unpaired.add(track)
        return Partitions(self.train_sup[:count], unpaired, self.valid, self.test)

    def summary(self) -> str:
        def describe(tracks: list[SeparationTrack]) -> str:
            hours = sum(track.mixture.duration for track in tracks) / 3600
            per_database = ", ".join(f"{name} {count}" for name, count in Counter(t.database for t in tracks).items())
            return f"{len(tracks):4d} tracks, {hours:6.2f} h ({per_database or 'none'})"

        unpaired = self.train_unsup
        solo = ", ".join(f"{len(samples)} {name}" for name, samples in unpaired.sources.items())
        return "\n".join([
            f"train_sup    {describe(self.train_sup)}",
            f"train_unsup  {len(unpaired.mixtures):4d} mixtures{', ' + solo if solo else ''}",
            f"valid        {describe(self.valid)}",
            f"test         {describe(self.test)}"])


def split_tracks(databases: list[Database], split: str) -> dict[str, list[tuple[Database, Track]]]:
    """Assigns each described track to a partition, without touching audio."""
    if split not in SPLITS:
        raise DatasetConfigError(f"Unknown split '{split}' (config key `split`); choose one of {', '.join(SPLITS)}.")
    assignment = {"train_sup": [], "train_unsup": [], "valid": [], "test": []}
    for database in databases:
        tracks = [(database, track) for track in database.tracks]
        tagged = [entry for entry in tracks if entry[1].split]
        if split == "by_tag":
            tags = {"training": "train_sup", "validation": "valid", "valid": "valid", "test": "test"}
            for entry in tracks:
                assignment[tags.get((entry[1].split or "").lower(), "train_unsup")].append(entry)
        elif tagged:
            test = [entry for entry in tagged if entry[1].split.lower() == "test"]
            assignment["train_sup"] += [entry for entry in tagged if entry[1].split.lower() == "training"]
            assignment["valid"] += test[:len(test) // 2]
            assignment["test"] += test[len(test) // 2:]
        else:
            unpaired, valid, test = np.array_split(np.arange(len(tracks)), 3)
            for name, indices in (("train_unsup", unpaired), ("valid", valid), ("test", test)):
                assignment[name] += [tracks[index] for index in indices]
    return assignment


def resolve_root(database: Database, dataset_root: str | None, dataset_roots: dict[str, str]) -> Database:
    """Root from `dataset_roots[name]`, else `dataset_root/<name>`, else the descriptor's own path."""
    if database.name in dataset_roots:
        root, origin = dataset_roots[database.name], f"dataset_roots.{database.name}"
    elif dataset_root:
        root, origin = os.path.join(dataset_root, database.name), "dataset_root"
    else:
        root, origin = database.root, f"databaseFolderPath in {database.source_file}"
    if not os.path.isdir(root):
        raise DatasetConfigError(
            f"Root folder '{root}' of data set {database.name} (from {origin}) does not exist. Point it at "
            f"your copy with `with dataset_roots.{database.name}=/path/to/{database.name}`, or with "
            f"`dataset_root=/parent` for a folder holding {database.name}/.")
    return database.with_root(os.path.abspath(root))


def build_partitions(databases: list[Database], split: str, derived_dir: str,
                     skip_missing_files: bool = False,
                     source_names: Sequence[str] = PAPER_SOURCES) -> Partitions:
    """Converts every assigned track, writing derived audio to `derived_dir`."""
    for database in databases:
        check_format(database, source_names)
    partitions = Partitions([], UnpairedSources(sources={name: [] for name in source_names}), [], [])
    for name, entries in split_tracks(databases, split).items():
        for database, track in entries:
            try:
                separation_track = convert_track(database, track, derived_dir, source_names)
            except TrackAudioError as error:
                if not skip_missing_files:
                    raise type(error)(f"{error} Fix the descriptor, the root folder or the file, or set "
                                      "skip_missing_files=True to leave such tracks out.") from error
                log.warning("Skipping: %s", error)
                continue
            if name == "train_unsup":
                partitions.train_unsup.add(separation_track)
            else:
                getattr(partitions, name).append(separation_track)
    return partitions


def _file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _cache_key(descriptor_paths: list[str], dataset_root, dataset_roots, split, skip_missing_files,
               source_names) -> dict:
    return {"version": _CACHE_VERSION, "source_names": list(source_names),
            "descriptors": {os.path.abspath(path): _file_digest(path) for path in descriptor_paths},
            "dataset_root": dataset_root and os.path.abspath(dataset_root),
            "dataset_roots": {name: os.path.abspath(root) for name, root in sorted(dataset_roots.items())},
            "split": split, "skip_missing_files": skip_missing_files}


def _stale_reason(stored: dict, current: dict) -> str | None:
    for descriptor, digest in current["descriptors"].items():
        if stored["descriptors"].get(descriptor) != digest:
            return f"descriptor {descriptor} is new or changed"
    changed = [key for key in current if stored.get(key) != current[key]]
    return f"setting(s) changed: {', '.join(changed)}" if changed else None


def _all_samples(partitions: Partitions):
    for track in partitions.train_sup + partitions.valid + partitions.test:
        yield from (track.mixture, *track.sources.values())
    yield from partitions.train_unsup.mixtures
    for samples in partitions.train_unsup.sources.values():
        yield from samples


def _read_cache(cache_file: str, key: dict) -> tuple[Partitions | None, str]:
    if not os.path.exists(cache_file):
        return None, "no cache yet"
    try:
        with open(cache_file, "rb") as handle:
            stored = pickle.load(handle)
    except Exception as error:  # a cache from another version of the code is just rebuilt
        return None, f"cache unreadable ({error})"
    reason = _stale_reason(stored["key"], key)
    if reason:
        return None, reason
    missing = [sample.path for sample in _all_samples(stored["partitions"])
               if not sample.is_silent and not os.path.exists(sample.path)]
    if missing:
        return None, f"{len(missing)} audio file(s) it names are gone, e.g. {missing[0]}"
    return stored["partitions"], ""


def _write_cache(cache_file: str, key: dict, partitions: Partitions) -> None:
    with atomic_open(cache_file) as output:
        pickle.dump({"key": key, "partitions": partitions}, output)


def load_partitions(descriptor_paths: list[str], cache_dir: str, dataset_root: str | None = None,
                    dataset_roots: dict[str, str] | None = None, split: str = "paper",
                    skip_missing_files: bool = False,
                    source_names: Sequence[str] = PAPER_SOURCES) -> Partitions:
    """Partitions from `<cache_dir>/dataset.pkl` when it matches the descriptors' content and the
    settings; otherwise builds them (writing derived audio to `<cache_dir>/derived`) and caches."""
    dataset_roots = dict(dataset_roots or {})
    for path in descriptor_paths:
        if not os.path.isfile(path):
            raise DatasetConfigError(f"Descriptor file '{path}' (config key `descriptors`) does not exist.")
    cache_file = os.path.join(cache_dir, "dataset.pkl")
    key = _cache_key(descriptor_paths, dataset_root, dataset_roots, split, skip_missing_files, source_names)
    partitions, reason = _read_cache(cache_file, key)
    if partitions is not None:
        return partitions
    log.info("Building %s: %s", cache_file, reason)
    databases = [resolve_root(parse_descriptor(path), dataset_root, dataset_roots) for path in descriptor_paths]
    partitions = build_partitions(databases, split, os.path.join(cache_dir, "derived"), skip_missing_files,
                                  source_names)
    _write_cache(cache_file, key, partitions)
    return partitions


def _as_track(triple, index: int, partition: str) -> SeparationTrack:
    mixture, accompaniment, voice = triple
    return SeparationTrack(f"{partition}[{index}]", "custom", mixture, {"accompaniment": accompaniment, "voice": voice})


def load_custom_partitions(loader: str, source_names: Sequence[str] = PAPER_SOURCES) -> Partitions:
    """Calls a user loader given as "module:function" (see the module docstring)."""
    module_name, _, function_name = loader.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise DatasetConfigError(f"Cannot import dataset_loader '{loader}' (expected 'module:function'): "
                                 f"{error}") from error
    result = function()
    if isinstance(result, Partitions):
        return result
    if tuple(source_names) != PAPER_SOURCES:
        raise DatasetConfigError(f"dataset_loader '{loader}' returned the original project's dict of (mixture, "
                                 f"accompaniment, voice) triples, but source_names is {list(source_names)}: return "
                                 "a Datasets.partitions.Partitions instead.")
    try:
        mixtures, accompaniments, voices = result["train_unsup"]
        unpaired = UnpairedSources([sample for sample in mixtures if not sample.is_silent],
                                   {"accompaniment": [sample for sample in accompaniments if not sample.is_silent],
                                    "voice": [sample for sample in voices if not sample.is_silent]})
        return Partitions(
            train_sup=[_as_track(triple, i, "train_sup") for i, triple in enumerate(result["train_sup"])],
            train_unsup=unpaired,
            valid=[_as_track(triple, i, "valid") for i, triple in enumerate(result["train_valid"])],
            test=[_as_track(triple, i, "test") for i, triple in enumerate(result["train_test"])])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetConfigError(f"dataset_loader '{loader}' returned an unexpected structure ({error}); "
                                 "see Datasets/partitions.py for the expected format.") from error
