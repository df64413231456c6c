"""Test-set BSS evaluation of a trained separator (SPEC section 5, the paper's protocol).

Each test song is separated whole (mixture phase, inverse STFT) at the model's sample rate
and scored with mir_eval's `bss_eval_sources`, references [accompaniment, voice] and no
permutation. NSDR and NSIR subtract the scores of the unprocessed mixture used as the
estimate of every source. A silent reference (an instrumental song's voice) cannot be
scored: that source is left out of the song's scores and flagged, never averaged in.

Training.py calls `evaluate_tracks` on the best model of each phase.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from Datasets import audio, features
from Datasets.features import SpectrogramSettings
from Models.inference import separate_log_spectrogram
from Models.shapes import UnetShapes

log = logging.getLogger(__name__)

METRICS = ("SDR", "SIR", "SAR")
SILENCE_ENERGY = 1e-8  # mean squared amplitude below which a reference counts as silent


def separate_audio(separator, mixture: np.ndarray, settings: SpectrogramSettings, shapes: UnetShapes,
                   num_layers: int, window_frames: int = 2048) -> dict[str, np.ndarray]:
    """Mono mixture waveform at the model's rate -> {source: waveform of the same length}."""
    spectrogram = features.stft(mixture, settings.n_fft, settings.hop)
    estimates = separate_log_spectrogram(separator, features.log_magnitude(spectrogram), shapes, num_layers,
                                         window_frames)
    return {name: features.reconstruct(features.magnitude_from_log(log_magnitude), spectrogram, settings.hop,
                                       len(mixture))
            for name, log_magnitude in estimates.items()}


def bss_scores(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> dict[str, dict]:
    """SDR/SIR/SAR per audible source, in the references' order, without permutation. With a
    single audible source there is no interference to measure, so SIR is left out."""
    from mir_eval.separation import bss_eval_sources

    audible = [name for name, reference in references.items() if np.mean(reference ** 2) > SILENCE_ENERGY]
    if not audible:
        return {}
    with warnings.catch_warnings():  # mir_eval announces its deprecation on every call
        warnings.simplefilter("ignore", FutureWarning)
        scores = bss_eval_sources(np.stack([references[name] for name in audible]),
                                  np.stack([estimates[name] for name in audible]), compute_permutation=False)
    metrics = METRICS if len(audible) > 1 else ("SDR", "SAR")
    return {name: {metric: float(scores[METRICS.index(metric)][position]) for metric in metrics}
            for position, name in enumerate(audible)}


def evaluate_tracks(separator, tracks, settings: SpectrogramSettings, shapes: UnetShapes, num_layers: int,
                    source_names: tuple[str, ...], window_frames: int = 2048) -> list[dict]:
    """Scores of every track: {"track", "database", "silent": [...], source: {SDR, ..., NSDR, NSIR}}."""
    results = []
    for track in tracks:
        signals = [audio.read(sample, sample_rate=settings.sample_rate, mono=True)
                   for sample in (track.mixture, *track.sources)]
        length = min(len(signal) for signal in signals)
        mixture = signals[0][:length]
        references = {name: signal[:length] for name, signal in zip(source_names, signals[1:])}
        estimated = bss_scores(references, separate_audio(separator, mixture, settings, shapes, num_layers,
                                                          window_frames))
        unprocessed = bss_scores(references, {name: mixture for name in source_names})
        result = {"track": track.name, "database": track.database,
                  "silent": [name for name in source_names if name not in estimated]}
        for name, scores in estimated.items():
            result[name] = {**scores, "NSDR": scores["SDR"] - unprocessed[name]["SDR"]}
            if "SIR" in scores:
                result[name]["NSIR"] = scores["SIR"] - unprocessed[name]["SIR"]
        results.append(result)
    return results


def summarise(results: list[dict], source_names: tuple[str, ...]) -> dict:
    """Mean and median of every metric per source, over the tracks where it could be measured."""
    summary = {}
    for name in source_names:
        summary[name] = {"tracks": sum(name in result for result in results)}
        for metric in (*METRICS, "NSDR", "NSIR"):
            values = [result[name][metric] for result in results if metric in result.get(name, {})]
            if values:
                summary[name].update({f"mean_{metric}": float(np.mean(values)),
                                      f"median_{metric}": float(np.median(values))})
    return summary
