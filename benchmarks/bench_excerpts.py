"""Benchmark: paired training examples per second, naive decoding versus the spectrogram cache.

Run from the repository root:

    python benchmarks/bench_excerpts.py

It writes 6 synthetic tracks (60 s of noise and tones, 44.1 kHz stereo wav: mixture,
accompaniment, voice) to a temporary folder and measures, at the paper's shapes (8192 Hz,
n_fft 512, hop 256, 4 layers, 64 frames -> 350 x 158 input, 258 x 66 targets), batch 64:

  (a) the naive rate: per excerpt, decode + resample + STFT the mixture and both sources
      (what the original project did), with seeking reads of just the window;
  (b) the warm-cache rate of `PairedExcerpts` batches, from numpy and through
      `as_tf_dataset` (and, for reference, of `UnpairedExcerpts` batches, whose random
      gains cost extra).

It prints both rates and their ratio; the whole run takes well under a minute.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
import soundfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from Datasets import audio, features  # noqa: E402
from Datasets.excerpts import (PairedExcerpts, SpectrogramCache, Track,  # noqa: E402
                               UnpairedExcerpts, as_tf_dataset)
from Datasets.features import SpectrogramSettings  # noqa: E402
from Datasets.windows import WindowShapes  # noqa: E402
from Models.shapes import unet_shapes  # noqa: E402

FILE_RATE = 44100
SONG_SECONDS = 60.0
NUM_TRACKS = 6
BATCH_SIZE = 64
SECONDS_PER_MEASUREMENT = 4.0


def write_synthetic_tracks(folder: str, rng: np.random.Generator) -> list[Track]:
    """Tracks of stereo noise plus a tone (accompaniment) and tone bursts (voice)."""
    time_axis = np.arange(int(SONG_SECONDS * FILE_RATE)) / FILE_RATE
    tracks = []
    for track_index in range(NUM_TRACKS):
        tone = 0.2 * np.sin(2 * np.pi * (110 + 20 * track_index) * time_axis)
        accompaniment = 0.1 * rng.standard_normal((time_axis.size, 2)) + tone[:, None]
        bursts = (np.sin(2 * np.pi * 2 * time_axis) > 0) * 0.3 * np.sin(2 * np.pi * 440 * time_axis)
        voice = np.stack([bursts, 0.8 * bursts], axis=1)
        signals = {"mixture": accompaniment + voice, "accompaniment": accompaniment, "voice": voice}
        paths = []
        for name, signal in signals.items():
            path = os.path.join(folder, f"track{track_index}_{name}.wav")
            soundfile.write(path, np.clip(signal, -1, 1).astype(np.float32), FILE_RATE, subtype="PCM_16")
            paths.append(audio.info(path))
        tracks.append(tuple(paths))
    return tracks


def naive_example(track: Track, shapes: WindowShapes, settings: SpectrogramSettings,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """One excerpt the slow way: seek, decode, resample and STFT each file's window."""
    window_samples = shapes.input_frames * settings.hop * FILE_RATE // settings.sample_rate
    start = int(rng.integers(0, track[0].num_frames - window_samples))
    spectrograms = []
    for source in track:
        signal = audio.read(source, start, window_samples, sample_rate=settings.sample_rate, mono=True)
        spectrograms.append(features.log_magnitude(features.stft(signal, settings.n_fft, settings.hop)))
    return spectrograms


def examples_per_second(draw_batch, batch_size: int) -> float:
    """Calls `draw_batch` (one warm-up call first) for about SECONDS_PER_MEASUREMENT seconds."""
    draw_batch()
    batches, began = 0, time.perf_counter()
    while time.perf_counter() - began < SECONDS_PER_MEASUREMENT:
        draw_batch()
        batches += 1
    return batches * batch_size / (time.perf_counter() - began)


def main() -> None:
    settings = SpectrogramSettings()
    shapes = unet_shapes(num_layers=4, num_frames=64, num_bins=settings.num_bins)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        tracks = write_synthetic_tracks(folder, rng)
        naive_rate = examples_per_second(
            lambda: naive_example(tracks[int(rng.integers(len(tracks)))], shapes, settings, rng), 1)

        cache = SpectrogramCache(os.path.join(folder, "cache"), settings)
        began = time.perf_counter()
        cache.prepare([source for track in tracks for source in track])
        cold_seconds = time.perf_counter() - began
        excerpts = PairedExcerpts(tracks, shapes, BATCH_SIZE, cache, seed=0)
        numpy_rate = examples_per_second(excerpts.next_batch, BATCH_SIZE)
        batches = iter(as_tf_dataset(excerpts))
        tf_rate = examples_per_second(lambda: next(batches), BATCH_SIZE)
        mixtures, accompaniments, voices = zip(*tracks)
        unpaired = UnpairedExcerpts(mixtures, {"accompaniment": accompaniments, "voice": voices}, shapes, BATCH_SIZE,
                                    cache, seed=0)
        unpaired_rate = examples_per_second(unpaired.next_batch, BATCH_SIZE)

    print(f"shapes {shapes}, batch {BATCH_SIZE}, {NUM_TRACKS} tracks of {SONG_SECONDS:.0f} s")
    print(f"cache preparation (cold, {3 * NUM_TRACKS} files): {cold_seconds:.1f} s")
    print(f"paired batches: {numpy_rate:.0f} examples/s (naive decode+resample+STFT: "
          f"{naive_rate:.0f} examples/s, ratio {numpy_rate / naive_rate:.0f}x)")
    print(f"paired batches through tf.data: {tf_rate:.0f} examples/s "
          f"(ratio {tf_rate / naive_rate:.0f}x)")
    print(f"unpaired batches (with random gains): {unpaired_rate:.0f} examples/s")


if __name__ == "__main__":
    main()
