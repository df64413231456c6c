"""Signal steps the weak-label recipes share: reading events and background excerpts, fitting
events into a clip, level ratios, and the one scale that a clip's signals share.

All signals here are mono float64 at the recipe's sample rate; they become float32 on the
24-bit grid only when a clip is written (`Datasets.weak_label.folder`).
"""
from __future__ import annotations

import logging
import os

import librosa
import numpy as np

from Datasets import audio
from Sample import Sample

logger = logging.getLogger(__name__)

PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dBFS: headroom for later resampling or lossy encoding
_CROP_FADE_SECONDS = 0.01  # a cropped event ends with this fade-out instead of a click
_SPLIT_FRACTIONS = {"valid": 0.15, "test": 0.15}  # the rest of the files go to train
SHORT_BACKGROUND_CHOICES = ("loop", "error")


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) if signal.size else 0.0


def read_segment(path: str, sample_rate: int, start_seconds: float = 0.0,
                 end_seconds: float | None = None) -> np.ndarray:
    """The mono downmix of [start, end) seconds of a file (the whole file by default) at `sample_rate`."""
    header = audio.info(path)
    start = int(round(start_seconds * header.sample_rate))
    frames = None if end_seconds is None else int(round(end_seconds * header.sample_rate)) - start
    return audio.read(path, start, frames, sample_rate=sample_rate, mono=True).astype(np.float64)


def read_event(path: str, sample_rate: int, start_seconds: float = 0.0,
               end_seconds: float | None = None) -> np.ndarray:
    """`read_segment`, refusing an event that is silent (it has no level to scale to a ratio)."""
    signal = read_segment(path, sample_rate, start_seconds, end_seconds)
    if rms(signal) == 0.0:
        where = "" if end_seconds is None else f" between {start_seconds:g} s and {end_seconds:g} s"
        raise ValueError(f"Event file '{path}' is silent{where}: remove it or fix its annotation.")
    return signal


def check_backgrounds(paths: list[str], clip_seconds: float, short_background: str) -> list[Sample]:
    """Headers of the background files; one shorter than a clip is refused or looped (with a
    warning naming it), as `short_background` says."""
    samples = [audio.info(path) for path in paths]
    for sample in samples:
        if sample.duration >= clip_seconds:
            continue
        if short_background == "error":
            raise ValueError(
                f"Background '{sample.path}' lasts {sample.duration:.2f} s, shorter than the {clip_seconds:g} s "
                "clips. Use a longer recording, remove this one, or set short_background='loop' to repeat it.")
        logger.warning("Background '%s' lasts %.2f s, shorter than the %g s clips: it is looped to fill them "
                       "(short_background='loop').", sample.path, sample.duration, clip_seconds)
    return samples


def background_excerpt(sample: Sample, clip_frames: int, sample_rate: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A clip-long excerpt at a random offset, and the offset in seconds; a background shorter
    than the clip is repeated from its start (`check_backgrounds` has already said so)."""
    needed = int(np.ceil(clip_frames * sample.sample_rate / sample_rate))
    if sample.num_frames < needed:
        whole = audio.read(sample.path, sample_rate=sample_rate, mono=True).astype(np.float64)
        return np.resize(whole, clip_frames), 0.0
    offset = int(rng.integers(0, sample.num_frames - needed + 1))
    excerpt = audio.read(sample.path, offset, needed, sample_rate=sample_rate, mono=True).astype(np.float64)
    return librosa.util.fix_length(excerpt, size=clip_frames), offset / sample.sample_rate


def fit_lengths(lengths: list[int], room: int, overlap: bool) -> list[int]:
    """Event lengths after cropping: each fits the clip, and without overlap they fit it together
    (the longest ones are shortened to a common length)."""
    fitted = [min(length, room) for length in lengths]
    if overlap or sum(fitted) <= room:
        return fitted
    ordered = sorted(fitted)
    whole = 0  # the shortest events stay whole while an equal share of the rest of the room holds them
    while ordered[whole] <= (room - sum(ordered[:whole])) // (len(ordered) - whole):
        whole += 1
    cap = (room - sum(ordered[:whole])) // (len(ordered) - whole)
    return [min(length, cap) for length in fitted]


def crop(signal: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """The first `length` samples, faded out at the cut."""
    if length >= len(signal):
        return signal
    cropped = signal[:length].copy()
    fade = min(length, int(_CROP_FADE_SECONDS * sample_rate))
    cropped[length - fade:] *= np.linspace(1.0, 0.0, fade)
    return cropped


def place(lengths: list[int], room: int, overlap: bool, rng: np.random.Generator) -> list[int]:
    """Random onsets for events of these lengths in `room` frames. Without overlap the events
    follow each other in a random order with random gaps (a uniform split of the free time)."""
    if overlap:
        return [int(rng.integers(0, room - length + 1)) for length in lengths]
    free = room - sum(lengths)
    gaps = np.floor(rng.dirichlet(np.ones(len(lengths) + 1)) * free).astype(int)
    onsets = [0] * len(lengths)
    position = 0
    for gap, index in zip(gaps, rng.permutation(len(lengths))):
        position += gap
        onsets[index] = int(position)
        position += lengths[index]
    return onsets


def gain_for_ratio(signal: np.ndarray, reference: np.ndarray, ratio_db: float, reference_name: str) -> float:
    """The gain that puts `signal` `ratio_db` above `reference` in RMS."""
    reference_rms = rms(reference)
    if reference_rms == 0.0:
        raise ValueError(f"{reference_name} is silent over the samples that set the level ratio, so the ratio is "
                         "undefined: remove the silent recording or its silent part.")
    return 10 ** (ratio_db / 20) * reference_rms / rms(signal)


def peak_scale(signals: list[np.ndarray], always: bool) -> float:
    """One factor for all of a clip's signals (the mixture among them), so their ratios stay:
    it brings the largest peak to PEAK_LIMIT, always or only where it is above."""
    peak = max(float(np.abs(signal).max()) for signal in signals)
    if peak == 0.0 or (peak <= PEAK_LIMIT and not always):
        return 1.0
    return PEAK_LIMIT / peak


def split_files(files: list[str], seed: int, what: str) -> dict[str, list[str]]:
    """Files shuffled by `seed` into train, valid and test (15 % each for valid and test, at
    least one each), so the files of one split never appear in another."""
    if len(files) < 3:
        raise ValueError(f"{what} has {len(files)} file(s); at least 3 are needed to put one in each of train, "
                         "valid and test: add files.")
    shuffled = [files[index] for index in np.random.default_rng(seed).permutation(len(files))]
    valid, test = (max(1, int(round(fraction * len(files)))) for fraction in _SPLIT_FRACTIONS.values())
    valid, test = min(valid, (len(files) - 1) // 2), min(test, (len(files) - 1) // 2)
    return {"train": sorted(shuffled[valid + test:]), "valid": sorted(shuffled[:valid]),
            "test": sorted(shuffled[valid:valid + test])}


class EventVariation:
    """Random variation of each event before it is placed, as soundscape synthesisers (Scaper)
    draw it: a different pitch and speed together (`semitones`, drawn uniformly from a pair: a
    smaller or larger drum, a higher or lower voice) and a shorter length (`seconds`, drawn
    log-uniformly from a pair: the event is cut there and faded out, like a choked cymbal; one
    already shorter stays whole). Either may be None (not varied)."""

    def __init__(self, semitones: tuple[float, float] | None, seconds: tuple[float, float] | None):
        self.semitones, self.seconds = semitones, seconds

    def __call__(self, signal: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        if self.semitones is not None:
            speed = 2 ** (rng.uniform(*self.semitones) / 12)
            signal = librosa.resample(signal, orig_sr=sample_rate, target_sr=sample_rate / speed)
        if self.seconds is not None:
            length = int(round(np.exp(rng.uniform(*np.log(self.seconds))) * sample_rate))
            cut = crop(signal, max(length, 1), sample_rate)
            if rms(cut) > 0.0:  # an event that starts with more silence than that keeps its sound
                signal = cut
        return signal


def draw_events(class_draw: "BalancedDraw", file_draws: dict[str, "BalancedDraw"], count: int, clip_frames: int,
                sample_rate: int, overlap: bool, rng: np.random.Generator,
                variation: EventVariation | None = None) -> list[tuple[str, str, np.ndarray, int]]:
    """(class, file, signal, onset) of `count` events of different classes, read at their
    recorded level, varied (`EventVariation`), cropped to the room they have and placed at
    random onsets."""
    labels = class_draw.draw(count)
    paths = [file_draws[label].draw(1)[0] for label in labels]
    signals = [read_event(path, sample_rate) for path in paths]
    if variation is not None:
        signals = [variation(signal, sample_rate, rng) for signal in signals]
    lengths = fit_lengths([len(signal) for signal in signals], clip_frames, overlap)
    signals = [crop(signal, length, sample_rate) for signal, length in zip(signals, lengths)]
    return list(zip(labels, paths, signals, place(lengths, clip_frames, overlap, rng)))


class BalancedDraw:
    """Random draws that use every item about equally often: each draw takes the least used
    items, ties broken at random. Classes drawn this way all appear in a split of a few clips."""

    def __init__(self, items: list, rng: np.random.Generator):
        self.items = list(items)
        self.counts = np.zeros(len(self.items), dtype=int)
        self.rng = rng

    def draw(self, count: int) -> list:
        order = np.lexsort((self.rng.random(len(self.items)), self.counts))[:count]
        self.counts[order] += 1
        return [self.items[index] for index in order]


class GroupedDraw:
    """A `BalancedDraw` of the groups, then of the drawn group's items: every group (one drum
    kit, one voice) is used about equally often however many items (takes) it has."""

    def __init__(self, groups: dict[str, list], rng: np.random.Generator):
        self.groups = BalancedDraw(sorted(groups), rng)
        self.items = {name: BalancedDraw(items, rng) for name, items in groups.items()}

    def draw(self, count: int) -> list:
        return [self.items[group].draw(1)[0] for group in self.groups.draw(count)]


def wav_files(folder: str) -> list[str]:
    """The .wav files directly in `folder`, sorted (so the recipes do not depend on listing order)."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(".wav") and not name.startswith("."))
