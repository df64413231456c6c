"""Separate WAV files with an exported separator, without the project that trained it.

    python separate_exported.py EXPORT_DIR song.wav [more.wav ...] -o OUT
        [--postfilter none|softmask|wiener] [--wiener-iterations N] [--softmask-power P] [--overwrite]

EXPORT_DIR is a folder written by `python Evaluate.py export`: the network (saved_model/,
separator.tflite or separator.onnx), its sidecar separator.json, this script and postfilter.py.
Nothing else is needed but numpy, soundfile and the runtime of the network's format:

    saved_model  tensorflow (or tensorflow-cpu)
    tflite       ai-edge-litert, or tensorflow (its tf.lite.Interpreter)
    onnx         onnxruntime

Every input becomes OUT/<file stem>/<source>.wav: 32-bit float, the input's channels and length.
Inputs must be at the model's sample rate (the sidecar's `sample_rate`); resample others first,
e.g. `sox song.mp3 -r 8192 song.wav` or `ffmpeg -i song.mp3 -ar 8192 song.wav`. The post-filter
defaults to the sidecar's. A file is held in memory whole (the project's own `separate`
command streams); one that cannot be read is named and skipped, and the script then exits 1.

The steps are those of the project's `separate`, whose outputs these equal to 1e-4:
1. a centred STFT of each channel: reflect-padded by n_fft // 2 at both ends, periodic Hann
   window, `hop`; the network sees log1p of its magnitudes;
2. windows: the `num_bins` bins placed from bin `input_bins_below` of `input_bins` zero bins,
   `context_frames` zero frames before the first frame and zeros after the last; windows of
   `input_frames` frames advancing by `step`, `batch` per network call (the channels' windows
   one after another, the last call filled up with silent windows);
3. of each window's output, bins [0, num_bins) and frames [0, step), laid end to end, frames
   past the signal's dropped; magnitudes are expm1 of those, clamped at 0;
4. the post-filter (postfilter.py) over all channels together: Wiener filtering uses the
   channels' covariance;
5. the inverse STFT: the windowed inverse FFTs overlap-added and divided by the overlap-added
   squared window, without the first n_fft // 2 samples, cut or zero-padded to the input's length.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import numpy as np
import soundfile

from postfilter import POSTFILTERS, PostFilter  # the numpy-only copy beside this script

SIDECAR = "separator.json"
SIDECAR_VERSION = 1


def read_sidecar(folder: str) -> dict:
    path = os.path.join(folder, SIDECAR)
    if not os.path.isfile(path):
        raise SystemExit(f"'{folder}' is not an exported separator: it has no {SIDECAR}. Export one with "
                         "`python Evaluate.py export with checkpoint=... format=... output_dir=...`.")
    with open(path) as handle:
        sidecar = json.load(handle)
    if sidecar.get("version") != SIDECAR_VERSION:
        raise SystemExit(f"{path} is of sidecar version {sidecar.get('version')}; this script reads version "
                         f"{SIDECAR_VERSION}. Use the separate_exported.py written beside it.")
    return sidecar


def _runtime(module: str, package: str, format: str):
    try:
        return __import__(module)
    except ImportError:
        raise SystemExit(f"Running a {format} export needs {package}: pip install {package}") from None


def load_network(folder: str, sidecar: dict) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The exported network as a function: float32 windows (batch, input_bins, input_frames, 1)
    -> {source: (batch, output_bins, output_frames, 1)}."""
    path, format = os.path.join(folder, sidecar["file"]), sidecar["format"]
    names, input_name = sidecar["source_names"], sidecar["input_name"]
    if format == "onnx":
        onnxruntime = _runtime("onnxruntime", "onnxruntime", format)
        session = onnxruntime.InferenceSession(path, providers=onnxruntime.get_available_providers())
        return lambda windows: dict(zip(names, session.run(names, {input_name: windows})))
    if format == "tflite":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = _runtime("tensorflow", "ai-edge-litert (or tensorflow)", format).lite.Interpreter
        runner = Interpreter(model_path=path).get_signature_runner()
        return lambda windows: runner(**{input_name: windows})
    if format == "saved_model":
        # the loaded object owns the variables: keep it, not only its bound `serve`
        loaded = _runtime("tensorflow", "tensorflow", format).saved_model.load(path)
        return lambda windows: {name: output.numpy() for name, output in loaded.serve(windows).items()}
    raise SystemExit(f"{os.path.join(folder, SIDECAR)}: unknown format {format!r}.")


def hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (scipy's get_window("hann", n_fft), which librosa uses)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def stft(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """float32 samples -> complex64 (n_fft // 2 + 1, frames), centred with reflect padding."""
    padded = np.pad(signal, n_fft // 2, mode="reflect") if len(signal) else np.zeros(n_fft, np.float32)
    count = (len(padded) - n_fft) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:count]
    return np.fft.rfft(frames * hann(n_fft), axis=1).T.astype(np.complex64)


def istft(spectrogram: np.ndarray, hop: int, length: int) -> np.ndarray:
    """Inverse of `stft`: least-squares overlap-add, `length` samples."""
    n_fft = 2 * (spectrogram.shape[0] - 1)
    window = hann(n_fft).astype(np.float32)
    frames = np.fft.irfft(spectrogram, n=n_fft, axis=0).astype(np.float32) * window[:, None]
    span = (frames.shape[1] - 1) * hop + n_fft
    total, window_sum = np.zeros(span, np.float32), np.zeros(span, np.float32)
    for index in range(frames.shape[1]):
        total[index * hop:index * hop + n_fft] += frames[:, index]
        window_sum[index * hop:index * hop + n_fft] += window ** 2
    covered = window_sum > np.finfo(np.float32).tiny
    total[covered] /= window_sum[covered]
    audio = total[n_fft // 2:n_fft // 2 + length]
    return np.pad(audio, (0, length - len(audio)))


def separate_log(network, log_mixture: np.ndarray, sidecar: dict) -> dict[str, np.ndarray]:
    """log1p magnitudes (channels, num_bins, frames) -> {source: log1p estimates, same shape}."""
    channels, bins, frames = log_mixture.shape
    step, batch, context = sidecar["step"], sidecar["batch"], sidecar["context_frames"]
    below, input_frames = sidecar["input_bins_below"], sidecar["input_frames"]
    count = -(-frames // step)  # windows per channel
    padded = np.zeros((channels, sidecar["input_bins"], (count - 1) * step + input_frames), np.float32)
    padded[:, below:below + bins, context:context + frames] = log_mixture
    windows = [padded[channel, :, index * step:index * step + input_frames]
               for channel in range(channels) for index in range(count)]
    windows += [np.zeros_like(windows[0])] * (-len(windows) % batch)
    outputs = {name: [] for name in sidecar["source_names"]}
    for start in range(0, len(windows), batch):
        estimates = network(np.stack(windows[start:start + batch])[..., None])
        for name in outputs:
            outputs[name].append(np.asarray(estimates[name])[:, :bins, :step, 0])
    return {name: np.concatenate(parts)[:channels * count].reshape(channels, count, bins, step)
            .transpose(0, 2, 1, 3).reshape(channels, bins, count * step)[:, :, :frames]
            for name, parts in outputs.items()}


def separate(network, sidecar: dict, postfilter: PostFilter, audio: np.ndarray) -> dict[str, np.ndarray]:
    """(samples, channels) float32 at the model's rate -> {source: (samples, channels)}."""
    n_fft, hop = sidecar["n_fft"], sidecar["hop"]
    mixture = np.stack([stft(channel, n_fft, hop) for channel in audio.T])
    estimates = separate_log(network, np.log1p(np.abs(mixture)), sidecar)
    magnitudes = {name: np.maximum(np.expm1(estimate), 0.0).astype(np.float32) for name, estimate in estimates.items()}
    return {name: np.stack([istft(channel, hop, len(audio)) for channel in spectrogram], axis=1)
            for name, spectrogram in postfilter.apply(magnitudes, mixture).items()}


def output_paths(sidecar: dict, path: str, output_dir: str) -> dict[str, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    return {name: os.path.join(output_dir, stem, f"{name}.wav") for name in sidecar["source_names"]}


def separate_file(network, sidecar: dict, postfilter: PostFilter, path: str, output_dir: str) -> list[str]:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    model_rate = sidecar["sample_rate"]
    if rate != model_rate:
        stem = os.path.splitext(os.path.basename(path))[0]
        raise ValueError(f"'{path}' is at {rate} Hz, and this model separates {model_rate} Hz audio: resample it "
                         f"first, e.g. `sox '{path}' -r {model_rate} {stem}_{model_rate}.wav` or "
                         f"`ffmpeg -i '{path}' -ar {model_rate} {stem}_{model_rate}.wav`.")
    targets = output_paths(sidecar, path, output_dir)
    for name, source in separate(network, sidecar, postfilter, audio).items():
        # written under a temporary name and renamed, so that no half-written file is left
        os.makedirs(os.path.dirname(targets[name]), exist_ok=True)
        temporary = os.path.join(os.path.dirname(targets[name]), f".{name}.partial.wav")
        soundfile.write(temporary, source, rate, subtype="FLOAT")
        os.replace(temporary, targets[name])
    return list(targets.values())


def main(argv: list[str] | None = None) -> None:
    arguments = argparse.ArgumentParser(description="Separate WAV files with an exported separator.")
    arguments.add_argument("export_dir", help="the folder `python Evaluate.py export` wrote")
    arguments.add_argument("inputs", nargs="+", metavar="INPUT", help="WAV (or FLAC, Ogg) files at the model's rate")
    arguments.add_argument("-o", "--output", required=True, help="folder for <file stem>/<source>.wav")
    arguments.add_argument("--postfilter", choices=POSTFILTERS, help="default: the sidecar's")
    arguments.add_argument("--wiener-iterations", type=int, help="EM rounds of --postfilter wiener")
    arguments.add_argument("--softmask-power", type=float, help="exponent of --postfilter softmask")
    arguments.add_argument("--overwrite", action="store_true", help="replace earlier results in OUT")
    options = arguments.parse_args(argv)
    sidecar = read_sidecar(options.export_dir)
    default = sidecar["postfilter"]
    try:
        postfilter = PostFilter(*(default[key] if option is None else option for option, key in (
            (options.postfilter, "name"), (options.softmask_power, "softmask_power"),
            (options.wiener_iterations, "wiener_iterations"))))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    existing = [target for path in options.inputs for target in output_paths(sidecar, path, options.output).values()
                if os.path.exists(target)]
    if existing and not options.overwrite:
        raise SystemExit(f"'{existing[0]}' already exists; pass --overwrite to replace it.")
    network = load_network(options.export_dir, sidecar)
    failures = 0
    for path in options.inputs:
        try:
            for written in separate_file(network, sidecar, postfilter, path, options.output):
                print(written)
        except (ValueError, RuntimeError, OSError) as error:  # soundfile's errors are RuntimeErrors
            print(f"Skipped {path}: {error}", file=sys.stderr)
            failures += 1
    if failures:
        raise SystemExit(f"{failures} of {len(options.inputs)} inputs could not be separated.")


if __name__ == "__main__":
    main()
