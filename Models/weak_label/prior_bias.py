"""Starting the joint model at the class priors: the bias that sets the class scores is chosen so
that, on a batch of training clips, each class's mean clip probability equals its frequency.

Why: with zero biases every mask starts near 0.5 (a sigmoid of batch-normalised values around
0), so every clip probability starts near 0.5, while on the realistic development set a class
sounds in one clip in six. Adam moves a bias by about the learning rate per step, and a few
hundred clips make few steps per epoch, so the model spent its epochs pulling every probability
down towards the prior before anything told the clips apart: the weak_label_demo config
(learning rate 3e-3, 15 steps per epoch) still predicted 0.38 (spread 0.003 over the clips)
after 20 epochs, at validation AUC 0.51. Started at the priors, it reached 0.72 within 9.

Which bias: for the pooling classifiers (gwrp, gwrp_affine, linear_softmax, max, average) the one
before the masks' last activation (the thesis setting's last batch normalisation offset, the Kong
setting's 1x1 convolution bias), so that the masks themselves start sparse; for the learned classifiers
(dense, depthwise_cnn, gru) the bias of their read-out, before the sigmoid. The search is a
bisection per class on the scores of one forward pass in training mode (batch statistics,
dropout), as the first steps see them; the model's other variables (moving statistics,
dropout generators) are left as they were.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from Models.weak_label.model import FRONT_END_LAYER_NAME

POOLING_CLASSIFIERS = ("gwrp", "gwrp_affine", "linear_softmax", "max", "average")
READOUT_LAYER = "channelwise_dense"  # the per-class dense read-out of the learned classifiers (pooling.py)
PRIOR_RANGE = (0.01, 0.99)  # a prior of 0 or 1 has no finite bias
BIAS_RANGE = 30.0  # the search runs over [-30, 30]: far beyond what a sigmoid can tell apart
ITERATIONS = 40


def _pre_activation_layer(mask_model: keras.Model) -> keras.layers.Layer:
    """The layer whose output the masks' last activation (sigmoid or softmax) takes."""
    activation = next(layer for layer in mask_model.layers if layer.name in ("sigmoid", "softmax"))
    return activation.input._keras_history.operation


def _logit(probability: np.ndarray) -> np.ndarray:
    return np.log(probability) - np.log1p(-probability)


def _bias_variable(layer: keras.layers.Layer):
    return layer.beta if isinstance(layer, keras.layers.BatchNormalization) else layer.bias


def start_at_priors(model: keras.Model, classifier_kind: str, features: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Shifts the class bias of `model` (build_weak_label_model's) so that its mean training-mode
    probability on `features` (a batch of training inputs) is each class's prior; returns the
    shift per class."""
    priors = np.clip(np.asarray(priors, np.float64), *PRIOR_RANGE)
    mask_model = model.get_layer("mask_model")
    classifier = model.layers[-1]
    saved = [variable.numpy() for variable in model.variables]
    names = [layer.name for layer in model.layers]
    mask_input = model.get_layer(FRONT_END_LAYER_NAME)(features) if FRONT_END_LAYER_NAME in names else features
    if classifier_kind in POOLING_CLASSIFIERS:
        layer = _pre_activation_layer(mask_model)
        logits = keras.Model(mask_model.input, layer.output)(mask_input, training=True)
        num_classes = len(priors)
        softmax = logits.shape[-1] > num_classes  # the background channel stays as it is

        def probabilities(shift: np.ndarray) -> np.ndarray:
            shifted = logits + tf.constant(np.append(shift, [0.0] * softmax), logits.dtype)
            masks = tf.nn.softmax(shifted)[..., :num_classes] if softmax else tf.sigmoid(shifted)
            return classifier(masks).numpy().mean(axis=0)
    else:
        layer = classifier.get_layer(READOUT_LAYER)
        logits = keras.Model(classifier.input, layer.output)(mask_model(mask_input, training=True), training=True)

        def probabilities(shift: np.ndarray) -> np.ndarray:
            return tf.sigmoid(logits + tf.constant(shift, logits.dtype)).numpy().mean(axis=0)
    # b <- b + logit(prior) - logit(p(b)): for sigmoid masks the slope of logit(p) in b lies in (0, 1]
    # (the mean of s(1 - s) never exceeds p(1 - p)), so the steps approach the solution from one side
    # without overshooting; a softmax couples the classes only through the shared denominator.
    shift = np.zeros(len(priors))
    for _ in range(ITERATIONS):
        reached = np.clip(probabilities(shift), 1e-12, 1 - 1e-12)
        shift = np.clip(shift + _logit(priors) - _logit(reached), -BIAS_RANGE, BIAS_RANGE)
    for variable, value in zip(model.variables, saved):
        variable.assign(value)
    bias = _bias_variable(layer)
    background = [0.0] * (bias.shape[0] - len(shift))  # a softmax's background channel keeps its bias
    bias.assign(bias.numpy() + np.append(shift, background).astype(bias.numpy().dtype))
    return shift
