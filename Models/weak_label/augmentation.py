"""Augmentation of weak-label training batches, on the model inputs (standardised log-mel frames,
or mel energies for a PCEN front end), each off by default:

* gain: every clip louder or quieter by a uniform draw in +-`gain_db` dB (a shift of the log-mel
  values, a factor on the energies);
* time shift: every clip rolled along its frames by a uniform draw in +-`time_shift_frames`
  frames (events move; the background wraps around);
* mixing: with probability `mix_probability` a clip is summed with another clip of its batch
  (mel magnitudes or energies add) and takes the union of their labels, so a class is learnt
  beside classes it never met in the training clips.

Gain and shift are drawn after mixing, per resulting clip. Each batch's draws come from a
generator seeded by (seed, epoch, step), so a resumed run augments its batches as the
uninterrupted one did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from Datasets.features import LOG_MEL_FLOOR
from Models.config_checks import is_finite_non_negative, is_share
from Models.weak_label.model import Standardisation


@dataclass(frozen=True)
class Augmentation:
    gain_db: float = 0.0
    time_shift_frames: int = 0
    mix_probability: float = 0.0
    front_end: str = "logmel"  # "logmel": inputs are standardised log-mel; otherwise mel energies
    standardisation: Standardisation | None = None  # of the log-mel inputs

    @classmethod
    def of(cls, config: dict, standardisation: Standardisation | None = None) -> "Augmentation":
        """The augmentation of Training.py's keys augment_gain_db, augment_time_shift (seconds)
        and augment_mix_probability."""
        frames_per_second = config["expected_sr"] / config["num_hop"]
        return cls(float(config["augment_gain_db"]), int(round(config["augment_time_shift"] * frames_per_second)),
                   float(config["augment_mix_probability"]), config["front_end"], standardisation)

    @property
    def active(self) -> bool:
        return bool(self.gain_db or self.time_shift_frames or self.mix_probability)

    def __call__(self, features: np.ndarray, labels: np.ndarray, seed) -> tuple[np.ndarray, np.ndarray]:
        """Augmented copies of a batch's inputs (clips, frames, mels) and labels (clips, classes)."""
        if not self.active:
            return features, labels
        rng = np.random.default_rng(seed)
        linear = self._to_linear(features)
        labels = labels.copy()
        if self.mix_probability and len(features) > 1:
            clips = np.arange(len(features))
            partners = (clips + rng.integers(1, len(features), len(features))) % len(features)  # never itself
            mixed = rng.random(len(features)) < self.mix_probability
            linear[mixed] = linear[mixed] + linear[partners[mixed]]
            labels[mixed] = np.maximum(labels[mixed], labels[partners[mixed]])
        if self.gain_db:
            gains = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db, len(features)) / 20.0)
            # magnitudes scale by the gain, energies by its square
            linear *= (gains ** (1.0 if self.front_end == "logmel" else 2.0))[:, None, None]
        if self.time_shift_frames:
            shifts = rng.integers(-self.time_shift_frames, self.time_shift_frames + 1, len(features))
            linear = np.stack([np.roll(clip, shift, axis=0) for clip, shift in zip(linear, shifts)])
        return self._from_linear(linear), labels

    def _to_linear(self, features: np.ndarray) -> np.ndarray:
        if self.front_end != "logmel":
            return features.astype(np.float64)
        log_mel = features.astype(np.float64) * self.standardisation.std + self.standardisation.mean
        return np.maximum(np.exp(log_mel) - LOG_MEL_FLOOR, 0.0)

    def _from_linear(self, linear: np.ndarray) -> np.ndarray:
        if self.front_end != "logmel":
            return linear.astype(np.float32)
        return self.standardisation(np.log(linear + LOG_MEL_FLOOR))


def check_augmentation_keys(config: dict) -> None:
    """Rejects augmentation settings that cannot work, naming the key."""
    for key in ("augment_gain_db", "augment_time_shift"):
        value = config[key]
        if not is_finite_non_negative(value):
            raise ValueError(f"Config key `{key}` must be a non-negative number, got {value!r}.")
    value = config["augment_mix_probability"]
    if not is_share(value):
        raise ValueError(f"Config key `augment_mix_probability` must be a probability in [0, 1], got {value!r}.")
