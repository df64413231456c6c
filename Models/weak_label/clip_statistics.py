"""Clip probabilities from the masks and from the clip's pooled statistics together.

Pooled masks see what a few hundred milliseconds around each mask value show; the linear floor
(`linear_floor.py`: a logistic regression on each band's mean, maximum, deviation and 90th
percentile over the clip) sees the whole clip at once, such as a kick standing above the clip's
other bass hits, which the masks miss. On the development set of real recordings the two err on
different clips (README, "Weak labels on real recordings"), so the clip probability that decides
which classes are separated can take both, in the logit domain:

    logit p = (1 - w) logit p_masks + w logit p_statistics

The read-out is the floor's model fitted on the training clips, after the masks are trained
(they are trained alone: their separation does not change, only which classes count as
present). `w` is a config key; "validation" takes the weight of FUSION_WEIGHTS with the best
weighted AUC on the validation split, the smaller one on a tie (0: the masks alone);
"validation_per_class" takes each class's own best by its validation AUC, so a class the
statistics rank well (a kick standing above the music's bass) can lean on them while another
keeps its masks' ranking, at the price of a choice that rests on that class's few validation clips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from Models.weak_label.linear_floor import LinearFloor, pooled_statistics
from Models.weak_label.tagging import tagging_metrics

FUSION_WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5)
FUSION_RULES = ("validation", "validation_per_class")
PROBABILITY_MARGIN = 1e-7  # probabilities are kept this far from 0 and 1, where the logit is infinite


def _finite_logit(probabilities: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(probabilities, np.float64), PROBABILITY_MARGIN, 1.0 - PROBABILITY_MARGIN))


def fuse(mask_probabilities: np.ndarray, statistics_probabilities: np.ndarray, weight) -> np.ndarray:
    """The clip probabilities of the formula above, with one weight or one per class; weight 0
    returns the masks' unchanged."""
    weight = np.asarray(weight, np.float64)
    if not np.any(weight):
        return np.asarray(mask_probabilities, np.float64)
    return expit((1.0 - weight) * _finite_logit(mask_probabilities) + weight * _finite_logit(statistics_probabilities))


def choose_weight(labels: np.ndarray, mask_probabilities: np.ndarray, statistics_probabilities: np.ndarray,
                  classes: list[str]) -> float:
    """The weight of FUSION_WEIGHTS whose fused probabilities have the best weighted AUC on
    these (validation) clips, the smaller one on a tie (AUCs compared to 3 decimals: a few
    dozen validation clips tell no finer)."""
    scores = [round(tagging_metrics(labels, fuse(mask_probabilities, statistics_probabilities, weight), classes)
                    .get("weighted_auc", 0.0), 3) for weight in FUSION_WEIGHTS]
    return FUSION_WEIGHTS[int(np.argmax(scores))]


def choose_class_weights(labels: np.ndarray, mask_probabilities: np.ndarray, statistics_probabilities: np.ndarray,
                         classes: list[str]) -> np.ndarray:
    """(classes,): per class, the weight of FUSION_WEIGHTS with its best AUC on these
    (validation) clips, the smaller one on a tie (to 3 decimals); a class without an AUC there
    takes the weight that `choose_weight` gives all classes."""
    common = choose_weight(labels, mask_probabilities, statistics_probabilities, classes)
    per_weight = [tagging_metrics(labels, fuse(mask_probabilities, statistics_probabilities, weight), classes)
                  ["per_class"] for weight in FUSION_WEIGHTS]
    return np.array([FUSION_WEIGHTS[int(np.argmax([round(scores[name]["auc"], 3) for scores in per_weight]))]
                     if "auc" in per_weight[0][name] else common for name in classes])


def settled_weight(setting, labels: np.ndarray, mask_probabilities: np.ndarray,
                   statistics_probabilities: np.ndarray, classes: list[str]):
    """The weight a `clip_statistics_weight` setting gives on these (validation) clips: a number
    as it is, a rule of FUSION_RULES as chosen there (one weight, or one per class)."""
    if setting == "validation":
        return choose_weight(labels, mask_probabilities, statistics_probabilities, classes)
    if setting == "validation_per_class":
        return choose_class_weights(labels, mask_probabilities, statistics_probabilities, classes)
    return float(setting)


@dataclass
class ClipStatisticsReadout:
    """The floor's fitted model as plain arrays (a checkpoint needs no scikit-learn objects)
    with its fusion weight: one for all classes, or one per class."""

    mean: np.ndarray  # (features,): the standardisation of the pooled statistics
    scale: np.ndarray  # (features,)
    coefficients: np.ndarray  # (features, classes)
    intercepts: np.ndarray  # (classes,)
    weight: float | np.ndarray

    @classmethod
    def of(cls, floor: LinearFloor, weight) -> "ClipStatisticsReadout":
        pipelines = floor.classifier.estimators_
        scaler = pipelines[0][0]  # every class's pipeline standardises the same features alike
        return cls(scaler.mean_.copy(), scaler.scale_.copy(),
                   np.stack([pipeline[-1].coef_[0] for pipeline in pipelines], axis=1),
                   np.array([pipeline[-1].intercept_[0] for pipeline in pipelines]),
                   float(weight) if np.ndim(weight) == 0 else np.asarray(weight, np.float64))

    def probabilities(self, log_mels: list[np.ndarray]) -> np.ndarray:
        """(clips, classes): the read-out's own probabilities of each clip's (frames, mels) log-mel."""
        standardised = (pooled_statistics(log_mels) - self.mean) / self.scale
        return expit(standardised @ self.coefficients + self.intercepts)

    def fuse(self, mask_probabilities: np.ndarray, log_mels: list[np.ndarray]) -> np.ndarray:
        return fuse(mask_probabilities, self.probabilities(log_mels), self.weight)

    def to_state(self) -> dict:
        return {"mean": self.mean, "scale": self.scale, "coefficients": self.coefficients,
                "intercepts": self.intercepts, "weight": self.weight}

    @classmethod
    def from_state(cls, state: dict) -> "ClipStatisticsReadout":
        return cls(**state)
