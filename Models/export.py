"""Exporting a trained separator's network so that it runs without this project.

    python Evaluate.py export with checkpoint=checkpoints/<run> format=onnx output_dir=exported

writes a folder that separates WAV files on its own (README, "Export a trained separator"):

    saved_model/ | separator.tflite | separator.onnx   the network, in the format asked for
    separator.json          the sidecar: everything that turns audio into the network's input
                            and its outputs back into audio (`sidecar` below)
    separate_exported.py    the standalone separation script (numpy, soundfile and the runtime)
    postfilter.py           the numpy post-filters that script applies (Models/postfilter.py)

The network is the spectrogram core: log1p magnitude windows in, per-source log1p magnitudes
out, with ONE fixed input signature, `log_mixture` float32 (batch, input_bins, input_frames, 1):
`batch` mono windows (the channels of a file are separate windows). Static shapes let the
converters and runtimes specialise every kernel, and the sidecar says how to cut a spectrogram
into such windows (the windowing of Models/windowing.py). The outputs are one tensor per
source, named by the source (batch, output_bins, output_frames, 1), of which the first
num_bins bins and `step` frames of each window are the estimate.
"""
from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
from dataclasses import replace

from Datasets.atomic import check_folder_creatable
from Models import postfilter as postfilter_module
from Models.checkpoint import CheckpointError, load_separator, read_checkpoint

FORMATS = ("saved_model", "tflite", "onnx")
MODEL_FILES = {"saved_model": "saved_model", "tflite": "separator.tflite", "onnx": "separator.onnx"}
# Python modules each format's conversion needs beyond tensorflow and keras -> the pip package
CONVERTERS = {"onnx": {"tf2onnx": "tf2onnx", "onnx": "onnx"}}
SIDECAR = "separator.json"
SCRIPT = "separate_exported.py"
SIDECAR_VERSION = 1  # separate_exported.py refuses sidecars of another version
INPUT_NAME = "log_mixture"


def check_format(format: str) -> None:
    """An unknown format, or one whose converter is not installed, before any work is done."""
    if format not in FORMATS:
        raise ValueError(f"Config key `format`: unknown export format {format!r}; choose one of {list(FORMATS)}.")
    for module, package in CONVERTERS.get(format, {}).items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(f"Exporting to {format} needs the `{package}` package, which is not installed here: "
                              f"pip install {' '.join(CONVERTERS[format].values())} (or pip install '.[export]'), "
                              f"or choose another format of {list(FORMATS)}.") from error


def export_checkpoint(checkpoint: str, output_dir: str, format: str, postfilter=None, overwrite: bool = False,
                      window_frames: int | None = None) -> str:
    """`export_separator` for the separator a checkpoint holds; `postfilter` (a PostFilter)
    becomes the sidecar's default, where given."""
    check_format(format)  # before the checkpoint is read and its network built
    path, state = read_checkpoint(checkpoint)
    if state.get("method") == "weak_label":
        raise CheckpointError(f"'{path}' holds a weak-label model; export covers separators only (runs trained "
                              "with method=adversarial). Separate with it through `python Evaluate.py separate`.")
    separator = load_separator(os.path.abspath(path))
    if postfilter is not None:
        separator = replace(separator, postfilter=postfilter)
    return export_separator(separator, output_dir, format, overwrite, window_frames)


def export_separator(separator, output_dir: str, format: str, overwrite: bool = False,
                     window_frames: int | None = None, batch: int | None = None) -> str:
    """Writes the export folder `output_dir` (see the module's docstring) and returns it.

    The window is the engine's choice for one channel (`Separator.window_shape(1)`: the longest
    that the activation budget allows, and as many per call as fit), or `window_frames` output
    frames (rounded down to the geometry's grid) and `batch` windows per call, 1 unless given.
    The folder is written under a temporary name beside `output_dir` and renamed when
    complete; an existing, non-empty `output_dir` is replaced only with `overwrite`."""
    check_format(format)
    check_folder_creatable(output_dir, "output_dir")
    _refuse_existing(output_dir, overwrite)
    step, positions = separator.window_shape(1)
    if window_frames is not None:
        grid = separator.geometry.grid
        step, positions = max(window_frames // grid, 1) * grid, 1
    batch = batch or positions
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{os.path.basename(os.path.abspath(output_dir))}-{secrets.token_hex(4)}.partial")
    os.makedirs(temporary)
    try:
        _write_network(separator.model, os.path.join(temporary, MODEL_FILES[format]), format,
                       [batch, *_input_shape(separator, step)])
        with open(os.path.join(temporary, SIDECAR), "w") as handle:
            json.dump(sidecar(separator, format, step, batch), handle, indent=2)
        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), SCRIPT),
                        os.path.join(temporary, SCRIPT))
        shutil.copyfile(postfilter_module.__file__, os.path.join(temporary, "postfilter.py"))
        _publish(temporary, output_dir, overwrite)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output_dir


def _input_shape(separator, step: int) -> list[int]:
    shapes = separator.geometry.windows(step)
    return [shapes.input_bins, shapes.input_frames, 1]


def _write_network(model, path: str, format: str, input_shape: list[int]) -> None:
    import tensorflow as tf

    signature = [tf.TensorSpec(input_shape, tf.float32, name=INPUT_NAME)]
    if format == "saved_model":
        model.export(path, format="tf_saved_model", input_signature=signature, verbose=False)
    elif format == "tflite":
        # TFLite's built-in operations only: the file then runs on the small ai-edge-litert
        # runtime too, which has no Flex delegate for TensorFlow operations
        model.export(path, format="litert", input_signature=signature, verbose=False,
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    else:
        model.export(path, format="onnx", input_signature=signature, verbose=False)


def sidecar(separator, format: str, step: int, batch: int) -> dict:
    """What separate_exported.py (or a reimplementation in another language) needs besides the
    network: the STFT, the window geometry, the outputs and the default post-filter."""
    settings, shapes = separator.settings, separator.geometry.windows(step)
    return {
        "version": SIDECAR_VERSION, "format": format, "file": MODEL_FILES[format],
        "checkpoint": separator.path,
        # the STFT: centred (reflect-padded by n_fft // 2), periodic Hann window, log1p magnitudes
        "sample_rate": settings.sample_rate, "n_fft": settings.n_fft, "hop": settings.hop, "window": "hann",
        "num_bins": settings.num_bins,
        # the network's input: `batch` windows of `input_frames` frames, advancing by `step`;
        # the spectrogram's bins start at bin `input_bins_below`, `context_frames` zero frames precede its first frame
        "input_name": INPUT_NAME, "batch": batch, "input_bins": shapes.input_bins,
        "input_bins_below": shapes.input_bins_below, "input_frames": shapes.input_frames,
        "context_frames": shapes.context_frames, "step": step,
        # its outputs: one per source, of which bins [0, num_bins) and frames [0, step) are kept
        "output_bins": shapes.output_bins, "output_frames": shapes.output_frames,
        "source_names": list(separator.source_names),
        "postfilter": {"name": separator.postfilter.name, "softmask_power": separator.postfilter.softmask_power,
                       "wiener_iterations": separator.postfilter.wiener_iterations,
                       "block_frames": postfilter_module.BLOCK_FRAMES},
    }


def _refuse_existing(output_dir: str, overwrite: bool) -> None:
    if not overwrite and os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"'{output_dir}' already exists and is not empty; pass overwrite=True to replace it, "
                              "or choose another output_dir.")


def _publish(temporary: str, output_dir: str, overwrite: bool) -> None:
    """The complete folder in place of `output_dir`; an earlier one is moved aside first and
    removed only once the new one is there."""
    _refuse_existing(output_dir, overwrite)
    if not os.path.exists(output_dir):
        os.rename(temporary, output_dir)
        return
    earlier = f"{temporary}.earlier"
    os.rename(output_dir, earlier)
    os.rename(temporary, output_dir)
    shutil.rmtree(earlier)
