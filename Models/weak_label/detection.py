"""Which classes a trained weak-label model counts as present: the clip statistics' weight in
its clip probabilities (`clip_statistics.py`) and the per-class detection thresholds, both
settled on the validation clips after training, whole as separation sees them.

Training settles them into the best checkpoint; `Evaluate.py` (with any of DETECTION_KEYS) and
the development-set benchmark (`--rescore`) settle them anew on a trained model, so another
rule or false-alarm rate needs no training.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from Datasets.weak_label import load_clips
from Datasets.weak_label.folder import WeakLabelSet
from Models.config_checks import is_share
from Models.weak_label.clip_statistics import FUSION_RULES, ClipStatisticsReadout, fuse, settled_weight
from Models.weak_label.linear_floor import LinearFloor, clips_floor, clips_log_mels_and_labels
from Models.weak_label.tagging import DETECTION_RULES, detection_thresholds, tagging_metrics

if TYPE_CHECKING:  # separation imports TensorFlow; the benchmark's command line and config checks need none
    from Models.weak_label.separation import EventSeparator

DETECTION_KEYS = ("clip_statistics_weight", "detection_threshold", "detection_false_alarm_rate")


def check_detection_keys(config: dict) -> None:
    """Rejects detection settings that cannot work: those of the keys of DETECTION_KEYS that
    `config` sets (None: not set)."""
    threshold = config.get("detection_threshold")
    if threshold is not None and threshold not in DETECTION_RULES and not is_share(threshold):
        raise ValueError(f"Config key `detection_threshold` must be a probability or one of "
                         f"{', '.join(map(repr, DETECTION_RULES))}, got {threshold!r}.")
    rate = config.get("detection_false_alarm_rate")
    if rate is not None and not is_share(rate):
        raise ValueError(f"Config key `detection_false_alarm_rate` must be a share in [0, 1], got {rate!r}.")
    weight = config.get("clip_statistics_weight")
    if weight is not None and weight not in FUSION_RULES and not is_share(weight):
        raise ValueError(f"Config key `clip_statistics_weight` must be a weight in [0, 1] or one of "
                         f"{', '.join(map(repr, FUSION_RULES))}, got {weight!r}.")


def run_detection_settings(checkpoint: str, updates: dict) -> dict:
    """The keys of DETECTION_KEYS as the run of `checkpoint` set them (its config.json), with
    `updates` in their place."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.json")
    recorded = {}
    if os.path.isfile(config_path):
        with open(config_path) as handle:
            recorded = json.load(handle)
    settings = {**{key: recorded[key] for key in DETECTION_KEYS if key in recorded}, **updates}
    missing = [key for key in DETECTION_KEYS if key not in settings]
    if missing:
        raise ValueError(f"'{config_path}' does not say {', '.join(missing)} (a run from before they existed, or a "
                         f"checkpoint moved without its config.json): set {'them' if len(missing) > 1 else 'it'} "
                         "as well.")
    return settings


def settle_detection(separator: EventSeparator, clips: list, log_mels: list[np.ndarray], floor: LinearFloor,
                     config: dict) -> tuple[ClipStatisticsReadout | None, np.ndarray, dict]:
    """The read-out of `floor` (fitted on the training clips) with the weight the config's
    `clip_statistics_weight` gives on these (validation) `clips`, None for weight 0; the
    thresholds of its `detection_threshold` rule on the clip probabilities they then give;
    and the weighted AUC of those probabilities and of the masks' alone ("fused", "masks")."""
    from Models.weak_label.separation import clip_probabilities

    _, mask_probabilities = clip_probabilities(separator, clips)
    labels = np.stack([clip.labels for clip in clips])
    statistics_probabilities = floor.probabilities(log_mels)
    weight = settled_weight(config["clip_statistics_weight"], labels, mask_probabilities, statistics_probabilities,
                            separator.classes)
    probabilities = fuse(mask_probabilities, statistics_probabilities, weight)
    readout = ClipStatisticsReadout.of(floor, weight) if np.any(weight) else None
    thresholds = detection_thresholds(config["detection_threshold"], labels, probabilities,
                                      config["detection_false_alarm_rate"])
    aucs = {name: tagging_metrics(labels, values, separator.classes).get("weighted_auc", np.nan)
            for name, values in (("fused", probabilities), ("masks", mask_probabilities))}
    return readout, thresholds, aucs


def resettled(separator: EventSeparator, updates: dict, clips: WeakLabelSet | None = None,
              floor: LinearFloor | None = None) -> EventSeparator:
    """`separator` detecting as the run's detection settings with `updates` (keys of
    DETECTION_KEYS) settle on the validation split of the clips it was trained on (`clips`, and
    `floor` fitted on their training split, where the caller has them); a threshold alone that
    is a probability replaces the thresholds and keeps the clip statistics' weight."""
    if set(updates) == {"detection_threshold"} and is_share(updates["detection_threshold"]):
        # one probability for every class settles nothing, so it needs no clips (a user's machine may not keep them)
        return replace(separator, thresholds=np.full(len(separator.classes), float(updates["detection_threshold"])))
    settings = run_detection_settings(separator.path, updates)
    check_detection_keys(settings)
    if clips is None:
        if not os.path.isdir(separator.data_folder):
            raise FileNotFoundError(f"Settling detection anew needs the validation clips '{separator.path}' was "
                                    f"trained on, gone from '{separator.data_folder}': regenerate them with the "
                                    "run's Training.py config.")
        clips = load_clips(separator.data_folder, separator.classes)
    if floor is None:
        floor = clips_floor(clips.split("train"), separator.settings)
    valid = clips.split("valid")
    readout, thresholds, _ = settle_detection(separator, valid, clips_log_mels_and_labels(
        valid, separator.settings)[0], floor, settings)
    return replace(separator, clip_statistics=readout, thresholds=thresholds)
