"""The linear floor of the weak-label tagging metrics: a logistic regression per class
(scikit-learn, one-vs-rest, standardised features) on pooled log-mel statistics of each clip.

Features: per mel band the mean, maximum, standard deviation and 90th percentile over the clip's
frames, of the same log-mel front end as the joint model (`Datasets.features.log_mel` of its mel
magnitudes). A joint model that does not beat this floor on the same split has learnt less than
a linear read-out of the clip's average spectrum; the issue that added it (a model stuck at the
class priors on real recordings, where this floor reached AUC 0.84) is why every weak-label
test report shows it.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from Datasets.features import MelSettings, log_mel
from Datasets.mel_cache import clip_mels
from Models.weak_label.tagging import tagging_metrics

STATISTICS = ("mean", "max", "std", "p90")
MAX_ITERATIONS = 2000


def pooled_statistics(log_mels: list[np.ndarray]) -> np.ndarray:
    """(clips, 4 * mels): each clip's (frames, mels) log-mel frames pooled per band into its mean,
    maximum, standard deviation and 90th percentile; clips may differ in length."""
    return np.stack([np.concatenate([log_mel.mean(axis=0), log_mel.max(axis=0), log_mel.std(axis=0),
                                     np.percentile(log_mel, 90, axis=0)]) for log_mel in log_mels])


def clip_log_mels(paths: list[str], settings: MelSettings, cache_dir: str | None = None,
                  num_workers: int = 4) -> list[np.ndarray]:
    """The floor's input: each audio file's log-mel frames (of mel magnitudes, as the joint model's
    log-mel front end), cached under `cache_dir` when given."""
    return [log_mel(mel) for mel in clip_mels(paths, settings, cache_dir, num_workers, power=1.0)]


class LinearFloor:
    """One logistic regression per class on standardised pooled statistics."""

    def __init__(self, regularisation: float = 1.0):
        self.classifier = OneVsRestClassifier(make_pipeline(
            StandardScaler(), LogisticRegression(C=regularisation, max_iter=MAX_ITERATIONS)))

    def fit(self, log_mels: list[np.ndarray], labels: np.ndarray) -> "LinearFloor":
        labels = np.asarray(labels) > 0.5
        constant = [index for index in range(labels.shape[1]) if labels[:, index].all() or not labels[:, index].any()]
        if constant:
            raise ValueError(f"LinearFloor.fit: classes {constant} (by index) are constant over the training clips; "
                             "a classifier needs both present and absent examples of each class.")
        with warnings.catch_warnings():
            # a few hundred clips and 256 features: lbfgs may stop short of its tolerance, which
            # changes the probabilities' ranking (the AUC) far less than its last digits
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.classifier.fit(pooled_statistics(log_mels), labels.astype(int))
        return self

    def probabilities(self, log_mels: list[np.ndarray]) -> np.ndarray:
        """(clips, classes)."""
        return self.classifier.predict_proba(pooled_statistics(log_mels))

    def tagging(self, log_mels: list[np.ndarray], labels: np.ndarray, classes: list[str]) -> dict:
        """`tagging_metrics` of these clips."""
        return tagging_metrics(labels, self.probabilities(log_mels), classes)


def clips_log_mels_and_labels(clips: list, settings: MelSettings) -> tuple[list[np.ndarray], np.ndarray]:
    """The floor's inputs for weak-label clips (`Datasets.weak_label`'s): their mixtures' log-mel
    frames and their labels."""
    return clip_log_mels([clip.mixture_path for clip in clips], settings), np.stack([clip.labels for clip in clips])


def clips_floor(training: list, settings: MelSettings) -> LinearFloor:
    """The floor fitted on the mixtures of weak-label `training` clips."""
    return LinearFloor().fit(*clips_log_mels_and_labels(training, settings))


def clips_floor_tagging(floor: LinearFloor, clips: list, settings: MelSettings, classes: list[str]) -> dict:
    """`floor`'s `tagging_metrics` of weak-label clips."""
    return floor.tagging(*clips_log_mels_and_labels(clips, settings), classes)
