"""Loading a trained model from what Training.py wrote.

A run's checkpoint folder (`<model_base_dir>/<run name>/`) holds `config.json` and pickled
checkpoints: `last.pkl`, and `best_supervised.pkl`, `best_semi_supervised.pkl` (adversarial
method) or `best.pkl` (weak-label method). A folder stands for its best model (of the last
phase trained); a file names one checkpoint exactly. A weak-label checkpoint carries its own
architecture, classes, feature settings and standardisation, so it needs nothing beside it.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass

import keras

from Datasets.features import SpectrogramSettings
from Models.separator import build_separator
from Datasets.windows import WindowShapes
from Models.shapes import unet_shapes

PREFERENCE = ("best_semi_supervised.pkl", "best_supervised.pkl", "best.pkl", "last.pkl")


class CheckpointError(ValueError):
    """A path that is no usable checkpoint of this project's separator."""


@dataclass
class TrainedSeparator:
    model: keras.Model
    config: dict
    settings: SpectrogramSettings
    shapes: WindowShapes
    path: str

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self.config["source_names"])

    @property
    def num_layers(self) -> int:
        return self.config["num_layers"]


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


def checkpoint_method(path: str) -> str:
    """"adversarial" or "weak_label": which method wrote the checkpoint `path` stands for."""
    config_path = os.path.join(os.path.dirname(resolve_checkpoint(path)), "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"'{path}' has no config.json beside it; it was not written by Training.py.")
    with open(config_path) as handle:
        return json.load(handle).get("method", "adversarial")


def load_separator(path: str) -> TrainedSeparator:
    """Builds the separator that `path` was trained with and loads its weights."""
    checkpoint = resolve_checkpoint(path)
    config_path = os.path.join(os.path.dirname(checkpoint), "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"'{checkpoint}' has no config.json beside it; it was not written by Training.py.")
    with open(config_path) as handle:
        config = json.load(handle)
    try:
        with open(checkpoint, "rb") as handle:
            state = pickle.load(handle)
        if state.get("method", "adversarial") != "adversarial":
            raise CheckpointError(f"'{checkpoint}' is a {state['method']} checkpoint, not an adversarial separator.")
        weights = state["separator"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"'{checkpoint}' is not a separator checkpoint of this project ({error!r}).") from error
    settings = SpectrogramSettings(config["expected_sr"], config["num_fft"], config["num_hop"])
    model = build_separator(config["num_layers"], config["num_frames"], settings.num_bins, config["base_filters"],
                            tuple(config["source_names"]))
    try:
        model.set_weights(weights)
    except ValueError as error:
        raise CheckpointError(f"'{checkpoint}' does not fit the network its config.json describes: {error}") from error
    return TrainedSeparator(model, config, settings,
                            unet_shapes(config["num_layers"], config["num_frames"], settings.num_bins), checkpoint)


def load_event_separator(path: str, mask_exponent: float | None = None):
    """The weak-label model a checkpoint holds, ready to separate (Models/event_separation.py);
    `mask_exponent` replaces the one it was trained with."""
    import numpy as np

    from Datasets.features import MelSettings
    from Models.event_separation import EventSeparator
    from Models.weak_label_model import Standardisation, WeakLabelPredictor, build_weak_label_model

    checkpoint = resolve_checkpoint(path)
    try:
        with open(checkpoint, "rb") as handle:
            state = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError) as error:
        raise CheckpointError(f"'{checkpoint}' is not a checkpoint of this project ({error!r}).") from error
    if not isinstance(state, dict) or state.get("method") != "weak_label":
        raise CheckpointError(f"'{checkpoint}' is not a weak-label checkpoint; use it with the adversarial "
                              "method's commands, or pass a run folder written with method=weak_label.")
    model = build_weak_label_model(**state["model_spec"])
    try:
        model.set_weights(state["weights"])
    except ValueError as error:
        raise CheckpointError(f"'{checkpoint}' does not fit the model it describes: {error}") from error
    statistics = state["standardisation"]
    threshold = state["detection_threshold"]
    thresholds = (np.asarray(state["detection_thresholds"], np.float32) if threshold == "validation_eer"
                  else np.full(len(state["classes"]), threshold, np.float32))
    return EventSeparator(WeakLabelPredictor(model), list(state["classes"]),
                          MelSettings(**state["mel_settings"]),
                          Standardisation(np.asarray(statistics["mean"]), np.asarray(statistics["std"])),
                          state["front_end"], thresholds, mask_exponent or state["mask_exponent"],
                          checkpoint, state["data_folder"])
