"""Classifiers that turn each class's mask into a clip probability (Kong et al. 2018).

Masks (batch, frames, mels, classes) in [0, 1] -> probabilities (batch, classes). Every kind
treats each class on its own: class c's probability depends on class c's mask only.

* "gwrp": global weighted rank pooling. Class c's T*F mask values sorted descending,
  s_0 >= s_1 >= ..., give P = sum_j d^j s_j / sum_j d^j (option `decay` d, default 0.999;
  d = 1 is the mean, d = 0 the maximum). d^j underflows to 0 for large j, which only drops
  those ranks; the sum of the weights is never below 1.
* "gwrp_affine": GWRP, then per class sigmoid(a_c logit(P) + b_c) with a learnt scale a_c and
  offset b_c, which start at 1 and 0 (the model starts as "gwrp"). GWRP's fixed decay asks a
  present class's mask for about 1 / (1 - d) high values before P nears 1, so the mask of a
  short event (a drum hit covers 20-40 of a clip's 8,064 values) spreads beyond it, onto
  whatever else predicts the class (the drums of a music background). The read-out lets a few
  high values give a confident clip probability: trained on real recordings the scales reached
  1.3-2.5, the offsets of short events (kick, snare) 0.3-1.0 (`benchmarks/weak_label_dev_set.md`).
* "linear_softmax": P = sum_j s_j^2 / sum_j s_j, each mask value weighted by itself (Wang et
  al. 2019, "A comparison of five multiple instance learning pooling functions"). A mask that is
  1 on an event and 0 elsewhere gives P = 1 whatever the event's extent, where GWRP's fixed
  decay asks for about 1 / (1 - d) high values: a short event's mask must spread beyond the
  event, a long event's needs to cover only part of it. Its gradient raises the values above
  P / 2 and lowers those below, which drives masks towards 0 or 1.
* "max", "average": global max and global mean over frames and mels (Keras's pooling layers;
  the original code's "average" was in fact max pooling).
* "dense": a dense layer per class over that class's T*F mask values (option `num_frames`,
  required, fixes T), optionally over the values sorted descending (`sorted=True`, a learned
  rank weighting), then a sigmoid.
* "depthwise_cnn": `num_layers` depthwise 3x3 convolutions, each followed by ReLU and 2x2 max
  pooling, with `depth_multiplier` maps per class, global max pooling, a dense layer per
  class over its maps, a sigmoid.
* "gru": a GRU over time reads each class's mask (frames, mels) as a sequence; classes are
  folded into the batch, so the GRU is shared by the classes and each class has its own dense
  read-out of the last state, then a sigmoid.

The pooling kinds give probabilities in [0, 1], which can be exactly 0 or 1; the trainer's
binary cross-entropy (`from_logits=False`) clips them to [1e-7, 1 - 1e-7] (Keras's epsilon).
All outputs are float32 even under a mixed-precision policy.
"""
from __future__ import annotations

import inspect

import keras
import tensorflow as tf
from keras import layers


def _sorted_descending(values, axis: int):
    return tf.sort(values, axis=axis, direction="DESCENDING")


@keras.saving.register_keras_serializable(package="weak_label")
class GlobalWeightedRankPooling(keras.layers.Layer):
    """(batch, frames, mels, classes) -> (batch, classes): sum_j d^j s_j / sum_j d^j per class."""

    def __init__(self, decay: float = 0.999, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= decay <= 1:
            raise ValueError(f"GlobalWeightedRankPooling: decay must be in [0, 1], got {decay!r}.")
        self.decay = decay

    def call(self, masks):
        shape = tf.shape(masks)
        values = tf.reshape(masks, [shape[0], shape[1] * shape[2], shape[3]])
        ranked = _sorted_descending(values, axis=1)
        ranks = tf.cast(tf.range(tf.shape(ranked)[1]), masks.dtype)
        weights = tf.pow(tf.constant(self.decay, masks.dtype), ranks)  # 0^0 = 1: d = 0 keeps the maximum
        return tf.einsum("bnc,n->bc", ranked, weights) / tf.reduce_sum(weights)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


@keras.saving.register_keras_serializable(package="weak_label")
class LogitAffine(keras.layers.Layer):
    """(batch, classes) probabilities P -> sigmoid(scale_c logit(P) + offset_c), the identity at the start."""

    PROBABILITY_RANGE = (1e-6, 1 - 1e-6)  # a pooled 0 or 1 has no finite logit

    def build(self, input_shape):
        self.scale = self.add_weight((input_shape[-1],), "ones", name="scale")
        self.offset = self.add_weight((input_shape[-1],), "zeros", name="offset")

    def call(self, probabilities):
        clipped = tf.clip_by_value(probabilities, *self.PROBABILITY_RANGE)
        return tf.sigmoid(self.scale * (tf.math.log(clipped) - tf.math.log1p(-clipped)) + self.offset)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="weak_label")
class LinearSoftmaxPooling(keras.layers.Layer):
    """(batch, frames, mels, classes) -> (batch, classes): sum s^2 / sum s per class."""

    def call(self, masks):
        squares = tf.reduce_sum(tf.square(masks), axis=(1, 2))
        # an all-zero mask has P = 0 (the limit as its values go to 0)
        return squares / tf.maximum(tf.reduce_sum(masks, axis=(1, 2)), tf.keras.backend.epsilon())

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="weak_label")
class ChannelwiseDense(keras.layers.Layer):
    """(batch, features, classes) -> (batch, classes) logits: class c's features through its own
    dense unit, all classes in one einsum. `sort_features` sorts each class's features descending."""

    def __init__(self, sort_features: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sort_features = sort_features

    def build(self, input_shape):
        _, features, classes = input_shape
        self.kernel = self.add_weight((features, classes), "glorot_uniform", name="kernel")
        self.bias = self.add_weight((classes,), "zeros", name="bias")

    def call(self, inputs):
        if self.sort_features:
            inputs = _sorted_descending(inputs, axis=1)
        return tf.einsum("bnc,nc->bc", inputs, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "sort_features": self.sort_features}


@keras.saving.register_keras_serializable(package="weak_label")
class PerClassGRU(keras.layers.Layer):
    """(batch, frames, mels, classes) -> (batch, units, classes): the last GRU state of each
    class's mask read as a sequence of frames, classes folded into the batch."""

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.gru = layers.GRU(units, name="gru")

    def build(self, input_shape):
        self.gru.build((None, input_shape[1], input_shape[2]))

    def call(self, masks):
        batch, frames, mels, classes = tf.unstack(tf.shape(masks))
        sequences = tf.reshape(tf.transpose(masks, [0, 3, 1, 2]), [batch * classes, frames, mels])
        states = tf.reshape(self.gru(sequences), [batch, classes, self.units])
        return tf.transpose(states, [0, 2, 1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _probability(name: str):
    return layers.Activation("sigmoid", dtype="float32", name=name)


def _gwrp(num_classes: int, num_mels: int, decay: float = 0.999):
    return GlobalWeightedRankPooling(decay, dtype="float32", name="gwrp")


def _gwrp_affine(num_classes: int, num_mels: int, decay: float = 0.999):
    masks = keras.Input((None, num_mels, num_classes), name="masks")
    pooled = _gwrp(num_classes, num_mels, decay)(masks)
    return keras.Model(masks, LogitAffine(dtype="float32", name="logit_affine")(pooled), name="gwrp_affine")


def _linear_softmax(num_classes: int, num_mels: int):
    return LinearSoftmaxPooling(dtype="float32", name="linear_softmax")


def _max(num_classes: int, num_mels: int):
    return layers.GlobalMaxPooling2D(dtype="float32", name="max_pooling")


def _average(num_classes: int, num_mels: int):
    return layers.GlobalAveragePooling2D(dtype="float32", name="average_pooling")


def _dense(num_classes: int, num_mels: int, num_frames: int | None = None, sorted: bool = False):
    if num_frames is None:
        raise ValueError("build_classifier('dense'): option num_frames is required (the frames per training clip); "
                         "the dense weights cover every (frame, mel) value of a mask.")
    masks = keras.Input((num_frames, num_mels, num_classes), name="masks")
    values = layers.Reshape((num_frames * num_mels, num_classes), name="flatten_masks")(masks)
    logits = ChannelwiseDense(sorted, name="channelwise_dense")(values)
    return keras.Model(masks, _probability("probabilities")(logits), name="dense_classifier")


def _depthwise_cnn(num_classes: int, num_mels: int, num_layers: int = 2, depth_multiplier: int = 4,
                   kernel_size: int = 3):
    masks = keras.Input((None, num_mels, num_classes), name="masks")
    maps = masks
    for index in range(num_layers):
        # Depthwise: output map k * depth_multiplier + m comes from input map k only, so the maps stay per class.
        maps = layers.DepthwiseConv2D(kernel_size, padding="same", depth_multiplier=depth_multiplier if index == 0
                                      else 1, activation="relu", name=f"depthwise_{index}")(maps)
        maps = layers.MaxPooling2D(2, padding="same", name=f"pool_{index}")(maps)
    pooled = layers.GlobalMaxPooling2D(name="global_max")(maps)
    per_class = layers.Reshape((num_classes, depth_multiplier), name="group_by_class")(pooled)
    per_class = layers.Permute((2, 1), name="classes_last")(per_class)
    logits = ChannelwiseDense(name="channelwise_dense")(per_class)
    return keras.Model(masks, _probability("probabilities")(logits), name="depthwise_cnn_classifier")


def _gru(num_classes: int, num_mels: int, units: int = 32):
    masks = keras.Input((None, num_mels, num_classes), name="masks")
    states = PerClassGRU(units, name="per_class_gru")(masks)
    logits = ChannelwiseDense(name="channelwise_dense")(states)
    return keras.Model(masks, _probability("probabilities")(logits), name="gru_classifier")


CLASSIFIERS = {"gwrp": _gwrp, "gwrp_affine": _gwrp_affine, "linear_softmax": _linear_softmax, "max": _max,
               "average": _average, "dense": _dense, "depthwise_cnn": _depthwise_cnn, "gru": _gru}


def build_classifier(kind: str, num_classes: int, num_mels: int, **options):
    """A layer or model mapping masks (batch, frames, mels, classes) to probabilities (batch, classes)."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"build_classifier: unknown kind {kind!r}; choose one of {sorted(CLASSIFIERS)}.")
    builder = CLASSIFIERS[kind]
    accepted = list(inspect.signature(builder).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"build_classifier({kind!r}): unknown options {unknown}; this kind accepts {accepted}.")
    return builder(num_classes, num_mels, **options)
