"""Benchmark: BSS Eval source metrics, mir_eval versus Models.bss, sequential and parallel.

Run from the repository root:

    .venv/bin/python benchmarks/bench_metrics.py [--tracks 16] [--seconds 150] [--workers CORES]

(mir_eval alone takes 30-60 s of it on one core).

It generates synthetic "tracks" at 8192 Hz, each with two references (white noise and a few
random tones, like accompaniment and voice) and estimates made of the references with
leakage of the other source, a short FIR filter and added noise. It then times, on the
same tracks and without permutation:

  (a) mir_eval.separation.bss_eval_sources, one track after another;
  (b) Models.bss.bss_eval_sources, one track after another;
  (c) Models.bss.evaluate_in_parallel over `--workers` threads;

and prints the times, the speed-ups over (a), and the largest absolute difference in dB
between (a) and the others over all tracks, sources and metrics (must be <= 0.01). Then,
as the weak-label evaluation scores three estimates of each event (the model's, the
unprocessed mixture, the ideal binary mask's): three estimates of the first source of every
track in one call with `targets`, against one call per estimate (scores must agree to 1e-9 dB).
BLAS is held to one thread in all three, so that (a) and (b) measure one core's work and
(c) the use of several; left free, OpenBLAS threads spin on cores that other work holds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import threadpoolctl
from scipy.signal import lfilter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from Models.bss import ROUNDING_NOISE_DB, bss_eval_sources, evaluate_in_parallel  # noqa: E402

SAMPLE_RATE = 8192


def synthetic_track(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(references, estimates), each (2, samples): [noise-like accompaniment, tonal voice]."""
    time_axis = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * frequency * time_axis + phase)
                for frequency, phase in zip(rng.uniform(100, 2000, 4), rng.uniform(0, 2 * np.pi, 4)))
    references = np.stack([rng.standard_normal(len(time_axis)), tones])
    references /= np.sqrt(np.mean(references ** 2, axis=1, keepdims=True))
    filtered = lfilter(rng.uniform(-0.5, 1.0, 4), [1.0], references, axis=1)
    leaked = filtered + rng.uniform(0.05, 0.5) * references[::-1]
    return references, leaked + rng.uniform(0.05, 0.5) * rng.standard_normal(references.shape)


def mir_eval_scores(references: np.ndarray, estimates: np.ndarray) -> tuple[np.ndarray, ...]:
    from mir_eval.separation import bss_eval_sources as mir_eval_bss_eval_sources

    with warnings.catch_warnings():  # mir_eval announces its deprecation on every call
        warnings.simplefilter("ignore", FutureWarning)
        return mir_eval_bss_eval_sources(references, estimates, compute_permutation=False)[:3]


def timed(label: str, evaluate) -> tuple[float, np.ndarray]:
    """Seconds taken and scores as (tracks, metrics, sources)."""
    start = time.perf_counter()
    scores = evaluate()
    seconds = time.perf_counter() - start
    print(f"{label:<40} {seconds:7.2f} s", flush=True)
    return seconds, np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    arguments = parser.parse_args()

    rng = np.random.default_rng(0)
    jobs = [synthetic_track(arguments.seconds, rng) for _ in range(arguments.tracks)]
    print(f"{arguments.tracks} tracks of 2 sources x {arguments.seconds:g} s at {SAMPLE_RATE} Hz, "
          f"{os.cpu_count()} CPU cores")
    bss_eval_sources(*synthetic_track(1.0, rng))  # first-call costs (imports, FFT plans) out of the timings

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        mir_eval_time, expected = timed("mir_eval, sequential", lambda: [mir_eval_scores(*job) for job in jobs])
        sequential_time, sequential = timed("Models.bss, sequential", lambda: [bss_eval_sources(*job) for job in jobs])
    parallel_time, parallel = timed(f"Models.bss, parallel ({arguments.workers} workers)",
                                    lambda: evaluate_in_parallel(jobs, workers=arguments.workers))

    print(f"speed-up over mir_eval: sequential {mir_eval_time / sequential_time:.1f}x, "
          f"parallel {mir_eval_time / parallel_time:.1f}x")
    difference = max(np.max(np.abs(sequential - expected)), np.max(np.abs(parallel - expected)))
    print(f"max |difference| from mir_eval over all tracks, sources, metrics: {difference:.2e} dB")

    # three estimates of source 0: the track's own, the unprocessed mixture, the estimate with more noise
    several = [(references, np.stack([estimates[0], references.sum(axis=0),
                                      estimates[0] + rng.standard_normal(estimates.shape[1])]))
               for references, estimates in jobs]
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one_by_one_time, one_by_one = timed("Models.bss, one call per estimate", lambda: [
            [bss_eval_sources(references, estimate[None]) for estimate in estimates]
            for references, estimates in several])
        together_time, together = timed("Models.bss, one call with targets", lambda: [
            bss_eval_sources(references, estimates, targets=[0, 0, 0]) for references, estimates in several])
    # (tracks, estimates, metrics, 1) -> (tracks, metrics, estimates), as `together`
    one_by_one = one_by_one[..., 0].transpose(0, 2, 1)
    # the mixture's SAR is rounding noise (it lies in the references' span): compared where below 100 dB
    finite = (one_by_one < ROUNDING_NOISE_DB) & (together < ROUNDING_NOISE_DB)
    print(f"three estimates of one source: {one_by_one_time / together_time:.1f}x faster in one call; "
          f"max |difference| {np.max(np.abs(one_by_one[finite] - together[finite])):.2e} dB")


if __name__ == "__main__":
    main()
