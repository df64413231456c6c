"""Commands over trained models: test-set evaluation, separating recordings, comparing runs.

    python Evaluate.py with checkpoint=checkpoints/<run name>        # score the test partition
    python Evaluate.py separate with checkpoint=... 'inputs=["song.mp3", "folder/"]' output_dir=out
    python Evaluate.py compare with runs=runs                        # tabulate training runs
    python Evaluate.py export with checkpoint=... format=onnx output_dir=exported   # Models/export.py

The scoring itself is `Models/scoring.py` (the paper's BSS Eval protocol, or museval's v4 with
`protocol=museval_v4`) for separators and `Models/weak_label/separation.py` for weak-label models
(tagging metrics and per-class event SDR/SIR/SAR beside the no-separation and
ideal-binary-mask baselines). `separate` writes one file per source (or class) for every input;
`compare` is `tracking/compare.py`.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, replace

import numpy as np
from sacred import SETTINGS, Experiment

import tracking.observers
from tracking.compare import compare_runs

from Datasets.atomic import atomic_open, check_folder_creatable
from Models.config_checks import require_odd_window
from Models.scoring import PROTOCOLS, evaluate_tracks, flat_result, median_text, summarise_per_database


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
    if command == "export":
        if not (config["checkpoint"] and config["output_dir"]):
            raise ValueError("`export` needs checkpoint and output_dir: python Evaluate.py export with "
                             "checkpoint=checkpoints/<run name> format=onnx output_dir=exported")
        from Models.export import check_format

        check_format(config["format"])
    if command in ("main", "separate", "export") and config["output_dir"]:
        check_folder_creatable(config["output_dir"], "output_dir")
    if command in ("main", "separate", "export"):
        postfilter_for(config, command)
    if config["mask_dilation"] is not None:
        require_odd_window(config, "mask_dilation", "frames, mel bands")
    if config["background_gate_db"] is not None:
        from Models.weak_label.separation import check_background_gate

        check_background_gate(config["background_gate_db"])
    from Models.weak_label.detection import check_detection_keys

    check_detection_keys(config)


def postfilter_for(config: dict, command: str):
    """The PostFilter of the config's keys; `postfilter=None` is the command's own default."""
    from Models.postfilter import DEFAULT_POSTFILTER, PostFilter

    name = config["postfilter"] or ("none" if command == "main" else DEFAULT_POSTFILTER)
    return PostFilter(name, config["softmask_power"], config["wiener_iterations"])


SETTINGS.CAPTURE_MODE = "sys"
ex = Experiment("evaluation")
tracking.observers.install(ex, commands=("main",), check_config=check_config)


@ex.config
def config():
    checkpoint = None  # a run's checkpoint folder (<model_base_dir>/<run name>) or one .pkl in it
    partition = "test"  # "test" or "valid"
    protocol = "bss_eval_v3"  # "bss_eval_v3" (the paper: whole songs) or "museval_v4" (1 s windows, medians)
    mask_exponent = None  # weak-label checkpoints: replaces the mask exponent they were trained with
    mask_dilation = None  # weak-label checkpoints: replaces their mask dilation, [frames, mel bands]
    background_gate_db = None  # weak-label checkpoints: replaces their background gate (0: none)
    # weak-label checkpoints: which classes count as present, settled anew on the run's validation clips with these
    # in place of the run's own (as Training.py's keys of the same names; None: as trained)
    clip_statistics_weight = None
    detection_threshold = None
    detection_false_alarm_rate = None
    window_frames = None  # output frames per separator window on whole songs; None: the engine's choice
    postfilter = None  # "none" (the paper's raw magnitudes), "softmask" or "wiener"; None: none when scoring
    #                    (the paper's protocol), softmask for `separate` (the best on the demo's validation songs)
    softmask_power = 1.0  # postfilter=softmask: each source gets |est|^p / sum_k |est_k|^p of the mixture
    wiener_iterations = 1  # postfilter=wiener: EM rounds over the channels (Open-Unmix's default)
    output_dir = None  # results folder (default <checkpoint folder>/evaluation); for `separate`: audio folder
    overwrite = False  # replace earlier results or separated files in output_dir
    skip_existing = False  # for `separate`: leave out inputs whose outputs all exist (finish an earlier run)
    inputs = []  # for `separate`: audio files (wav, flac, ogg, mp3) or folders of them
    run_dir = "runs"  # Sacred file observer folder; None for none
    mongo_url = None  # record the evaluation in MongoDB as well
    mongo_fallback_to_files = False  # an unreachable mongo_url or -m server: warn and keep the file observer, not fail
    runs = "runs"  # for `compare`: the file observer folder whose runs to tabulate
    format = "saved_model"  # for `export`: "saved_model", "tflite" or "onnx" (needs tf2onnx: pip install '.[export]')


def _load_trained(config: dict):
    """The checkpoint's separation engine, or its event separator with the config's mask
    settings, and the detection keys the config sets (Models/weak_label/detection.py)."""
    from Models.checkpoint import load_trained
    from Models.separation import Separator
    from Models.weak_label.detection import DETECTION_KEYS

    trained = load_trained(config["checkpoint"], config["mask_exponent"], config["mask_dilation"],
                           config["background_gate_db"])
    detection = {key: config[key] for key in DETECTION_KEYS if config[key] is not None}
    if detection and isinstance(trained, Separator):
        raise ValueError(f"Config key(s) {', '.join(detection)} set, but '{trained.path}' holds a separator, which "
                         "detects nothing: they are for weak-label checkpoints.")
    return trained, detection


def load_configured(config: dict):
    """`_load_trained`'s model, with detection settled anew where the config sets a detection key."""
    from Models.weak_label.detection import resettled

    trained, detection = _load_trained(config)
    return resettled(trained, detection) if detection else trained


@ex.command(unobserved=True)
def separate(_config, inputs, output_dir, overwrite, skip_existing, _log):
    """Writes one WAV per source for every input file, at the input's rate and channel count,
    streaming in blocks so that memory stays flat however long the input. A file that cannot
    be read is named and skipped; the command then exits with status 1 once the others are done.
    The `separate` console command (pip install .) does the same."""
    from Models.cli import separate_inputs
    from Models.separation import Separator
    from Models.streaming import SeparationFailed

    trained = load_configured(_config)
    if isinstance(trained, Separator):
        trained = replace(trained, postfilter=postfilter_for(_config, "separate"))
    try:
        written = separate_inputs(trained, list(inputs), output_dir, overwrite, skip_existing)
    except SeparationFailed as failure:
        _log.error("%s", failure)
        raise SystemExit(1) from failure
    _log.info("Wrote %d files to %s", len(written), output_dir)
    return written


@ex.command(unobserved=True)
def export(_config, checkpoint, format, output_dir, overwrite, window_frames, _log):
    """Writes a separator's network in `format` to output_dir, with its JSON sidecar and a
    standalone script that separates WAV files with that folder alone (Models/export.py). The
    sidecar's default post-filter is `separate`'s; `window_frames` fixes the window length
    (then one window per call) instead of the engine's choice."""
    from Models.export import export_checkpoint

    folder = export_checkpoint(checkpoint, output_dir, format, postfilter_for(_config, "export"), overwrite,
                               window_frames)
    _log.info("Exported to %s: python %s/separate_exported.py %s song.wav -o separated", folder, folder, folder)
    return folder


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


def evaluate_weak_label(separator, detection: dict, partition: str, output_dir: str | None, overwrite: bool,
                        _run, _log) -> dict:
    """Tagging metrics and per-class event separation scores of a weak-label model (an
    EventSeparator), beside the no-separation and ideal-binary-mask baselines, on a split of
    the clips it was trained with; beside its tagging metrics those of the linear floor
    trained on the same training clips. With `detection` (keys of DETECTION_KEYS), which
    classes count as present is first settled anew on the validation split, with the same floor."""
    from Datasets.weak_label import load_clips
    from Models.weak_label.detection import resettled
    from Models.weak_label.linear_floor import clips_floor, clips_floor_tagging
    from Models.weak_label.separation import is_event_result, score_clips

    json_path, pickle_path = _report_paths(separator.path, output_dir, partition, overwrite)
    if not os.path.isdir(separator.data_folder):
        raise FileNotFoundError(f"The clips '{separator.path}' was trained on are gone from "
                                f"'{separator.data_folder}'; regenerate them with the run's Training.py config.")
    all_clips = load_clips(separator.data_folder, separator.classes)
    # the linear floor, trained on the model's training clips (Models/weak_label/linear_floor.py)
    floor_model = clips_floor(all_clips.split("train"), separator.settings)
    if detection:
        separator = resettled(separator, detection, all_clips, floor_model)
    clips = all_clips.split(partition)
    events, tagging, summary = score_clips(separator, clips)
    floor = clips_floor_tagging(floor_model, clips, separator.settings, separator.classes)
    report = {"checkpoint": os.path.abspath(separator.path), "partition": partition,
              "mask_exponent": separator.mask_exponent, "mask_dilation": list(separator.mask_dilation),
              "background_gate_db": separator.background_gate_db,
              "thresholds": separator.thresholds.tolist(),
              "clip_statistics_weight": separator.clip_statistics_weight, "clips": events,
              "tagging": tagging, "linear_floor": floor, "summary": {"events": summary}}
    _publish(report, json_path, pickle_path, _run)
    overall = report["summary"]["events"]["all"]
    if tagging["undefined"]:
        _log.warning("Class(es) %s are in no %s clip or in all of them: their ROC AUC is undefined and left out "
                     "of the weighted average.", ", ".join(tagging["undefined"]), partition)
    masks_alone = tagging.get("masks", tagging)  # where the clip statistics are fused, "masks" has the masks' own
    _log.info("Results in %s: weighted AUC %.4f (masks alone %.4f), mAP %.4f (linear floor: %.4f, %.4f); event SDR "
              "median %.2f dB (mixture %.2f, ideal binary mask %.2f), %d of %d events missed, %d false alarms",
              json_path, tagging.get("weighted_auc", np.nan), masks_alone.get("weighted_auc", np.nan),
              tagging.get("mean_average_precision", np.nan),
              floor.get("weighted_auc", np.nan), floor.get("mean_average_precision", np.nan),
              overall.get("separated_median_SDR", np.nan), overall.get("mixture_median_SDR", np.nan),
              overall.get("oracle_ibm_median_SDR", np.nan), overall["missed"], overall["events"],
              overall["false_alarms"])
    return {**{key: tagging[key] for key in ("weighted_auc", "mean_average_precision", "mean_eer") if key in tagging},
            **({"masks_weighted_auc": masks_alone["weighted_auc"]} if "weighted_auc" in masks_alone else {}),
            **{f"floor_{key}": floor[key] for key in ("weighted_auc", "mean_average_precision") if key in floor},
            **{f"event_{key}": value for key, value in overall.items() if is_event_result(key)}}


@ex.automain
def main(_config, partition, protocol, window_frames, output_dir, overwrite, _run, _log):
    from Datasets import load_dataset_for
    from Models.separation import Separator

    separator, detection = _load_trained(_config)
    if not isinstance(separator, Separator):
        return evaluate_weak_label(separator, detection, partition, output_dir, overwrite, _run, _log)
    separator = replace(separator, postfilter=postfilter_for(_config, "main"))
    json_path, pickle_path = _report_paths(separator.path, output_dir,
                                           partition if protocol == "bss_eval_v3" else f"{partition}_{protocol}",
                                           overwrite)
    tracks = getattr(load_dataset_for(separator.config), partition)
    scores = evaluate_tracks(separator, tracks, window_frames, protocol=protocol)
    report = {"checkpoint": os.path.abspath(separator.path), "partition": partition, "protocol": protocol,
              "postfilter": asdict(separator.postfilter), "tracks": scores,
              "summary": summarise_per_database(scores, separator.source_names)}
    _publish(report, json_path, pickle_path, _run)
    _log.info("Results in %s", json_path)
    for source, summary in report["summary"]["all"].items():
        _log.info("%s: median %s; median %s", source, median_text(summary), median_text(summary, "NSDR"))
    return flat_result(report["summary"]["all"])
