"""Clip-level tagging metrics of the weak-label models (scikit-learn does the counting).

The thesis selected models by the ROC AUC averaged over classes weighted by their number of
positive clips; average precision is computed on the probabilities, not on thresholded
labels; the equal error rate is where the false-positive rate equals the miss rate. A class
with no positive or no negative clip in the set has no ROC curve: it is left out of the
averages and named in `undefined`, never scored as 0.5.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER of one class: the ROC point where 1 - TPR crosses FPR, interpolated linearly."""
    false_positive, true_positive, _ = roc_curve(labels, scores)
    miss = 1.0 - true_positive
    crossing = int(np.flatnonzero(false_positive >= miss)[0])
    if crossing == 0:
        return float(false_positive[0])
    # the gap (fpr - miss) changes sign between points crossing - 1 and crossing
    before = false_positive[crossing - 1] - miss[crossing - 1]
    after = false_positive[crossing] - miss[crossing]
    weight = before / (before - after)
    return float(false_positive[crossing - 1] + weight * (false_positive[crossing] - false_positive[crossing - 1]))


def undefined_auc_classes(labels: np.ndarray, classes: list[str]) -> list[str]:
    """The classes without a ROC curve on these clips: in none of them, or in all of them."""
    positives = (np.asarray(labels) > 0.5).sum(axis=0)
    return [name for name, count in zip(classes, positives) if not 0 < count < len(labels)]


def tagging_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """labels, probabilities: (clips, classes). Returns weighted_auc, mean_average_precision,
    mean_eer, per-class auc / average_precision / eer / positives, and the undefined classes."""
    labels = np.asarray(labels) > 0.5
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positives = labels.sum(axis=0)
    undefined = undefined_auc_classes(labels, classes)
    defined = [index for index, name in enumerate(classes) if name not in undefined]
    per_class = {name: {"positives": int(positives[index])} for index, name in enumerate(classes)}
    for index in defined:
        per_class[classes[index]].update(
            auc=float(roc_auc_score(labels[:, index], probabilities[:, index])),
            average_precision=float(average_precision_score(labels[:, index], probabilities[:, index])),
            eer=equal_error_rate(labels[:, index], probabilities[:, index]))
    result = {"per_class": per_class, "undefined": undefined}
    if defined:
        weights = positives[defined] / positives[defined].sum()
        result["weighted_auc"] = float(np.dot(weights, [per_class[classes[i]]["auc"] for i in defined]))
        result["mean_average_precision"] = float(np.mean([per_class[classes[i]]["average_precision"]
                                                          for i in defined]))
        result["mean_eer"] = float(np.mean([per_class[classes[i]]["eer"] for i in defined]))
    return result


def equal_error_thresholds(labels: np.ndarray, probabilities: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per class, the probability threshold at its ROC's equal-error point: the operating point
    where false alarms and misses are equally likely. Pooled probabilities are not calibrated
    (global weighted rank pooling of a mask that covers a short event stays well below 0.5),
    so one fixed threshold would miss whole classes. `default` for a class without a curve."""
    labels = np.asarray(labels) > 0.5
    thresholds = np.full(labels.shape[1], default, np.float32)
    for index in range(labels.shape[1]):
        if 0 < labels[:, index].sum() < len(labels):
            false_positive, true_positive, candidates = roc_curve(labels[:, index], probabilities[:, index])
            best = int(np.argmin(np.abs(false_positive - (1.0 - true_positive))))
            thresholds[index] = min(float(candidates[best]), 1.0)
    return thresholds


def false_alarm_thresholds(labels: np.ndarray, probabilities: np.ndarray, rate: float,
                           default: float = 0.5) -> np.ndarray:
    """Per class, a threshold that at most `rate` of the clips without the class reach and that
    detects every clip scored above the first of them that must stay below it: an operating point
    that buys recall with a known share of false alarms, where the equal-error point of a
    validation split, whose recordings the test split never shares, misses more test events than
    it should. It lies halfway between that clip's probability and the next higher one, so that
    rounding noise in recomputed probabilities keeps the detections. `default` for a class
    without a curve."""
    labels, probabilities = np.asarray(labels) > 0.5, np.asarray(probabilities, np.float64)
    thresholds = np.full(labels.shape[1], default, np.float64)
    for index in range(labels.shape[1]):
        negatives = np.sort(probabilities[~labels[:, index], index])[::-1]
        if not labels[:, index].any() or not len(negatives):
            continue
        allowed = int(np.floor(rate * len(negatives) + 1e-9))
        if allowed >= len(negatives):
            thresholds[index] = 0.0  # every clip may be detected
            continue
        above = probabilities[:, index][probabilities[:, index] > negatives[allowed]]
        thresholds[index] = (negatives[allowed] + (above.min() if len(above) else 1.0)) / 2
    return thresholds


DETECTION_RULES = ("validation_eer", "validation_false_alarms")


def detection_thresholds(rule, labels: np.ndarray, probabilities: np.ndarray, false_alarm_rate: float) -> np.ndarray:
    """Per class, the clip probability from which it counts as present: `rule` is a probability
    for every class, or one of DETECTION_RULES applied to the (validation) `labels` and
    `probabilities`."""
    if rule == "validation_eer":
        return equal_error_thresholds(labels, probabilities).astype(np.float64)
    if rule == "validation_false_alarms":
        return false_alarm_thresholds(labels, probabilities, false_alarm_rate)
    return np.full(np.shape(labels)[1], float(rule))
