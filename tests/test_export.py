"""Exported separators (Models/export.py) against the Keras model, and the standalone script
(Models/separate_exported.py, run from the export folder alone) against the project's own
file separation, on a tiny U-Net checkpoint (2 layers, 4 filters, n_fft 64)."""
import ast
import importlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from Datasets.features import SpectrogramSettings
from Models.checkpoint import CheckpointError, load_separator, separator_description
from Models.export import FORMATS, MODEL_FILES, SCRIPT, check_format, export_checkpoint, export_separator
from Models.postfilter import DEFAULT_POSTFILTER, PostFilter
from Models.registry import SeparatorSpec
from test_streaming import SOURCES, tiny_trained, write_noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Exported network vs the Keras model on the same windows (issue 14)
TOLERANCE = {"saved_model": 1e-5, "tflite": 1e-4, "onnx": 1e-4}
RUNTIMES = {"saved_model": "tensorflow", "tflite": "tensorflow", "onnx": "onnxruntime"}


def producible(format: str):
    """The format, skipped where its converter or runtime is not installed here."""
    try:
        check_format(format)
        importlib.import_module(RUNTIMES[format])
    except ImportError as error:
        return pytest.param(format, marks=pytest.mark.skip(reason=str(error)))
    return format


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run folder holding the tiny separator of tests/test_streaming.py as a checkpoint."""
    folder = tmp_path_factory.mktemp("run")
    spec = SeparatorSpec("unet", 33, SOURCES, {"num_layers": 2, "base_filters": 4})
    state = {**separator_description(spec, SpectrogramSettings(8192, 64, 32), {}),
             "separator": tiny_trained().model.get_weights()}
    with open(folder / "best_supervised.pkl", "wb") as handle:
        pickle.dump(state, handle)
    return str(folder)


@pytest.fixture(scope="module")
def separator(checkpoint):
    return load_separator(checkpoint)


@pytest.fixture(scope="module")
def exports(separator, tmp_path_factory):
    """Every producible format, in windows of 16 frames, 3 per call: a 3 s stereo song needs 49
    windows, so the last call is padded with silent windows."""
    folder = tmp_path_factory.mktemp("exports")
    return {format: export_separator(separator, str(folder / format), format, window_frames=16, batch=3)
            for format in FORMATS}


def _script_module(folder: str):
    """separate_exported.py as the export folder holds it, imported with that folder on the path
    (for the postfilter.py beside it)."""
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location("separate_exported", os.path.join(folder, SCRIPT))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(folder)


def _run_script(folder: str, *arguments: str) -> subprocess.CompletedProcess:
    """The script in a clean process, from another working folder, without the project on its path."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, os.path.join(folder, SCRIPT), folder, *arguments], capture_output=True,
                          text=True, cwd=os.path.dirname(folder), env=environment, timeout=120)


@pytest.mark.parametrize("format", [producible(format) for format in FORMATS])
def test_exported_network_equals_the_keras_model(separator, exports, format):
    folder = exports[format]
    assert sorted(os.listdir(folder)) == sorted([MODEL_FILES[format], "separator.json", SCRIPT, "postfilter.py"])
    with open(os.path.join(REPO, "Models", "postfilter.py")) as original, \
            open(os.path.join(folder, "postfilter.py")) as copy:
        assert copy.read() == original.read()
    script = _script_module(folder)
    sidecar = script.read_sidecar(folder)
    shapes = separator.geometry.windows(16)
    assert sidecar == {**sidecar, "format": format, "sample_rate": 8192, "n_fft": 64, "hop": 32, "window": "hann",
                       "num_bins": 33, "batch": 3, "step": 16, "input_bins": shapes.input_bins,
                       "input_frames": shapes.input_frames, "context_frames": shapes.context_frames,
                       "input_bins_below": shapes.input_bins_below, "source_names": list(SOURCES),
                       "checkpoint": separator.path}
    assert sidecar["postfilter"] == {"name": "none", "softmask_power": 1.0, "wiener_iterations": 1,
                                     "block_frames": 300}
    windows = np.log1p(np.abs(np.random.default_rng(1).standard_normal(
        (3, shapes.input_bins, shapes.input_frames, 1)) * 3)).astype(np.float32)
    expected = separator.model(windows, training=False)
    outputs = script.load_network(folder, sidecar)(windows)
    assert sorted(outputs) == sorted(SOURCES)
    for name in SOURCES:
        assert np.asarray(outputs[name]).shape == tuple(expected[name].shape)
        assert np.abs(np.asarray(expected[name])).max() > 0.1  # a live network, not one of zeros
        assert np.abs(np.asarray(outputs[name]) - np.asarray(expected[name])).max() <= TOLERANCE[format]


@pytest.mark.parametrize("format", [producible("tflite")])
def test_tflite_runs_on_tensorflow_without_ai_edge_litert(separator, exports, monkeypatch, format):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    script = _script_module(exports[format])
    sidecar = script.read_sidecar(exports[format])
    windows = np.ones((sidecar["batch"], sidecar["input_bins"], sidecar["input_frames"], 1), np.float32)
    with pytest.warns(UserWarning, match="tf.lite.Interpreter is deprecated"):
        outputs = script.load_network(exports[format], sidecar)(windows)
    expected = separator.model(windows, training=False)
    for name in SOURCES:
        assert np.abs(outputs[name] - np.asarray(expected[name])).max() <= TOLERANCE[format]


@pytest.mark.parametrize("format, postfilter", [(producible("saved_model"), "wiener"),
                                                (producible("tflite"), "wiener"), (producible("onnx"), "wiener"),
                                                (producible("onnx"), "none"), (producible("tflite"), "softmask")])
def test_standalone_script_equals_separate(separator, exports, tmp_path, format, postfilter):
    signal = write_noise(str(tmp_path / "song.wav"), 3.0, 8192, 2)
    expected = replace(separator, postfilter=PostFilter(postfilter)).separate_file(
        str(tmp_path / "song.wav"), str(tmp_path / "separate"))
    result = _run_script(exports[format], str(tmp_path / "song.wav"), "-o", str(tmp_path / "exported"),
                         "--postfilter", postfilter)
    assert result.returncode == 0, result.stderr
    for path in expected:
        written = path.replace(str(tmp_path / "separate"), str(tmp_path / "exported"))
        reference, rate = soundfile.read(path, dtype="float32", always_2d=True)
        separated, written_rate = soundfile.read(written, dtype="float32", always_2d=True)
        assert written_rate == rate == 8192 and separated.shape == reference.shape == signal.shape
        assert soundfile.info(written).subtype == "FLOAT"
        assert np.abs(reference).max() > 0.1
        assert np.abs(separated - reference).max() <= 1e-4
    refused = _run_script(exports[format], str(tmp_path / "song.wav"), "-o", str(tmp_path / "exported"))
    assert refused.returncode != 0 and "already exists; pass --overwrite" in refused.stderr


def _third_party_imports(path: str) -> set[str]:
    with open(path) as handle:
        tree = ast.parse(handle.read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) - {"__future__"}


def test_standalone_script_imports_nothing_of_the_project():
    """numpy, soundfile, the postfilter.py copied beside it, and the format's runtime (imported
    by name where needed: tensorflow, onnxruntime; ai-edge-litert where installed)."""
    assert _third_party_imports(os.path.join(REPO, "Models", SCRIPT)) == {"numpy", "soundfile", "postfilter",
                                                                          "ai_edge_litert"}
    assert _third_party_imports(os.path.join(REPO, "Models", "postfilter.py")) == {"numpy"}


@pytest.mark.parametrize("format", [producible("onnx")])
def test_standalone_script_names_the_rate_to_resample_to(exports, tmp_path, format):
    write_noise(str(tmp_path / "song.wav"), 0.5, 16000, 1)
    result = _run_script(exports[format], str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "is at 16000 Hz, and this model separates 8192 Hz audio" in result.stderr
    assert "-r 8192" in result.stderr and not os.path.exists(tmp_path / "out" / "song")


def test_unknown_format_names_the_choices(separator, tmp_path):
    with pytest.raises(ValueError, match=r"unknown export format 'torchscript'.*'saved_model', 'tflite', 'onnx'"):
        export_separator(separator, str(tmp_path / "out"), "torchscript")
    assert not os.path.exists(tmp_path / "out")


def test_missing_converter_names_the_package_to_install(separator, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # makes `import tf2onnx` fail
    with pytest.raises(ImportError, match=r"needs the `tf2onnx` package.*pip install tf2onnx onnx"):
        export_separator(separator, str(tmp_path / "out"), "onnx")
    assert not os.path.exists(tmp_path / "out")


def test_existing_export_is_replaced_only_with_overwrite(separator, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "notes.txt").write_text("earlier")
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass overwrite=True"):
        export_separator(separator, str(folder), "saved_model", window_frames=16)
    assert os.listdir(folder) == ["notes.txt"]
    export_separator(separator, str(folder), "saved_model", window_frames=16, overwrite=True)
    assert "notes.txt" not in os.listdir(folder) and "separator.json" in os.listdir(folder)
    assert [name for name in os.listdir(tmp_path) if name != "exported"] == []  # no temporary folder left


def test_checkpoints_that_hold_no_separator_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(str(tmp_path / "missing.pkl"), str(tmp_path / "out"), "saved_model")
    (tmp_path / "notes.pkl").write_text("not a pickle")
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project"):
        export_checkpoint(str(tmp_path / "notes.pkl"), str(tmp_path / "out"), "saved_model")
    with open(tmp_path / "best.pkl", "wb") as handle:
        pickle.dump({"method": "weak_label"}, handle)
    with pytest.raises(CheckpointError, match="weak-label model; export covers separators only"):
        export_checkpoint(str(tmp_path / "best.pkl"), str(tmp_path / "out"), "saved_model")
    assert not os.path.exists(tmp_path / "out")


def test_evaluate_export_command(checkpoint, tmp_path):
    from Evaluate import ex as evaluation

    updates = {"checkpoint": checkpoint, "output_dir": str(tmp_path / "exported"), "run_dir": None}
    with pytest.raises(ValueError, match="unknown export format 'keras'"):
        evaluation.run("export", config_updates={**updates, "format": "keras"})
    with pytest.raises(ValueError, match="`export` needs checkpoint and output_dir"):
        evaluation.run("export", config_updates={"run_dir": None})
    run = evaluation.run("export", config_updates={**updates, "format": "saved_model", "window_frames": 16,
                                                   "wiener_iterations": 2})
    assert run.result == str(tmp_path / "exported")
    with open(tmp_path / "exported" / "separator.json") as handle:
        sidecar = json.load(handle)
    # the default post-filter is `separate`'s
    assert sidecar["postfilter"] == {"name": DEFAULT_POSTFILTER, "softmask_power": 1.0, "wiener_iterations": 2,
                                     "block_frames": 300}
    assert sidecar["checkpoint"] == os.path.join(checkpoint, "best_supervised.pkl")
    assert (sidecar["step"], sidecar["batch"]) == (16, 1)
