"""Scoring separations the paper's way (SPEC section 5): BSS Eval of whole songs.

Each song is separated whole (mixture phase, inverse STFT) at the model's sample rate and
scored with BSS Eval v3 `bss_eval_sources`, references in `source_names` order and no
permutation (Models/bss.py: mir_eval's numbers to within 1e-8 dB, about ten times faster).
NSDR and NSIR subtract the scores of the unprocessed mixture used as the estimate of every
source. `protocol="museval_v4"` scores the same separations the modern way instead (SiSEC
2018, MUSDB tables): museval's BSS Eval v4 over 1 s windows, the median over windows per song.

What a score can and cannot say:
* a silent reference (an instrumental song's voice) cannot be scored: that source is left out
  of the song's scores and listed under "silent";
* a score that cannot be defined (no NSDR where the mixture is the reference) is left out and
  listed under "undefined" with its reason; nothing infinite or NaN is ever averaged;
* a silent estimate of an audible source is a failed separation: it scores FAILED_SCORE_DB
  and is listed under "failed", so that it counts against the model;
* every mean and median comes with the number of songs behind it.
"""
from __future__ import annotations

import functools
import logging
import math

import numpy as np

from Datasets import audio
from Models.bss import FAILED_SCORE_DB, ROUNDING_NOISE_DB, bss_eval_sources, evaluate_in_parallel, museval_v4
from Models.separation import Separator

log = logging.getLogger(__name__)

METRICS = ("SDR", "SIR", "SAR")
RELATIVE_METRICS = {"NSDR": "SDR", "NSIR": "SIR"}  # improvement over the unprocessed mixture
SILENCE_ENERGY = 1e-8  # mean squared amplitude below which a reference counts as silent


def _audible(references: dict[str, np.ndarray]) -> list[str]:
    return [name for name, reference in references.items() if np.mean(reference ** 2) > SILENCE_ENERGY]


def _named(scores, names: list[str], with_sir: bool) -> dict[str, dict]:
    """(sdr, sir, sar) arrays to {source: {metric: dB}}. With a single audible source there is
    no interference to measure, so SIR is left out."""
    metrics = METRICS if with_sir else ("SDR", "SAR")
    return {name: {metric: float(scores[METRICS.index(metric)][position]) for metric in metrics}
            for position, name in enumerate(names)}


def _record(result: dict, name: str, estimated: dict[str, float], unprocessed: dict[str, float]) -> None:
    """The finite scores of source `name` into `result[name]`, with NSDR and NSIR; every score
    that cannot be defined goes to `result["undefined"][name]` with its reason instead."""
    values, undefined = {}, {}
    for metric, value in estimated.items():
        if math.isfinite(value):
            values[metric] = value
        else:
            undefined[metric] = (f"{value} dB: the error energy it divides by vanished to rounding, or no part of "
                                 "the song could be scored")
    for relative, metric in RELATIVE_METRICS.items():
        if metric not in estimated:
            continue
        if not unprocessed[metric] < ROUNDING_NOISE_DB:
            undefined[relative] = (f"the unprocessed mixture equals this source's reference (its {metric} is "
                                   f"{unprocessed[metric]:.0f} dB, rounding noise), so there is no baseline to "
                                   "improve on")
        elif metric in values:
            values[relative] = values[metric] - unprocessed[metric]
        else:
            undefined[relative] = f"{metric} is undefined"
    result[name] = values
    if undefined:
        result.setdefault("undefined", {})[name] = undefined


def bss_scores(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> dict[str, dict]:
    """SDR/SIR/SAR per audible source, in the references' order, without permutation."""
    audible = _audible(references)
    if not audible:
        return {}
    return _named(bss_eval_sources(np.stack([references[n] for n in audible]),
                                   np.stack([estimates[n] for n in audible])), audible, len(audible) > 1)


PROTOCOLS = ("bss_eval_v3", "museval_v4")


def evaluate_tracks(separator: Separator, tracks, window_frames: int | None = None,
                    workers: int | None = None, protocol: str = "bss_eval_v3") -> list[dict]:
    """Scores of every track: {"track", "database", "silent": [...], "failed": [...],
    source: {SDR, ..., NSDR, NSIR}, and "undefined": {source: {metric: reason}} if any}.

    Songs are separated one after the other; the metrics of all of them (separation and the
    unprocessed-mixture baseline) are then computed in parallel across cores. "bss_eval_v3"
    scores whole songs (the paper); "museval_v4" gives each source the median of its 1 s windows.
    A silent estimate of an audible source is a failed separation: it is listed under "failed"
    and scores FAILED_SCORE_DB in every metric, so that it counts against the model."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Config key `protocol` must be one of {PROTOCOLS}, got {protocol!r}.")
    settings, source_names = separator.settings, separator.source_names
    score = bss_eval_sources if protocol == "bss_eval_v3" else functools.partial(museval_v4,
                                                                                 window=settings.sample_rate)
    results, jobs, scored_per_track = [], [], []
    for track in tracks:
        if set(track.sources) != set(source_names):
            raise ValueError(f"'{separator.path}' separates {list(source_names)}, but track '{track.name}' of the "
                             f"evaluation data has the sources {list(track.sources)}.")
        signals = [audio.read(sample, sample_rate=settings.sample_rate, mono=True)
                   for sample in (track.mixture, *(track.sources[name] for name in source_names))]
        length = min(len(signal) for signal in signals)
        if any(len(signal) != length for signal in signals):
            log.warning("Track '%s': mixture and references differ in length (%s samples); scoring the first %d",
                        track.name, ", ".join(str(len(signal)) for signal in signals), length)
        mixture = signals[0][:length]
        references = {name: signal[:length] for name, signal in zip(source_names, signals[1:])}
        estimates = separator.waveform(mixture, window_frames)
        audible = _audible(references)
        failed = [name for name in audible if not np.any(estimates[name])]
        scored = [name for name in audible if name not in failed]
        results.append({"track": track.name, "database": track.database,
                        "silent": [name for name in source_names if name not in audible], "failed": failed})
        scored_per_track.append(scored)
        if audible:
            # The estimates scored come first; every audible reference counts as an interferer.
            target = np.stack([references[name] for name in scored + failed])
            if scored:
                jobs.append((target, np.stack([estimates[name] for name in scored])))
            jobs.append((target, np.stack([mixture] * len(audible))))
    scores = iter(evaluate_in_parallel(jobs, workers, score=score))
    for result, scored in zip(results, scored_per_track):
        order = scored + result["failed"]
        if not order:
            continue
        with_sir = len(order) > 1
        estimated = _named(next(scores), scored, with_sir) if scored else {}
        estimated.update({name: dict.fromkeys(METRICS if with_sir else ("SDR", "SAR"), FAILED_SCORE_DB)
                          for name in result["failed"]})
        unprocessed = _named(next(scores), order, with_sir)
        for name in order:
            _record(result, name, estimated[name], unprocessed[name])
    return results


def summarise(results: list[dict], source_names: tuple[str, ...]) -> dict:
    """Per source: "tracks" scored (failed ones included), "failed", and the mean, median and
    count of every metric over the tracks where it is defined."""
    summary = {}
    for name in source_names:
        scored = [result[name] for result in results if name in result]
        summary[name] = {"tracks": len(scored), "failed": sum(name in result.get("failed", ()) for result in results)}
        for metric in (*METRICS, *RELATIVE_METRICS):
            values = [scores[metric] for scores in scored if metric in scores]
            if values:
                summary[name].update({f"mean_{metric}": float(np.mean(values)),
                                      f"median_{metric}": float(np.median(values)), f"count_{metric}": len(values)})
    return summary


def median_text(summary: dict, metric: str = "SDR") -> str:
    """'5.73 dB over 7 songs, 1 failed' for a source's entry of `summarise`."""
    if f"median_{metric}" not in summary:
        return f"{metric} undefined on all {summary['tracks']} songs"
    count = summary[f"count_{metric}"]
    failed = f", {summary['failed']} failed (silent estimate, scored {FAILED_SCORE_DB:g} dB)" \
        if summary["failed"] else ""
    return f"{metric} {summary[f'median_{metric}']:.2f} dB over {count} songs{failed}"


def flat_result(summary: dict) -> dict:
    """A `summarise` summary as a Sacred result: each source's medians, their counts and its
    failed songs, as "<source>_<key>"."""
    return {f"{source}_{key}": value for source, entry in summary.items()
            for key, value in entry.items() if key.startswith(("median_", "count_")) or key == "failed"}


def summarise_per_database(results: list[dict], source_names: tuple[str, ...]) -> dict:
    """`summarise` for every data set, and for all of them under "all"."""
    databases = sorted({result["database"] for result in results})
    return {"all": summarise(results, source_names),
            **{database: summarise([r for r in results if r["database"] == database], source_names)
               for database in databases}}
