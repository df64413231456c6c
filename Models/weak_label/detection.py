"""Which classes a trained weak-label model counts as present: the clip statistics' weight in
its clip probabilities (`clip_statistics.py`) and the per-class detection thresholds, both
settled on the validation clips after training, whole as separation sees them.

Training settles them into the best checkpoint; the development-set benchmark settles them
anew on recorded models (`--rescore`) to compare rules without training again.
"""
from __future__ import annotations

import numpy as np

from Models.config_checks import is_share
from Models.weak_label.clip_statistics import FUSION_RULES, ClipStatisticsReadout, fuse, settled_weight
from Models.weak_label.linear_floor import LinearFloor
from Models.weak_label.separation import EventSeparator, clip_probabilities
from Models.weak_label.tagging import DETECTION_RULES, detection_thresholds, tagging_metrics

DETECTION_KEYS = ("clip_statistics_weight", "detection_threshold", "detection_false_alarm_rate")


def check_detection_keys(config: dict) -> None:
    """Rejects detection settings that cannot work (the keys of DETECTION_KEYS)."""
    threshold = config["detection_threshold"]
    if threshold not in DETECTION_RULES and not is_share(threshold):
        raise ValueError(f"Config key `detection_threshold` must be a probability or one of "
                         f"{', '.join(map(repr, DETECTION_RULES))}, got {threshold!r}.")
    if not is_share(config["detection_false_alarm_rate"]):
        raise ValueError(f"Config key `detection_false_alarm_rate` must be a share in [0, 1], "
                         f"got {config['detection_false_alarm_rate']!r}.")
    weight = config["clip_statistics_weight"]
    if weight not in FUSION_RULES and not is_share(weight):
        raise ValueError(f"Config key `clip_statistics_weight` must be a weight in [0, 1] or one of "
                         f"{', '.join(map(repr, FUSION_RULES))}, got {weight!r}.")


def settle_detection(separator: EventSeparator, clips: list, log_mels: list[np.ndarray], floor: LinearFloor,
                     config: dict) -> tuple[ClipStatisticsReadout | None, np.ndarray, dict]:
    """The read-out of `floor` (fitted on the training clips) with the weight the config's
    `clip_statistics_weight` gives on these (validation) `clips`, None for weight 0; the
    thresholds of its `detection_threshold` rule on the clip probabilities they then give;
    and the weighted AUC of those probabilities and of the masks' alone ("fused", "masks")."""
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
