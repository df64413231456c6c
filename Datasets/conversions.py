"""Turns a described track into what the separator trains on: a mixture and its named sources.

Sources are data: `source_names` (Training.py's config key) decides which stems a track must
supply, in that order. The stems are named after the descriptors' instrument names: `vocals`
(instrument `Voice`; the paper's name for it, `voice`, is accepted as well), `drums`, `bass`,
`other`, and `accompaniment`, which any format supplies as the mixture minus the other named
sources (for the paper's ["accompaniment", "voice"]: everything but the singing).

Each data set stores its audio differently (SPEC section 4):

| format | mixture | stems |
| --- | --- | --- |
| DSD100, MUSDB18HQ, CCMixter | the `Mix` file | one file per instrument entry (`Instrumental` is the accompaniment) |
| MedleyDB | sum of all stems (not the mastered MIX) | sum of each instrument name's stems, or silence |
| iKala | left + right | `accompaniment` left, `vocals` right |

Where a source needs audio that is not on disk (a difference, a sum of stems, one channel of a
file), it is computed once and written under the derived-audio cache folder, never beside the
user's data. Files are written atomically, so an existing derived file is complete and is reused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from Datasets import audio
from Datasets.descriptors import Database, Track
from Sample import Sample, SilentSample

log = logging.getLogger(__name__)

ACCOMPANIMENT = "accompaniment"
STEM_OF_INSTRUMENT = {"Voice": "vocals", "Drums": "drums", "Bass": "bass", "Other": "other",
                      "Instrumental": ACCOMPANIMENT}
INSTRUMENT_OF_STEM = {stem: instrument for instrument, stem in STEM_OF_INSTRUMENT.items()}
STEM_ALIASES = {"voice": "vocals"}  # the paper's name for the singing
PAPER_SOURCES = ("accompaniment", "voice")  # the default source_names


def stem_name(source_name: str) -> str:
    """The stem a configured source name stands for."""
    return STEM_ALIASES.get(source_name, source_name)


def check_source_names(source_names: Sequence[str]) -> None:
    """Rejects an empty list, duplicates (also through an alias) and names of no known stem."""
    if not source_names:
        raise ValueError("Config key `source_names` is empty: name the sources to separate, e.g. "
                         "['accompaniment', 'voice'] or ['vocals', 'drums', 'bass', 'other'].")
    stems = [stem_name(name) for name in source_names]
    duplicated = sorted({name for name, stem in zip(source_names, stems) if stems.count(stem) > 1})
    if duplicated:
        raise ValueError(f"Config key `source_names` names one stem twice: {duplicated} (voice and vocals are "
                         "the same stem).")
    known = {*STEM_OF_INSTRUMENT.values(), *STEM_ALIASES}
    unknown = [name for name in source_names if name not in known]
    if unknown:
        raise ValueError(f"Config key `source_names`: {unknown} name no stem; known stems: {sorted(known)}.")


class TrackAudioError(OSError):
    """A file named in a descriptor cannot be used: missing, empty, damaged or unreadable."""


class MissingAudioError(TrackAudioError, FileNotFoundError):
    """A file named in a descriptor is not on disk."""


class MissingStemError(TrackAudioError):
    """A track lacks a stem that `source_names` needs."""


@dataclass(frozen=True)
class SeparationTrack:
    """One song as the separator sees it: the mixture and {source name: audio}, in the
    configured order."""

    name: str
    database: str
    mixture: Sample
    sources: dict[str, Sample | SilentSample]

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self.sources)


class _Converter:
    """Resolves the files of one track and writes its derived audio."""

    def __init__(self, database: Database, track: Track, derived_dir: str):
        self.database, self.track = database, track
        folder = re.sub(r"[^\w.-]+", "_", track.name).strip("_")[:80]
        key = hashlib.sha1(f"{database.root}|{track.name}".encode()).hexdigest()[:10]
        self.derived_folder = os.path.join(derived_dir, database.name, f"{folder}-{key}")

    def instrument_files(self, instrument_name: str) -> list[Sample]:
        return [self.existing(instrument.relative_path) for instrument in self.track.instruments
                if instrument.name == instrument_name]

    def sample(self, instrument_name: str) -> Sample:
        files = self.instrument_files(instrument_name)
        if not files:
            raise MissingStemError(f"Track '{self.track.name}' of {self.database.name} has no '{instrument_name}' "
                                   f"instrument, which the {self.database.format} format needs.")
        return files[0]

    def existing(self, relative_path: str) -> Sample:
        path = os.path.join(self.database.root, relative_path)
        if not os.path.isfile(path):
            raise MissingAudioError(f"Track '{self.track.name}' of {self.database.name}: audio file '{path}' "
                                    "is missing.")
        return audio.info(path)

    def derived(self, name: str, compute: Callable) -> Sample:
        """The cached file `name`, computed by `compute() -> (audio, rate)` on first use."""
        path = os.path.join(self.derived_folder, f"{name}.wav")
        if not os.path.exists(path):
            signal, rate = compute()
            audio.write(path, signal, rate)
        return audio.info(path)

    def missing_stem(self, stem: str) -> MissingStemError:
        return MissingStemError(f"Track '{self.track.name}' of {self.database.name} has no "
                                f"'{INSTRUMENT_OF_STEM[stem]}' instrument, which the source '{stem}' needs.")


def _read_aligned(samples: list[Sample]) -> tuple[list[np.ndarray], int]:
    """Reads files at the highest of their rates, trimmed to a common length; differing channel
    counts are reduced to mono, so that stems of mixed formats can still be summed."""
    rate = max(sample.sample_rate for sample in samples)
    stereo_compatible = len({sample.channels for sample in samples}) == 1
    signals = [audio.read(sample, sample_rate=rate, mono=not stereo_compatible) for sample in samples]
    signals = [signal if signal.ndim == 2 else signal[:, None] for signal in signals]
    length = min(len(signal) for signal in signals)
    if any(len(signal) != length for signal in signals):
        log.warning("Files of one track differ in length; trimming to %.2f s: %s", length / rate,
                    ", ".join(sample.path for sample in samples))
    return [signal[:length] for signal in signals], rate


def _sum_of(samples: list[Sample]):
    def compute():
        signals, rate = _read_aligned(samples)
        return np.sum(signals, axis=0), rate
    return compute


def _difference_of(minuend: Sample, subtrahends: list[Sample]):
    def compute():
        (first, *others), rate = _read_aligned([minuend, *subtrahends])
        return first - np.sum(others, axis=0), rate
    return compute


def _sum_or_silence(converter: _Converter, name: str, samples: list[Sample], reference: Sample):
    """A single file as it is, several summed once each, none as silence."""
    if not samples:
        return SilentSample(reference.duration, reference.sample_rate, reference.channels)
    if len(samples) == 1:
        return samples[0]
    return converter.derived(name, _sum_of(samples))


def _accompaniment(converter: _Converter, mixture: Sample, others: dict[str, Sample | SilentSample]):
    """The mixture minus the other named sources."""
    subtrahends = [sample for sample in others.values() if not sample.is_silent]
    if not subtrahends:
        return mixture
    return converter.derived("mixture_minus_" + "+".join(sorted(others)), _difference_of(mixture, subtrahends))


def _file_per_stem(converter: _Converter, stems: list[str]):
    """DSD100, MUSDB18-HQ, CCMixter: the Mix file and one file per instrument entry."""
    mixture = converter.sample("Mix")
    others = [stem for stem in stems if stem != ACCOMPANIMENT]
    sources = {}
    for stem in others:
        files = converter.instrument_files(INSTRUMENT_OF_STEM[stem])
        if not files:
            raise converter.missing_stem(stem)
        sources[stem] = files[0]
    if ACCOMPANIMENT in stems:
        # An Instrumental file is the mixture minus the vocals: the accompaniment when the
        # vocals are the only other source.
        instrumental = converter.instrument_files("Instrumental")
        sources[ACCOMPANIMENT] = (instrumental[0] if instrumental and others == ["vocals"]
                                  else _accompaniment(converter, mixture, sources))
    return mixture, {stem: sources[stem] for stem in stems}


def _medleydb(converter: _Converter, stems: list[str]):
    # The official MIX is not the sum of the stems (it is mastered), so the mixture is rebuilt
    # from the stems. Each stem is counted once (the original summed every voice stem thrice).
    instruments = [instrument for instrument in converter.track.instruments
                   if instrument.name not in ("Mix", "Instrumental")]
    if not instruments:
        raise MissingStemError(f"Track '{converter.track.name}' of {converter.database.name} has no stems.")
    files = {instrument.relative_path: converter.existing(instrument.relative_path) for instrument in instruments}
    reference = next(iter(files.values()))
    by_stem = {stem: [files[i.relative_path] for i in instruments if STEM_OF_INSTRUMENT.get(i.name) == stem]
               for stem in stems if stem != ACCOMPANIMENT}
    sources = {stem: _sum_or_silence(converter, stem, samples, reference) for stem, samples in by_stem.items()}
    if ACCOMPANIMENT in stems:
        rest = [files[i.relative_path] for i in instruments if STEM_OF_INSTRUMENT.get(i.name) not in by_stem]
        name = "rest_of_" + "+".join(sorted(by_stem)) if by_stem else "all_stems"
        sources[ACCOMPANIMENT] = _sum_or_silence(converter, name, rest, reference)
    present = list(files.values())
    mixture = present[0] if len(present) == 1 else converter.derived("mixture", _sum_of(present))
    return mixture, {stem: sources[stem] for stem in stems}


def _ikala(converter: _Converter, stems: list[str]):
    # iKala stores accompaniment in the left channel and voice in the right one.
    stereo = converter.sample("Mix")
    if stereo.channels != 2:
        raise ValueError(f"iKala track '{converter.track.name}': '{stereo.path}' has {stereo.channels} "
                         "channels; expected 2 (left accompaniment, right voice).")

    def channel(index):
        return lambda: (audio.read(stereo)[:, index], stereo.sample_rate)

    mixture = converter.derived("mixture", lambda: (audio.read(stereo).sum(axis=1), stereo.sample_rate))
    channels = {ACCOMPANIMENT: ("accompaniment", 0), "vocals": ("voice", 1)}  # stem: (derived file, channel)
    return mixture, {stem: converter.derived(channels[stem][0], channel(channels[stem][1])) for stem in stems}


CONVERTERS = {"DSD100": _file_per_stem, "MUSDB18HQ": _file_per_stem, "CCMixter": _file_per_stem,
              "MedleyDB": _medleydb, "iKala": _ikala}


def stems_of(database: Database) -> list[str]:
    """The stems a data set can supply: those of its tracks' instrument entries (iKala: its two
    channels), and the accompaniment."""
    if database.format == "iKala":
        return ["vocals", ACCOMPANIMENT]
    named = {STEM_OF_INSTRUMENT[instrument.name] for track in database.tracks for instrument in track.instruments
             if instrument.name in STEM_OF_INSTRUMENT}
    return [stem for stem in INSTRUMENT_OF_STEM if stem in named or stem == ACCOMPANIMENT]


def check_format(database: Database, source_names: Sequence[str]) -> None:
    """Rejects a data set that cannot supply the named sources, before any audio is read."""
    if database.format not in CONVERTERS:
        raise ValueError(f"Descriptor of {database.name} ({database.source_file}) has format "
                         f"'{database.format}'; known formats: {', '.join(CONVERTERS)}. Set <databaseFormat>.")
    supplied = stems_of(database)
    lacking = [name for name in source_names if stem_name(name) not in supplied]
    if lacking:
        raise ValueError(f"Data set {database.name} ({database.format} format, {database.source_file}) cannot "
                         f"supply the source(s) {lacking} that `source_names` asks for: its tracks have the stems "
                         f"{supplied}.")


def convert_track(database: Database, track: Track, derived_dir: str,
                  source_names: Sequence[str] = PAPER_SOURCES) -> SeparationTrack:
    """The mixture and the named sources of `track`, writing derived audio under `derived_dir`
    (`check_format` first)."""
    try:
        mixture, stems = CONVERTERS[database.format](_Converter(database, track, derived_dir),
                                                     [stem_name(name) for name in source_names])
    except audio.AudioFileError as error:
        raise TrackAudioError(f"Track '{track.name}' of {database.name}: {error}") from error
    return SeparationTrack(track.name, database.name, mixture,
                           {name: stems[stem_name(name)] for name in source_names})
