"""The mask model of weak-label joint separation-classification (Kong et al. 2018).

Features (batch, frames, mels) in, one mask per class (batch, frames, mels, classes) in [0, 1]
out, the same frames and mels: every convolution is preceded by zero padding of half its
kernel. The time axis is open, so whole clips of any length can be separated.

Two named settings:

* "thesis": 3 blocks ZeroPad(2) -> Conv 5x5 -> BatchNorm -> Dropout -> activation, with
  64, 64, C feature maps, dropout 0.1, 0.1, 0, LeakyReLU(0.01), the last activation giving the masks.
* "kong": 4 x (Conv 3x3 64 -> BN -> ReLU, Conv 3x3 64 -> BN -> Dropout 0.3 -> ReLU), then a
  1x1 convolution to C giving the masks. Dropout before a (leaky) ReLU is the same as after
  it, as both are positively homogeneous, so one block layout serves both settings.

The overrides replace the setting's hidden feature maps, kernel size, hidden dropout rate and
number of blocks (thesis: all blocks including the last; kong: double blocks before the 1x1).
`frequency_dilations` gives each hidden block (thesis: all but the last; kong: every double
block) a dilation over mel bands. Four blocks of 5x5 convolutions see 17 of 64 bands, too few to
tell a snare's wires from a cymbal's wash by the rest of the spectrum; dilations 1, 3, 9 widen
that to 57 bands with no gaps (each block's step is at most the span of the ones before it) and
leave the time context, the masks' resolution and the number of weights as they were.

Background: with `last_activation="sigmoid"` each class mask is independent and the
background is what they leave over, `background_mask(masks)` = 1 - clip(sum, 0, 1). With
"softmax" the last convolution has C + 1 maps, softmax runs over classes plus background,
and the model returns the C class masks; the background is the dropped channel, exactly
1 - sum of the class masks.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

SETTINGS = {
    "thesis": dict(channels=64, kernel_size=5, dropout=0.1, num_blocks=3),
    "kong": dict(channels=64, kernel_size=3, dropout=0.3, num_blocks=4),
}
LAST_ACTIVATIONS = ("sigmoid", "softmax")


@keras.saving.register_keras_serializable(package="weak_label")
class ClassMasks(keras.layers.Layer):
    """The first `num_classes` channels: the class masks without the softmax's background."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def call(self, masks):
        return masks[..., :self.num_classes]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def background_mask(masks):
    """1 - clip(sum over classes, 0, 1) of sigmoid masks (..., classes): (...)."""
    return 1.0 - keras.ops.clip(keras.ops.sum(masks, axis=-1), 0.0, 1.0)


def hidden_blocks(setting: str, num_blocks: int | None = None) -> int:
    """How many blocks of `setting` (with `num_blocks`, or the setting's own number) come before
    the masks, each with its own frequency dilation."""
    if num_blocks is None:
        num_blocks = SETTINGS[setting]["num_blocks"]
    return num_blocks - 1 if setting == "thesis" else num_blocks


def are_frequency_dilations(rates, num_hidden: int) -> bool:
    """Whether `rates` is a list of `num_hidden` positive integers, one per hidden block."""
    return isinstance(rates, (list, tuple)) and len(rates) == num_hidden and all(
        isinstance(rate, int) and not isinstance(rate, bool) and rate >= 1 for rate in rates)


def _conv_block(features, filters: int, kernel_size: int, dropout: float, activation, name: str,
                synchronized: bool = False, frequency_dilation: int = 1):
    features = layers.ZeroPadding2D((kernel_size // 2, kernel_size // 2 * frequency_dilation),
                                    name=f"{name}_pad")(features)
    # No bias: batch normalisation's offset takes its place.
    features = layers.Conv2D(filters, kernel_size, dilation_rate=(1, frequency_dilation), use_bias=False,
                             name=f"{name}_conv")(features)
    # PyTorch's running-statistics rate (Keras momentum 0.9, not 0.99), as the original models were
    # trained with: weak-label training runs few steps, and 0.99 leaves inference-mode statistics stale.
    # `synchronized`: statistics over the global batch of all replicas, not each replica's slice.
    features = layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name=f"{name}_bn")(features)
    if dropout:
        features = layers.Dropout(dropout, name=f"{name}_dropout")(features)
    return activation(features)


def build_mask_model(num_mels: int, num_classes: int, setting: str = "thesis", last_activation: str = "sigmoid",
                     channels: int | None = None, kernel_size: int | None = None, dropout: float | None = None,
                     num_blocks: int | None = None, frequency_dilations: Sequence[int] | None = None,
                     synchronized_batch_norm: bool = False, input_maps: int = 1,
                     name: str = "mask_model") -> keras.Model:
    """(batch, None, num_mels) features, or (batch, None, num_mels, input_maps) where a front end
    gives more than one map -> (batch, None, num_mels, num_classes) masks."""
    if setting not in SETTINGS:
        raise ValueError(f"build_mask_model: unknown setting {setting!r}; choose one of {sorted(SETTINGS)}.")
    if last_activation not in LAST_ACTIVATIONS:
        raise ValueError(f"build_mask_model: unknown last_activation {last_activation!r}; "
                         f"choose one of {LAST_ACTIVATIONS}.")
    overrides = dict(channels=channels, kernel_size=kernel_size, dropout=dropout, num_blocks=num_blocks)
    options = {**SETTINGS[setting], **{key: value for key, value in overrides.items() if value is not None}}
    if options["kernel_size"] % 2 != 1:
        raise ValueError(f"build_mask_model: kernel_size must be odd to keep the frames and mels, "
                         f"got {options['kernel_size']}.")
    if options["num_blocks"] < (2 if setting == "thesis" else 1):
        raise ValueError(f"build_mask_model: num_blocks={options['num_blocks']} is too few for the "
                         f"{setting!r} setting (thesis: at least 2, kong: at least 1).")
    num_hidden = hidden_blocks(setting, options["num_blocks"])
    if frequency_dilations is None:
        frequency_dilations = [1] * num_hidden
    if not are_frequency_dilations(frequency_dilations, num_hidden):
        raise ValueError(f"build_mask_model: frequency_dilations must be {num_hidden} positive integers, one per "
                         f"hidden block of the {setting!r} setting with {options['num_blocks']} blocks, "
                         f"got {frequency_dilations!r}.")

    mask_maps = num_classes + (last_activation == "softmax")
    # float32 masks even under a mixed-precision policy: the pooling and the losses need the range.
    output_activation = (layers.Activation("sigmoid", dtype="float32", name="sigmoid")
                         if last_activation == "sigmoid" else layers.Softmax(axis=-1, dtype="float32", name="softmax"))
    if input_maps == 1:
        features = keras.Input((None, num_mels), name="features")
        maps = layers.Reshape((-1, num_mels, 1), name="add_channel")(features)
    else:
        features = maps = keras.Input((None, num_mels, input_maps), name="features")
    hidden = dict(filters=options["channels"], kernel_size=options["kernel_size"], synchronized=synchronized_batch_norm)
    if setting == "thesis":
        for block, rate in enumerate(frequency_dilations):
            maps = _conv_block(maps, dropout=options["dropout"], name=f"block_{block}", frequency_dilation=rate,
                               activation=layers.LeakyReLU(0.01, name=f"block_{block}_leaky"), **hidden)
        maps = _conv_block(maps, mask_maps, options["kernel_size"], 0.0, output_activation,
                           f"block_{options['num_blocks'] - 1}", synchronized_batch_norm)
    else:
        for block, rate in enumerate(frequency_dilations):
            maps = _conv_block(maps, dropout=0.0, name=f"block_{block}a", frequency_dilation=rate,
                               activation=layers.ReLU(name=f"block_{block}a_relu"), **hidden)
            maps = _conv_block(maps, dropout=options["dropout"], name=f"block_{block}b", frequency_dilation=rate,
                               activation=layers.ReLU(name=f"block_{block}b_relu"), **hidden)
        maps = output_activation(layers.Conv2D(mask_maps, 1, name="mask_conv")(maps))
    masks = ClassMasks(num_classes, name="class_masks")(maps) if last_activation == "softmax" else maps
    return keras.Model(features, masks, name=name)
