"""Benchmark: speed and memory of streaming file separation (Models/streaming.py).

Run from the repository root:

    python benchmarks/bench_separation.py

With the paper-size separator (`build_separator()`, random weights: 4 layers, 350 x 158 ->
258 x 66 training windows, 958,596 parameters; 8192 Hz, n_fft 512, hop 256) it measures

  (a) speed on a generated 3-minute song: the real-time factor of `separate_file` on a
      44.1 kHz stereo WAV and on an 8192 Hz mono WAV (the model's rate, so nearly all of the
      time is the network), beside the naive loop over 66-frame output chunks (each a
      158-frame input window, one call each of the model traced as a TensorFlow graph for any
      batch and length, as this project's engine did before it used static shapes) on the
      same 8192 Hz mono song, in the same run, and their ratio; also the same loop with a
      static input shape, to tell the gain of long windows from that of static shapes;
  (b) the network alone on that song for window lengths x windows per call x XLA: the table
      behind the engine's choice (`Separator.window_shape`);
  (c) peak memory (VmHWM, each run in its own process) of `separate_file` with
      `postfilter=wiener` on a generated 10-minute and 60-minute 44.1 kHz stereo song (16-bit
      WAVs written block by block), and their ratio.

Options to shorten: --song-seconds (default 180) for (a) and (b), --skip-table to leave (b)
out, --short-minutes / --long-minutes (defaults 10 and 60) for (c), --skip-memory to leave
(c) out. The default run takes about 8 minutes on 2 CPU cores and needs about 2.5 GB of free
space in the temporary folder.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from Datasets import audio, features  # noqa: E402
from Datasets.features import SpectrogramSettings  # noqa: E402
from Models.postfilter import PostFilter  # noqa: E402
from Models.separation import Separator  # noqa: E402
from Models.separator import build_separator  # noqa: E402
from Models.shapes import UnetGeometry  # noqa: E402
from Models.windowing import WindowedSeparation  # noqa: E402

NAIVE_STEP_FRAMES = 64  # rounds up to the 66-frame output (158-frame input) training window
WRITE_BLOCK_SECONDS = 10.0


def paper_separator(postfilter: str = "none") -> Separator:
    settings = SpectrogramSettings()
    return Separator(build_separator(), settings, UnetGeometry(4, settings.num_bins), ("accompaniment", "voice"),
                     "random", postfilter=PostFilter(postfilter))


def write_song(path: str, seconds: float, rate: int, channels: int, subtype: str = "FLOAT") -> None:
    """Tones and noise written block by block, so that an hour never sits in memory."""
    rng = np.random.default_rng(0)
    block = int(WRITE_BLOCK_SECONDS * rate)
    with soundfile.SoundFile(path, "w", rate, channels, subtype=subtype, format="WAV") as song:
        for start in range(0, int(seconds * rate), block):
            count = min(block, int(seconds * rate) - start)
            time_axis = (start + np.arange(count)) / rate
            tones = 0.2 * np.sin(2 * np.pi * 220.0 * time_axis) + 0.1 * np.sin(2 * np.pi * 660.0 * time_axis)
            noise = 0.05 * rng.standard_normal((count, channels))
            song.write((tones[:, None] + noise).astype(np.float32))


def time_separate_file(trained: Separator, path: str, output_dir: str) -> float:
    start = time.perf_counter()
    trained.separate_file(path, output_dir, overwrite=True)
    return time.perf_counter() - start


def time_naive_loop(trained: Separator, path: str, static_shape: bool) -> float:
    """Whole-file separation with one call of the model per 66-frame output chunk: traced for
    any batch and length, or for exactly one 158-frame window."""
    mixture = audio.read(path, sample_rate=trained.settings.sample_rate, mono=True)
    shapes = trained.geometry.windows(NAIVE_STEP_FRAMES)
    spec = tf.TensorSpec([1 if static_shape else None, shapes.input_bins, shapes.input_frames if static_shape
                          else None, 1])
    network = tf.function(lambda window: trained.model(window, training=False), input_signature=[spec])
    network(tf.zeros([1, shapes.input_bins, shapes.input_frames, 1]))  # traced outside the timing
    start = time.perf_counter()
    spectrogram = features.stft(mixture, trained.settings.n_fft, trained.settings.hop)
    log_mixture = features.log_magnitude(spectrogram)
    bins, frames = log_mixture.shape
    padded = np.zeros((shapes.input_bins, frames + shapes.input_frames), np.float32)
    padded[shapes.input_bins_below:shapes.input_bins_below + bins, shapes.context_frames:][:, :frames] = log_mixture
    chunks: dict[str, list[np.ndarray]] = {}
    for first in range(0, frames, NAIVE_STEP_FRAMES):  # a multiple of the grid: the same result as the engine
        outputs = network(tf.constant(padded[None, :, first:first + shapes.input_frames, None]))
        for name, output in outputs.items():
            chunks.setdefault(name, []).append(np.asarray(output)[0, :bins, :NAIVE_STEP_FRAMES, 0])
    estimates = {name: np.concatenate(parts, axis=1)[:, :frames] for name, parts in chunks.items()}
    trained.reconstruct(estimates, spectrogram, len(mixture))
    return time.perf_counter() - start


def network_table(trained: Separator, path: str, seconds: float) -> None:
    """Real-time factor of the network alone (the engine's windowing, one whole song in memory)
    for window lengths x windows per call x XLA."""
    mixture = audio.read(path, sample_rate=trained.settings.sample_rate, mono=True)
    log_mixture = features.log_magnitude(features.stft(mixture, trained.settings.n_fft, trained.settings.hop))
    print("network alone, 8192 Hz mono (real-time factor):")
    print("| window frames | windows per call | no XLA | XLA |")
    print("| --- | --- | --- | --- |")
    for step in (64, 256, 512, 1024, 2048):
        for positions in (1, 2, 4):
            if step * positions > 4096:
                continue
            rates = []
            for jit_compile in (False, True):
                def separate():
                    WindowedSeparation(trained.model, trained.geometry, trained.settings.num_bins, step, 1,
                                       positions, jit_compile).push(log_mixture[None], last=True)
                separate()
                start = time.perf_counter()
                separate()
                rates.append(seconds / (time.perf_counter() - start))
            print(f"| {step} | {positions} | {rates[0]:.0f}x | {rates[1]:.0f}x |", flush=True)
    chosen = trained.window_shape(1)
    print(f"engine's choice for one channel: {chosen[0]} frames, {chosen[1]} per call")


def measure_speed(trained: Separator, folder: str, seconds: float) -> str:
    mono = os.path.join(folder, "song_8192_mono.wav")
    stereo = os.path.join(folder, "song_44100_stereo.wav")
    write_song(mono, seconds, trained.settings.sample_rate, 1)
    write_song(stereo, seconds, 44100, 2)
    warm_up = os.path.join(folder, "warm_up.wav")
    write_song(warm_up, 10.0, 44100, 2)
    time_separate_file(trained, warm_up, os.path.join(folder, "out"))
    naive = min(time_naive_loop(trained, mono, static_shape=False) for _ in range(2))
    naive_static = min(time_naive_loop(trained, mono, static_shape=True) for _ in range(2))
    streaming_mono = min(time_separate_file(trained, mono, os.path.join(folder, "out")) for _ in range(2))
    streaming_stereo = time_separate_file(trained, stereo, os.path.join(folder, "out"))
    print(f"speed on a {seconds:.0f} s song (real-time factor = song seconds / wall seconds, best of 2):")
    print(f"  naive 66-frame loop, 8192 Hz mono:  {seconds / naive:7.1f}x  ({naive:.2f} s)")
    print(f"  the same, static input shape:       {seconds / naive_static:7.1f}x  ({naive_static:.2f} s)")
    print(f"  separate_file, 8192 Hz mono:        {seconds / streaming_mono:7.1f}x  ({streaming_mono:.2f} s)"
          f"  -> {naive / streaming_mono:.2f}x the naive loop (targets: 300x real time, 2.5x the loop), "
          f"{naive_static / streaming_mono:.2f}x its static-shape version")
    print(f"  separate_file, 44.1 kHz stereo:     {seconds / streaming_stereo:7.1f}x  ({streaming_stereo:.2f} s)")
    return mono


def peak_memory_of_separation(path: str, output_dir: str) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of `separate_file` on `path` in a fresh process."""
    completed = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, output_dir],
                               check=True, capture_output=True, text=True)
    peak_mb, seconds = completed.stdout.split()[-2:]
    return float(peak_mb), float(seconds)


def measure_memory(folder: str, short_minutes: float, long_minutes: float) -> None:
    peaks = {}
    print("peak memory of separate_file with postfilter=wiener (44.1 kHz stereo 16-bit WAV input, each in its "
          "own process):")
    for minutes in (short_minutes, long_minutes):
        path = os.path.join(folder, f"song_{minutes:g}min.wav")
        write_song(path, minutes * 60, 44100, 2, subtype="PCM_16")
        peaks[minutes], seconds = peak_memory_of_separation(path, os.path.join(folder, "out"))
        print(f"  {minutes:g} min: {peaks[minutes]:7.0f} MB  "
              f"({seconds:.0f} s, {minutes * 60 / seconds:.0f}x real time)")
        os.remove(path)
    print(f"  ratio {long_minutes:g} min / {short_minutes:g} min: {peaks[long_minutes] / peaks[short_minutes]:.3f}")


def child(path: str, output_dir: str) -> None:
    """Separates one file and prints its peak resident memory (MB) and wall seconds."""
    seconds = time_separate_file(paper_separator("wiener"), path, output_dir)
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"{peak_kb / 1024:.1f} {seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--song-seconds", type=float, default=180.0)
    parser.add_argument("--short-minutes", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(*arguments.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        trained = paper_separator()
        mono = measure_speed(trained, folder, arguments.song_seconds)
        if not arguments.skip_table:
            network_table(trained, mono, arguments.song_seconds)
        if not arguments.skip_memory:
            measure_memory(folder, arguments.short_minutes, arguments.long_minutes)


if __name__ == "__main__":
    main()
