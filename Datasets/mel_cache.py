"""Mel spectrograms of weak-label clips, computed once and cached on disk.

Each clip's mel spectrogram (frames, mels) is stored as `<cache>/<settings key>/<clip key>.npy`,
the clip key hashing the file's path, size and modification time, so that an edited or
replaced file is recomputed and nothing stale is read. Clips are decoded and transformed in
threads: libsndfile, soxr and the FFTs release the GIL.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
from dataclasses import astuple

import numpy as np

from Datasets import audio
from Datasets.atomic import atomic_open
from Datasets.features import MelSettings


def _key(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def clip_mels(paths: list[str], settings: MelSettings, cache_dir: str | None, num_workers: int = 4,
              power: float = 1.0) -> list[np.ndarray]:
    """Mel magnitudes (power 1) or energies (power 2), (frames, mels), of every audio file in
    `paths`, in order; `cache_dir` None computes them all and stores nothing."""
    def mel_of(path: str) -> np.ndarray:
        return settings.mel(audio.read(path, sample_rate=settings.sample_rate, mono=True), power)

    if cache_dir is None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(num_workers, 1)) as pool:
            return list(pool.map(mel_of, paths))
    folder = os.path.join(cache_dir, _key(astuple(settings), power))
    os.makedirs(folder, exist_ok=True)

    def entry(path: str) -> str:
        status = os.stat(path)
        return os.path.join(folder, _key(os.path.abspath(path), status.st_size, status.st_mtime_ns) + ".npy")

    def compute(path: str) -> np.ndarray:
        mel = mel_of(path)
        with atomic_open(entry(path)) as output:
            np.save(output, mel)
        return mel

    entries = [entry(path) for path in paths]
    missing = [path for path, cached in zip(paths, entries) if not os.path.exists(cached)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(num_workers, 1)) as pool:
        computed = dict(zip(missing, pool.map(compute, missing)))
    # Cached entries are read here, in one thread: np.load parses each header with `ast`, which
    # CPython 3.11 cannot do in two threads at once ("AST constructor recursion depth mismatch").
    return [computed[path] if path in computed else np.load(cached) for path, cached in zip(paths, entries)]


def fit_frames(spectrograms: list[np.ndarray], num_frames: int, fill: float) -> np.ndarray:
    """(clips, num_frames, mels): longer clips cropped at the end, shorter ones padded with `fill`."""
    stacked = np.full((len(spectrograms), num_frames, spectrograms[0].shape[1]), fill, np.float32)
    for index, spectrogram in enumerate(spectrograms):
        frames = min(num_frames, len(spectrogram))
        stacked[index, :frames] = spectrogram[:frames]
    return stacked
