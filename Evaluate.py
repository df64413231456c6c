"""Test-set BSS evaluation of a trained separator (SPEC section 5, the paper's protocol).

    python Evaluate.py with checkpoint=checkpoints/<run name>        # score the test partition
    python Evaluate.py separate with checkpoint=... 'inputs=["song.mp3", "folder/"]' output_dir=out
    python Evaluate.py compare with runs=runs                        # tabulate training runs

Each test song is separated whole (mixture phase, inverse STFT) at the model's sample rate
and scored with BSS Eval v3 `bss_eval_sources`, references [accompaniment, voice] and no
permutation (Models/bss.py: mir_eval's numbers to within 1e-8 dB, about ten times faster).
NSDR and NSIR subtract the scores of the unprocessed mixture used as the
estimate of every source. A silent reference (an instrumental song's voice) cannot be
scored: that source is left out of the song's scores and flagged. A score that cannot be
defined (no NSDR where the mixture is the reference) is left out and listed with its reason;
a silent estimate of an audible source is a failure and scores FAILED_SCORE_DB. Every median
comes with the number of songs behind it.

`protocol=museval_v4` scores the same separations the modern way instead (SiSEC 2018, MUSDB
tables): museval's BSS Eval v4 over 1 s windows, the median over windows per song, then the
median over songs.

A checkpoint of the weak-label method is scored on its test clips instead: tagging metrics
and per-class event SDR/SIR/SAR beside the no-separation and ideal-binary-mask baselines
(Models/event_separation.py); `separate` then writes one file per class, silent where the
model does not detect it.

Training.py calls `evaluate_tracks` on the best model of each phase.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import pickle

import numpy as np
from sacred import SETTINGS, Experiment

import tracking.observers

from Datasets import audio, features
from Datasets.atomic import atomic_open, check_folder_creatable
from Datasets.features import SpectrogramSettings
from Models.bss import FAILED_SCORE_DB, ROUNDING_NOISE_DB, bss_eval_sources, evaluate_in_parallel, museval_v4
from Models.inference import separate_log_spectrogram
from Models.shapes import UnetShapes

log = logging.getLogger(__name__)

METRICS = ("SDR", "SIR", "SAR")
RELATIVE_METRICS = {"NSDR": "SDR", "NSIR": "SIR"}  # improvement over the unprocessed mixture
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


def evaluate_tracks(separator, tracks, settings: SpectrogramSettings, shapes: UnetShapes, num_layers: int,
                    source_names: tuple[str, ...], window_frames: int = 2048, workers: int | None = None,
                    protocol: str = "bss_eval_v3") -> list[dict]:
    """Scores of every track: {"track", "database", "silent": [...], "failed": [...],
    source: {SDR, ..., NSDR, NSIR}, and "undefined": {source: {metric: reason}} if any}.

    Songs are separated one after the other; the metrics of all of them (separation and the
    unprocessed-mixture baseline) are then computed in parallel across cores. "bss_eval_v3"
    scores whole songs (the paper); "museval_v4" gives each source the median of its 1 s windows.
    A silent estimate of an audible source is a failed separation: it is listed under "failed"
    and scores FAILED_SCORE_DB in every metric, so that it counts against the model."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Config key `protocol` must be one of {PROTOCOLS}, got {protocol!r}.")
    score = bss_eval_sources if protocol == "bss_eval_v3" else functools.partial(museval_v4,
                                                                                 window=settings.sample_rate)
    results, jobs, scored_per_track = [], [], []
    for track in tracks:
        signals = [audio.read(sample, sample_rate=settings.sample_rate, mono=True)
                   for sample in (track.mixture, *track.sources)]
        length = min(len(signal) for signal in signals)
        if any(len(signal) != length for signal in signals):
            log.warning("Track '%s': mixture and references differ in length (%s samples); scoring the first %d",
                        track.name, ", ".join(str(len(signal)) for signal in signals), length)
        mixture = signals[0][:length]
        references = {name: signal[:length] for name, signal in zip(source_names, signals[1:])}
        estimates = separate_audio(separator, mixture, settings, shapes, num_layers, window_frames)
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


def summarise_per_database(results: list[dict], source_names: tuple[str, ...]) -> dict:
    """`summarise` for every data set, and for all of them under "all"."""
    databases = sorted({result["database"] for result in results})
    return {"all": summarise(results, source_names),
            **{database: summarise([r for r in results if r["database"] == database], source_names)
               for database in databases}}


def _write_atomically(path: str, payload: dict) -> None:
    """JSON or pickle by the file's extension, through a temporary file and a rename."""
    binary = path.endswith(".pkl")
    with atomic_open(path, "wb" if binary else "w") as output:
        # allow_nan=False: an infinity or NaN that slipped past the scoring is a bug, never a score
        pickle.dump(payload, output) if binary else json.dump(payload, output, indent=2, allow_nan=False)


def _log_to_tensorboard(folder: str, summary: dict, partition: str) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(folder).as_default(step=0):
        for database, sources in summary.items():
            for source, values in sources.items():
                for key, value in values.items():
                    if "median_" in key or "mean_" in key:
                        tf.summary.scalar(f"{partition}/{database}/{source}/{key}", value)


def check_config(config: dict, command: str) -> None:
    """Rejects settings that cannot work, before Sacred opens a run."""
    if command == "main":
        if not config["checkpoint"]:
            raise ValueError("Set `checkpoint` to a run's checkpoint folder or file: "
                             "python Evaluate.py with checkpoint=checkpoints/<run name>")
        if config["partition"] not in ("test", "valid"):
            raise ValueError(f"Config key `partition` must be 'test' or 'valid', got {config['partition']!r}.")
        if config["protocol"] not in PROTOCOLS:
            raise ValueError(f"Config key `protocol` must be one of {PROTOCOLS}, got {config['protocol']!r}.")
    if command == "separate" and not (config["checkpoint"] and config["inputs"] and config["output_dir"]):
        raise ValueError("`separate` needs checkpoint, inputs and output_dir: python Evaluate.py separate with "
                         "checkpoint=checkpoints/<run name> 'inputs=[\"song.mp3\"]' output_dir=separated")
    if command in ("main", "separate") and config["output_dir"]:
        check_folder_creatable(config["output_dir"], "output_dir")


SETTINGS.CAPTURE_MODE = "sys"
ex = Experiment("evaluation")
tracking.observers.install(ex, commands=("main",), check_config=check_config)


@ex.config
def config():
    checkpoint = None  # a run's checkpoint folder (<model_base_dir>/<run name>) or one .pkl in it
    partition = "test"  # "test" or "valid"
    protocol = "bss_eval_v3"  # "bss_eval_v3" (the paper: whole songs) or "museval_v4" (1 s windows, medians)
    mask_exponent = None  # weak-label checkpoints: replaces the mask exponent they were trained with
    window_frames = 2048  # output frames per separator call on whole songs
    output_dir = None  # results folder (default <checkpoint folder>/evaluation); for `separate`: audio folder
    overwrite = False  # replace earlier results or separated files in output_dir
    skip_existing = False  # for `separate`: leave out inputs whose outputs all exist (finish an earlier run)
    inputs = []  # for `separate`: audio files (wav, flac, ogg, mp3) or folders of them
    run_dir = "runs"  # Sacred file observer folder; None for none
    mongo_url = None  # record the evaluation in MongoDB as well
    mongo_fallback_to_files = False  # an unreachable mongo_url or -m server: warn and keep the file observer, not fail
    runs = "runs"  # for `compare`: the file observer folder whose runs to tabulate


def _read_runs(runs_dir: str) -> list[dict]:
    """Sacred file-observer runs: {"id", "status", "config", "result"} each."""
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        folder = os.path.join(runs_dir, name)
        try:
            with open(os.path.join(folder, "run.json")) as handle:
                record = json.load(handle)
            with open(os.path.join(folder, "config.json")) as handle:
                config = json.load(handle)
        except (OSError, ValueError):
            continue  # Sacred's _sources folder, or a run still starting
        runs.append({"id": name, "status": record.get("status", "?"), "config": config,
                     "result": record.get("result") or {}})
    return runs


def _medians(result: dict) -> dict[str, tuple[float, int | str, int]]:
    """SDR medians of a Training.py result with the number of songs (or events) behind each and
    how many of them failed, phase by phase: {"<phase> <source>": (dB, count, failed)}."""
    return {f"{phase} {key[:-len('_median_SDR')]}": (value, scores.get(key.replace("_median_", "_count_"), "?"),
                                                     scores.get(f"{key[:-len('_median_SDR')]}_failed", 0))
            for phase, scores in result.items() if isinstance(scores, dict)
            for key, value in scores.items() if key.endswith("_median_SDR")}


def _median_cell(median: tuple[float, int | str, int] | None) -> str:
    if median is None:
        return "-"
    value, count, failed = median
    return f"{value:.2f} (n={count}{f', {failed} failed' if failed else ''})"


def comparison_table(runs_dir: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the runs in `runs_dir`: the config keys that differ, SDR medians, best first."""
    runs = _read_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"No Sacred runs in '{runs_dir}' (config key `runs`).")
    keys = sorted({key for run in runs for key in run["config"]})
    differing = [key for key in keys if key != "seed" and
                 len({json.dumps(run["config"].get(key), sort_keys=True) for run in runs}) > 1]
    scores = [_medians(run["result"]) for run in runs]
    columns = sorted({column for score in scores for column in score})
    # Rank by the voice of the last phase, the paper's headline figure.
    ranking = next((column for column in ("semi_supervised voice", "supervised voice") if column in columns),
                   columns[0] if columns else None)

    def sort_key(index):
        median = scores[index].get(ranking) if ranking else None
        return (median is None, -median[0] if median else 0.0)

    header = ["run", "status", *differing, *(f"{column} SDR" for column in columns)]
    rows = [[runs[i]["id"], runs[i]["status"], *(json.dumps(runs[i]["config"].get(key)) for key in differing),
             *(_median_cell(scores[i].get(column)) for column in columns)]
            for i in sorted(range(len(runs)), key=sort_key)]
    return header, rows


def compare_runs(runs_dir: str) -> str:
    """`comparison_table` as aligned text."""
    header, rows = comparison_table(runs_dir)
    widths = [max(len(str(row[col])) for row in [header, *rows]) for col in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows])


@ex.command(unobserved=True)
def separate(checkpoint, inputs, output_dir, overwrite, skip_existing, mask_exponent, _log):
    """Writes one WAV per source for every input file, at the input's rate and channel count,
    streaming in blocks so that memory stays flat however long the input. A file that cannot
    be read is named and skipped; the command then exits with status 1 once the others are done."""
    from Models.checkpoint import checkpoint_method, load_event_separator, load_separator
    from Models.event_separation import separate_event_paths
    from Models.streaming import SeparationFailed, separate_paths

    try:
        if checkpoint_method(checkpoint) == "weak_label":
            written = separate_event_paths(load_event_separator(checkpoint, mask_exponent), list(inputs),
                                           output_dir, overwrite, skip_existing)
        else:
            written = separate_paths(load_separator(checkpoint), list(inputs), output_dir, overwrite, skip_existing)
    except SeparationFailed as failure:
        _log.error("%s", failure)
        raise SystemExit(1) from failure
    _log.info("Wrote %d files to %s", len(written), output_dir)
    return written


@ex.command(unobserved=True)
def compare(runs):
    """Tabulates training runs recorded by the file observer, best median SDR first."""
    print(compare_runs(runs))


def _report_paths(checkpoint_path: str, output_dir: str | None, partition: str, overwrite: bool) -> tuple[str, str]:
    """The JSON and pickle report files, refused if they exist and overwrite is off."""
    output_dir = output_dir or os.path.join(os.path.dirname(checkpoint_path), "evaluation")
    name = os.path.splitext(os.path.basename(checkpoint_path))[0]
    json_path, pickle_path = (os.path.join(output_dir, f"{name}_{partition}.{ext}") for ext in ("json", "pkl"))
    if not overwrite and any(os.path.exists(path) for path in (json_path, pickle_path)):
        raise FileExistsError(f"{json_path} exists; pass overwrite=True to replace it, or choose output_dir.")
    return json_path, pickle_path


def _publish(report: dict, json_path: str, pickle_path: str, _run) -> None:
    """The report to both files, the Sacred run (artifacts and info) and TensorBoard."""
    for path in (json_path, pickle_path):
        _write_atomically(path, report)
    _run.add_artifact(json_path)
    _run.add_artifact(pickle_path)
    _log_to_tensorboard(os.path.join(os.path.dirname(json_path), "tensorboard"), report["summary"],
                        report["partition"])
    _run.info["summary"] = report["summary"]


def evaluate_weak_label(checkpoint: str, partition: str, output_dir: str | None, overwrite: bool, _run, _log,
                        mask_exponent: float | None = None) -> dict:
    """Tagging metrics and per-class event separation scores, beside the no-separation and
    ideal-binary-mask baselines, on a split of the clips the model was trained with."""
    from Datasets.weak_label import load_clips
    from Models.checkpoint import load_event_separator
    from Models.event_separation import is_event_result, score_clips

    separator = load_event_separator(checkpoint, mask_exponent)
    json_path, pickle_path = _report_paths(separator.path, output_dir, partition, overwrite)
    if not os.path.isdir(separator.data_folder):
        raise FileNotFoundError(f"The clips '{separator.path}' was trained on are gone from "
                                f"'{separator.data_folder}'; regenerate them with the run's Training.py config.")
    clips = load_clips(separator.data_folder, separator.classes).split(partition)
    events, tagging, summary = score_clips(separator, clips)
    report = {"checkpoint": os.path.abspath(separator.path), "partition": partition,
              "mask_exponent": separator.mask_exponent, "thresholds": separator.thresholds.tolist(), "clips": events,
              "tagging": tagging, "summary": {"events": summary}}
    _publish(report, json_path, pickle_path, _run)
    overall = report["summary"]["events"]["all"]
    _log.info("Results in %s: weighted AUC %.4f; event SDR median %.2f dB (mixture %.2f, ideal binary mask %.2f)",
              json_path, tagging.get("weighted_auc", np.nan), overall.get("separated_median_SDR", np.nan),
              overall.get("mixture_median_SDR", np.nan), overall.get("oracle_ibm_median_SDR", np.nan))
    return {**{key: tagging[key] for key in ("weighted_auc", "mean_average_precision", "mean_eer") if key in tagging},
            **{f"event_{key}": value for key, value in overall.items() if is_event_result(key)}}


@ex.automain
def main(checkpoint, partition, protocol, mask_exponent, window_frames, output_dir, overwrite, _run, _log):
    from Datasets import load_dataset_for
    from Models.checkpoint import checkpoint_method, load_separator

    if checkpoint_method(checkpoint) == "weak_label":
        return evaluate_weak_label(checkpoint, partition, output_dir, overwrite, _run, _log, mask_exponent)
    trained = load_separator(checkpoint)
    json_path, pickle_path = _report_paths(trained.path, output_dir,
                                           partition if protocol == "bss_eval_v3" else f"{partition}_{protocol}",
                                           overwrite)
    tracks = getattr(load_dataset_for(trained.config), partition)
    scores = evaluate_tracks(trained.model, tracks, trained.settings, trained.shapes, trained.num_layers,
                             trained.source_names, window_frames, protocol=protocol)
    report = {"checkpoint": os.path.abspath(trained.path), "partition": partition, "protocol": protocol,
              "tracks": scores,
              "summary": summarise_per_database(scores, trained.source_names)}
    _publish(report, json_path, pickle_path, _run)
    _log.info("Results in %s", json_path)
    for source, summary in report["summary"]["all"].items():
        _log.info("%s: median %s; median %s", source, median_text(summary), median_text(summary, "NSDR"))
    return {f"{source}_{key}": value for source, summary in report["summary"]["all"].items()
            for key, value in summary.items() if key.startswith(("median_", "count_")) or key == "failed"}
