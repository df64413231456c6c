"""How far a mel-band mask can go: event SDR of oracle masks on a weak-label split, at STFT
resolution (the test report's ideal binary mask) and at the model's mel resolution.

Run:  python benchmarks/bench_weak_label_oracles.py FOLDER [--split test] [--mels 64]

A weak-label model's masks have one value per mel band and frame, spread over the STFT bins
as in Models/weak_label/separation.py. Beside the unprocessed mixture and the STFT ideal binary
mask, this scores, per present event, the mel-resolution ideal binary mask (1 where the event's
mel magnitude exceeds the rest's) and ideal ratio mask (event / (event + rest) per band), spread
the same way: the best a perfect weak-label model could reach with its masks. Medians over the
events, BSS Eval v3 with references [event, rest], as in the report.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from Datasets import audio, features  # noqa: E402
from Datasets.features import MelSettings  # noqa: E402
from Datasets.weak_label import load_clips  # noqa: E402
from Models.bss import evaluate_in_parallel  # noqa: E402
from Models.weak_label.separation import ideal_binary_mask_estimate  # noqa: E402


def mel_mask_estimate(mel_mask: np.ndarray, mixture_spectrogram: np.ndarray, length: int,
                      settings: MelSettings) -> np.ndarray:
    """A (frames, mels) mask spread over the STFT bins, times the mixture, inverted."""
    linear_mask = settings.mel_to_linear() @ mel_mask.T
    return features.istft(linear_mask * mixture_spectrogram, settings.hop, length, settings.window)


def oracle_estimates(event: np.ndarray, mixture: np.ndarray, settings: MelSettings) -> dict[str, np.ndarray]:
    mixture_spectrogram = settings.spectrogram(mixture)
    event_mel, rest_mel = (settings.mel(signal) for signal in (event, mixture - event))
    return {"mixture": mixture,
            "stft_ideal_binary_mask": ideal_binary_mask_estimate(event, mixture, settings),
            "mel_ideal_binary_mask": mel_mask_estimate((event_mel > rest_mel).astype(np.float64),
                                                       mixture_spectrogram, len(mixture), settings),
            "mel_ideal_ratio_mask": mel_mask_estimate(event_mel / np.maximum(event_mel + rest_mel, 1e-12),
                                                      mixture_spectrogram, len(mixture), settings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a weak-label folder with sources/ (labels.csv, classes.txt)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--mels", type=int, default=64)
    parser.add_argument("--window", default="hamming")
    arguments = parser.parse_args()
    clips = load_clips(arguments.folder)
    settings = MelSettings(clips.sample_rate, n_mels=arguments.mels, window=arguments.window)
    jobs, slots = [], []
    for clip in clips.split(arguments.split):
        mixture = audio.read(clip.mixture_path, sample_rate=settings.sample_rate, mono=True)
        for name, path in clip.source_paths.items():
            event = audio.read(path, sample_rate=settings.sample_rate, mono=True)[:len(mixture)]
            event = np.pad(event, (0, len(mixture) - len(event)))
            references = np.stack([event, mixture - event])
            estimates = oracle_estimates(event, mixture, settings)
            jobs.append((references, np.stack(list(estimates.values())), [0] * len(estimates)))
            slots.append((name, list(estimates)))
    scores: dict[str, dict[str, list[float]]] = {}
    for (name, estimators), result in zip(slots, evaluate_in_parallel(jobs)):
        for estimator, sdr in zip(estimators, result[0]):
            if np.isfinite(sdr):
                for group in ("all", name):
                    scores.setdefault(estimator, {}).setdefault(group, []).append(float(sdr))
    groups = ["all", *clips.classes]
    print(f"event SDR medians (dB) on the {arguments.split} split of {arguments.folder}, {settings.n_mels} mel bands")
    print(f"{'estimate':>24}  " + "  ".join(f"{group:>12}" for group in groups))
    for estimator, by_group in scores.items():
        print(f"{estimator:>24}  " + "  ".join(f"{np.median(by_group.get(group, [np.nan])):12.2f}" for group in groups))


if __name__ == "__main__":
    main()
