"""Benchmark: speed and memory of streaming file separation (Models/streaming.py).

Run from the repository root:

    python benchmarks/bench_separation.py

With the paper-size separator (`build_separator()`, random weights: 4 layers, 350 x 158 ->
258 x 66 training windows, 958,596 parameters; 8192 Hz, n_fft 512, hop 256) it measures

  (a) speed on a generated 3-minute song: the real-time factor of `separate_file` on a
      44.1 kHz stereo WAV and on an 8192 Hz mono WAV (the model's rate, so nearly all of the
      time is the network), beside the naive loop over 66-frame output chunks (each a
      158-frame input window, one call each of the model compiled to a TensorFlow graph, as
      the original's session did) on the same 8192 Hz mono song, in the same run, and their
      ratio;
  (b) peak memory (VmHWM, each run in its own process) of `separate_file` on a generated
      10-minute and 60-minute 44.1 kHz stereo song (16-bit WAVs written block by block), and
      their ratio.

Options to shorten: --song-seconds (default 180) for (a), --short-minutes / --long-minutes
(defaults 10 and 60) for (b), --skip-memory to leave (b) out. The default run takes about
5 minutes on 2 CPU cores and needs about 2.5 GB of free space in the temporary folder.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from Datasets import audio  # noqa: E402
from Datasets.features import SpectrogramSettings  # noqa: E402
from Models.separation import Separator  # noqa: E402
from Models.separator import build_separator  # noqa: E402
from Models.shapes import UnetGeometry  # noqa: E402

NAIVE_STEP_FRAMES = 64  # rounds up to the 66-frame output (158-frame input) training window
WRITE_BLOCK_SECONDS = 10.0


def paper_separator() -> Separator:
    settings = SpectrogramSettings()
    return Separator(build_separator(), settings, UnetGeometry(4, settings.num_bins), ("accompaniment", "voice"),
                     "random")


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


def time_naive_loop(trained: Separator, path: str) -> float:
    """Whole-file separation with one call of the compiled model per 66-frame output chunk."""
    mixture = audio.read(path, sample_rate=trained.settings.sample_rate, mono=True)
    trained.waveform(mixture[:8192], window_frames=NAIVE_STEP_FRAMES)  # traces the graph outside the timing
    start = time.perf_counter()
    trained.waveform(mixture, window_frames=NAIVE_STEP_FRAMES)
    return time.perf_counter() - start


def measure_speed(trained: Separator, folder: str, seconds: float) -> None:
    mono = os.path.join(folder, "song_8192_mono.wav")
    stereo = os.path.join(folder, "song_44100_stereo.wav")
    write_song(mono, seconds, trained.settings.sample_rate, 1)
    write_song(stereo, seconds, 44100, 2)
    warm_up = os.path.join(folder, "warm_up.wav")
    write_song(warm_up, 10.0, 44100, 2)
    time_separate_file(trained, warm_up, os.path.join(folder, "out"))
    naive = time_naive_loop(trained, mono)
    streaming_mono = time_separate_file(trained, mono, os.path.join(folder, "out"))
    streaming_stereo = time_separate_file(trained, stereo, os.path.join(folder, "out"))
    print(f"speed on a {seconds:.0f} s song (real-time factor = song seconds / wall seconds):")
    print(f"  naive 66-frame loop, 8192 Hz mono:  {seconds / naive:7.1f}x  ({naive:.2f} s)")
    print(f"  separate_file, 8192 Hz mono:        {seconds / streaming_mono:7.1f}x  ({streaming_mono:.2f} s)"
          f"  -> {naive / streaming_mono:.2f}x the naive loop (targets: 300x real time, 2.5x the loop)")
    print(f"  separate_file, 44.1 kHz stereo:     {seconds / streaming_stereo:7.1f}x  ({streaming_stereo:.2f} s)")


def peak_memory_of_separation(path: str, output_dir: str) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of `separate_file` on `path` in a fresh process."""
    completed = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, output_dir],
                               check=True, capture_output=True, text=True)
    peak_mb, seconds = completed.stdout.split()[-2:]
    return float(peak_mb), float(seconds)


def measure_memory(folder: str, short_minutes: float, long_minutes: float) -> None:
    peaks = {}
    print("peak memory of separate_file (44.1 kHz stereo 16-bit WAV input, each in its own process):")
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
    seconds = time_separate_file(paper_separator(), path, output_dir)
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"{peak_kb / 1024:.1f} {seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--song-seconds", type=float, default=180.0)
    parser.add_argument("--short-minutes", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(*arguments.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        measure_speed(paper_separator(), folder, arguments.song_seconds)
        if not arguments.skip_memory:
            measure_memory(folder, arguments.short_minutes, arguments.long_minutes)


if __name__ == "__main__":
    main()
