"""Turns a described track into the triple the separator trains on: (mixture, accompaniment, voice).

Each data set stores its audio differently (SPEC section 4). Where the triple needs audio that
is not on disk (a difference, a sum of stems, one channel of a file), it is computed once and
written under the derived-audio cache folder, never beside the user's data. Files are written
atomically, so an existing derived file is complete and is reused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass

import numpy as np

from Datasets import audio
from Datasets.descriptors import Database, Track
from Sample import Sample, SilentSample

log = logging.getLogger(__name__)


class TrackAudioError(OSError):
    """A file named in a descriptor cannot be used: missing, empty, damaged or unreadable."""


class MissingAudioError(TrackAudioError, FileNotFoundError):
    """A file named in a descriptor is not on disk."""


@dataclass(frozen=True)
class SeparationTrack:
    """One song as the separator sees it."""

    name: str
    database: str
    mixture: Sample
    accompaniment: Sample | SilentSample
    voice: Sample | SilentSample

    @property
    def sources(self) -> tuple[Sample | SilentSample, Sample | SilentSample]:
        return self.accompaniment, self.voice


class _Converter:
    """Resolves the files of one track and writes its derived audio."""

    def __init__(self, database: Database, track: Track, derived_dir: str):
        self.database, self.track = database, track
        folder = re.sub(r"[^\w.-]+", "_", track.name).strip("_")[:80]
        key = hashlib.sha1(f"{database.root}|{track.name}".encode()).hexdigest()[:10]
        self.derived_folder = os.path.join(derived_dir, database.name, f"{folder}-{key}")

    def sample(self, instrument_name: str) -> Sample:
        instruments = self.track.instruments_named(instrument_name)
        if not instruments:
            raise ValueError(f"Track '{self.track.name}' of {self.database.name} has no '{instrument_name}' "
                             f"instrument, which the {self.database.format} format needs.")
        return self.existing(instruments[0].relative_path)

    def existing(self, relative_path: str) -> Sample:
        path = os.path.join(self.database.root, relative_path)
        if not os.path.isfile(path):
            raise MissingAudioError(f"Track '{self.track.name}' of {self.database.name}: audio file '{path}' "
                                    "is missing.")
        return audio.info(path)

    def derived(self, name: str, compute) -> Sample:
        """The cached file `name`, computed by `compute() -> (audio, rate)` on first use."""
        path = os.path.join(self.derived_folder, f"{name}.wav")
        if not os.path.exists(path):
            signal, rate = compute()
            audio.write(path, signal, rate)
        return audio.info(path)


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


def _difference_of(minuend: Sample, subtrahend: Sample):
    def compute():
        (first, second), rate = _read_aligned([minuend, subtrahend])
        return first - second, rate
    return compute


def _stem_sum(converter: _Converter, name: str, instrument_names: set[str], reference: Sample) -> Sample | SilentSample:
    """A single stem as it is, several stems summed once each, none as silence."""
    stems = [converter.existing(instrument.relative_path) for instrument in converter.track.instruments
             if instrument.name in instrument_names]
    if not stems:
        return SilentSample(reference.duration, reference.sample_rate, reference.channels)
    if len(stems) == 1:
        return stems[0]
    return converter.derived(name, _sum_of(stems))


def _dsd100(converter: _Converter) -> tuple[Sample, Sample, Sample]:
    mixture, voice = converter.sample("Mix"), converter.sample("Voice")
    return mixture, converter.derived("accompaniment", _difference_of(mixture, voice)), voice


def _ccmixter(converter: _Converter) -> tuple[Sample, Sample, Sample]:
    return converter.sample("Mix"), converter.sample("Instrumental"), converter.sample("Voice")


def _medleydb(converter: _Converter):
    # The official MIX is not the sum of the stems (it is mastered), so the mixture is rebuilt
    # from the stems. Each stem is counted once (the original summed every voice stem thrice).
    not_accompaniment = {"Voice", "Mix", "Instrumental"}
    names = {instrument.name for instrument in converter.track.instruments}
    reference = converter.existing(converter.track.instruments[0].relative_path)
    voice = _stem_sum(converter, "voice", {"Voice"}, reference)
    accompaniment = _stem_sum(converter, "accompaniment", names - not_accompaniment, reference)
    present = [source for source in (accompaniment, voice) if not source.is_silent]
    if not present:
        raise ValueError(f"Track '{converter.track.name}' of {converter.database.name} has no stems.")
    mixture = present[0] if len(present) == 1 else converter.derived("mixture", _sum_of(present))
    return mixture, accompaniment, voice


def _ikala(converter: _Converter) -> tuple[Sample, Sample, Sample]:
    # iKala stores accompaniment in the left channel and voice in the right one.
    stereo = converter.sample("Mix")
    if stereo.channels != 2:
        raise ValueError(f"iKala track '{converter.track.name}': '{stereo.path}' has {stereo.channels} "
                         "channels; expected 2 (left accompaniment, right voice).")

    def channel(index):
        return lambda: (audio.read(stereo)[:, index], stereo.sample_rate)

    accompaniment = converter.derived("accompaniment", channel(0))
    voice = converter.derived("voice", channel(1))
    mixture = converter.derived("mixture", lambda: (audio.read(stereo).sum(axis=1), stereo.sample_rate))
    return mixture, accompaniment, voice


CONVERTERS = {"DSD100": _dsd100, "MUSDB18HQ": _dsd100, "CCMixter": _ccmixter, "MedleyDB": _medleydb,
              "iKala": _ikala}


def convert_track(database: Database, track: Track, derived_dir: str) -> SeparationTrack:
    """The (mixture, accompaniment, voice) of `track`, writing derived audio under `derived_dir`."""
    if database.format not in CONVERTERS:
        raise ValueError(f"Descriptor of {database.name} ({database.source_file}) has format "
                         f"'{database.format}'; known formats: {', '.join(CONVERTERS)}. Set <databaseFormat>.")
    try:
        mixture, accompaniment, voice = CONVERTERS[database.format](_Converter(database, track, derived_dir))
    except audio.AudioFileError as error:
        raise TrackAudioError(f"Track '{track.name}' of {database.name}: {error}") from error
    return SeparationTrack(track.name, database.name, mixture, accompaniment, voice)
