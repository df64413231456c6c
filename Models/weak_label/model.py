"""The joint separation-classification model of Kong et al. 2018, as one functional Keras model.

features (batch, frames, mels) -> {"masks": (batch, frames, mels, classes),
                                   "probabilities": (batch, classes)}

The features are standardised log-mel frames (`front_end="logmel"`), or mel energies that a
front-end layer inside the model normalises: PCEN (`"pcen"`, `"trainable_pcen"`,
Models/weak_label/pcen.py), decibels above each band's median over the clip (`"relative_db"`,
Models/weak_label/relative_db.py), or both as two input maps (`"pcen_relative_db"`). The mask model
(Models/weak_label/mask_model.py) is the sub-model "mask_model": call it directly to separate clips of
any length, including with classifiers that fix the number of frames ("dense").
Training needs only a binary cross-entropy on "probabilities", e.g.
`model.compile(loss={"probabilities": "binary_crossentropy"})` and plain `fit`.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from Models.weak_label.mask_model import build_mask_model
from Models.weak_label.pcen import PCEN
from Models.weak_label.relative_db import PcenAndRelativeDecibels, RelativeDecibels
from Models.weak_label.pooling import build_classifier


# The layer each front end puts before the mask model; log-mel features come standardised.
FRONT_END_LAYERS = {"logmel": None, "pcen": lambda **kwargs: PCEN(trainable=False, **kwargs),
                    "trainable_pcen": lambda **kwargs: PCEN(trainable=True, **kwargs),
                    "relative_db": RelativeDecibels, "pcen_relative_db": PcenAndRelativeDecibels}
# Input maps a front end gives the mask model where it is more than one.
FRONT_END_MAPS = {"pcen_relative_db": 2}
FRONT_END_LAYER_NAME = "front_end"


def build_weak_label_model(num_mels: int, num_classes: int, mask_options: dict, classifier_kind: str,
                           classifier_options: dict, front_end: str = "logmel",
                           name: str = "weak_label_model") -> keras.Model:
    """The model; its outputs are the dict {"masks": ..., "probabilities": ...}."""
    features = keras.Input((None, num_mels), name="features")
    layer = FRONT_END_LAYERS[front_end]
    # in float32 under any policy: mel energies and PCEN's eps = 1e-6 need the range
    mask_input = features if layer is None else layer(dtype="float32", name=FRONT_END_LAYER_NAME)(features)
    masks = build_mask_model(num_mels, num_classes, input_maps=FRONT_END_MAPS.get(front_end, 1),
                             **mask_options)(mask_input)
    probabilities = build_classifier(classifier_kind, num_classes, num_mels, **classifier_options)(masks)
    return keras.Model(features, {"masks": masks, "probabilities": probabilities}, name=name)


@dataclass
class Standardisation:
    """Feature mean and standard deviation from the training clips, per mel band or global."""

    mean: np.ndarray  # (mels,)
    std: np.ndarray  # (mels,)

    @classmethod
    def fit(cls, features: np.ndarray, per_band: bool = True) -> "Standardisation":
        axes = (0, 1) if per_band else None
        mean = np.broadcast_to(features.mean(axis=axes), features.shape[-1:])
        std = np.broadcast_to(features.std(axis=axes), features.shape[-1:])
        return cls(np.array(mean, np.float32), np.maximum(np.array(std, np.float32), 1e-5))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32, copy=False)


def split_outputs(outputs) -> tuple[tf.Tensor, tf.Tensor]:
    """(masks, probabilities) from the model's outputs."""
    if isinstance(outputs, dict):
        return outputs["masks"], outputs["probabilities"]
    return outputs[0], outputs[1]


class WeakLabelPredictor:
    """The model in inference mode, as one graph traced for any batch and clip length."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._step = tf.function(lambda features: split_outputs(model(features, training=False)),
                                 reduce_retracing=True)

    def predict(self, features: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(masks, probabilities) of model inputs (clips, frames, mels), in batches."""
        masks, probabilities = [], []
        for start in range(0, len(features), batch_size):
            batch_masks, batch_probabilities = self._step(tf.constant(features[start:start + batch_size]))
            masks.append(batch_masks.numpy())
            probabilities.append(batch_probabilities.numpy())
        return np.concatenate(masks), np.concatenate(probabilities)
