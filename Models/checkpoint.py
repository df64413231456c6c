"""Checkpoints that describe themselves, and loading the model a checkpoint holds.

A run's checkpoint folder (`<model_base_dir>/<run name>/`) holds pickled checkpoints:
`last.pkl`, and `best_supervised.pkl`, `best_semi_supervised.pkl` (adversarial method) or
`best.pkl` (weak-label method), plus the run's `config.json` for people to read. A folder
stands for its best model (of the last phase trained); a file names one checkpoint exactly.

Every checkpoint carries what rebuilds and applies its model: the method, the separator's
architecture and arguments (Models/registry.py) or the weak-label model's, the feature
settings, the source or class names and the training config, so nothing beside it is needed.
Separator checkpoints written before they described themselves (format 1) are rebuilt from
the `config.json` beside them.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict

from Datasets.features import SpectrogramSettings
from Models.registry import SeparatorSpec
from Models.separation import Separator

PREFERENCE = ("best_semi_supervised.pkl", "best_supervised.pkl", "best.pkl", "last.pkl")
FORMAT = 2  # 1: separator checkpoints that needed config.json beside them


class CheckpointError(ValueError):
    """A path that is no usable checkpoint of this project's separator."""


def separator_description(spec: SeparatorSpec, settings: SpectrogramSettings, config: dict) -> dict:
    """The part of an adversarial checkpoint that rebuilds and applies its separator."""
    return {"format": FORMAT, "method": "adversarial", "separator_spec": spec.as_dict(),
            "features": asdict(settings), "config": config}


def resolve_checkpoint(path: str) -> str:
    """The checkpoint file a folder or file path stands for."""
    if os.path.isdir(path):
        for name in PREFERENCE:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise CheckpointError(f"No checkpoint in '{path}': expected one of {', '.join(PREFERENCE)}.")
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    return path


def read_checkpoint(path: str) -> tuple[str, dict]:
    """(checkpoint file, its contents) for a checkpoint file or run folder."""
    checkpoint = resolve_checkpoint(path)
    try:
        with open(checkpoint, "rb") as handle:
            state = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as error:
        raise CheckpointError(f"'{checkpoint}' is not a checkpoint of this project ({error!r}).") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"'{checkpoint}' is not a checkpoint of this project (it holds a "
                              f"{type(state).__name__}).")
    return checkpoint, state


def _format_1_description(checkpoint: str) -> dict:
    """What a checkpoint written before format 2 leaves to the config.json beside it."""
    config_path = os.path.join(os.path.dirname(checkpoint), "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"'{checkpoint}' was written by an older version of this project, which kept the "
                              "network's settings in a config.json beside it, and that file is missing. Put the "
                              "run's config.json back beside it, or retrain.")
    with open(config_path) as handle:
        config = json.load(handle)
    settings = SpectrogramSettings(config["expected_sr"], config["num_fft"], config["num_hop"])
    # those versions knew the U-Net only
    spec = SeparatorSpec.from_config({"architecture": "unet", "architecture_options": {}, **config}, settings.num_bins)
    return separator_description(spec, settings, config)


def load_trained(path: str, mask_exponent: float | None = None, mask_dilation: list[int] | None = None,
                 background_gate_db: float | None = None):
    """What the checkpoint `path` holds, read once: the separation engine of a separator
    (`load_separator`), or the event separator of a weak-label model (`load_event_separator`)."""
    checkpoint, state = read_checkpoint(path)
    if state.get("method") == "weak_label":
        return _event_separator(checkpoint, state, mask_exponent, mask_dilation, background_gate_db)
    return _separator(checkpoint, state)


def load_separator(path: str) -> Separator:
    """The separation engine of the separator `path` holds, its weights loaded."""
    return _separator(*read_checkpoint(path))


def load_event_separator(path: str, mask_exponent: float | None = None, mask_dilation: list[int] | None = None,
                         background_gate_db: float | None = None):
    """The weak-label model a checkpoint holds, ready to separate (Models/weak_label/separation.py);
    `mask_exponent`, `mask_dilation` and `background_gate_db` replace the ones it was trained with."""
    return _event_separator(*read_checkpoint(path), mask_exponent, mask_dilation, background_gate_db)


def _separator(checkpoint: str, state: dict) -> Separator:
    if state.get("method", "adversarial") != "adversarial" or "separator" not in state:
        raise CheckpointError(f"'{checkpoint}' is a {state.get('method', 'unknown')} checkpoint, not a separator; "
                              "use a run folder written with method=adversarial.")
    description = state if "separator_spec" in state else _format_1_description(checkpoint)
    spec = SeparatorSpec.from_dict(description["separator_spec"])
    model = spec.build()
    try:
        model.set_weights(state["separator"])
    except ValueError as error:
        raise CheckpointError(f"'{checkpoint}' does not fit the network it describes: {error}") from error
    return Separator(model, SpectrogramSettings(**description["features"]), spec.geometry(), spec.source_names,
                     checkpoint, description["config"])


def _event_separator(checkpoint: str, state: dict, mask_exponent: float | None, mask_dilation: list[int] | None,
                     background_gate_db: float | None):
    import numpy as np

    from Datasets.features import MelSettings
    from Models.weak_label.clip_statistics import ClipStatisticsReadout
    from Models.weak_label.separation import EventSeparator
    from Models.weak_label.model import Standardisation, WeakLabelPredictor, build_weak_label_model

    if state.get("method") != "weak_label":
        raise CheckpointError(f"'{checkpoint}' is not a weak-label checkpoint; use it with the adversarial "
                              "method's commands, or pass a run folder written with method=weak_label.")
    spec = dict(state["model_spec"])
    if "pcen_options" in spec:  # checkpoints from before the relative_db front end named PCEN's options
        spec.pop("pcen_options")
        spec["front_end"] = state["front_end"]
    model = build_weak_label_model(**spec)
    try:
        model.set_weights(state["weights"])
    except ValueError as error:
        raise CheckpointError(f"'{checkpoint}' does not fit the model it describes: {error}") from error
    statistics = state["standardisation"]
    threshold = state["detection_threshold"]
    # a rule ("validation_eer", ...) left its per-class thresholds in the state; a probability holds for all
    thresholds = (np.asarray(state["detection_thresholds"], np.float64) if isinstance(threshold, str)
                  else np.full(len(state["classes"]), threshold, np.float64))
    clip_statistics = state.get("clip_statistics")  # absent before clip statistics could be fused
    return EventSeparator(WeakLabelPredictor(model), list(state["classes"]),
                          MelSettings(**state["mel_settings"]),
                          Standardisation(np.asarray(statistics["mean"]), np.asarray(statistics["std"])),
                          state["front_end"], thresholds, mask_exponent or state["mask_exponent"],
                          # checkpoints from before mask dilation separate as they did
                          tuple(mask_dilation or state.get("mask_dilation", (1, 1))),
                          # checkpoints from before the background gate separate without it
                          state.get("background_gate_db", 0.0) if background_gate_db is None else background_gate_db,
                          None if clip_statistics is None else ClipStatisticsReadout.from_state(clip_statistics),
                          checkpoint, state["data_folder"])


def save_config(config: dict, checkpoint_dir: str) -> None:
    """The run's config as `config.json` beside its checkpoints, for people and for resuming."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    with open(os.path.join(checkpoint_dir, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)


def check_resumable(run_folder: str, config: dict, keys: tuple[str, ...]) -> None:
    """Refuses to resume `run_folder` with a config that differs from its own in `keys` (those
    that shape the networks, their features or their data)."""
    saved_config = os.path.join(run_folder, "config.json")
    if not os.path.isfile(saved_config):
        raise FileNotFoundError(f"`resume={run_folder}` is not a run's checkpoint folder: {saved_config} is "
                                "missing. Pass a folder under model_base_dir written by an earlier run.")
    with open(saved_config) as handle:
        saved = json.load(handle)
    different = [f"{key}: {saved.get(key)!r} there, {config[key]!r} here" for key in keys
                 if saved.get(key) != config[key]]
    if different:
        raise ValueError(f"Cannot resume {run_folder}: its config differs in {'; '.join(different)}. "
                         "Resume with the same settings, or start a new run.")
