"""The valid-convolution U-Net separator of Stoller et al. 2018 (SPEC section 2).

Spectrogram in, spectrograms out: log1p mixture magnitudes (bins, frames, 1) to one log1p
magnitude per source, each for the centre region of the input. Because every crop in a
valid-convolution U-Net is the same whatever the input size, the time axis is left open:
the same model runs on 158-frame training windows and on whole songs.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from Datasets.conversions import PAPER_SOURCES
from Models.shapes import UnetGeometry, unet_shapes


@tf.autograph.experimental.do_not_convert  # autograph would convert the gradient closure too
@tf.custom_gradient
def max_pool_2x2(features):
    """2x2 max pooling whose gradient is written as elementwise selects.

    Under XLA on a CPU, the built-in gradient becomes a select-and-scatter that builds index
    tensors the size of the layer: a sixth of a paper-shape training step. The selects fuse with
    their neighbours instead. The forward pass stays the built-in pooling, which the graph-mode
    inference of whole songs runs fastest. As with the built-in, the gradient goes to the first
    maximum of each window in row-major order, and the odd last row or column gets none.
    """
    pooled = tf.nn.max_pool2d(features, 2, 2, "VALID")

    def gradient(upstream):
        shape = tf.shape(features)
        height, width = shape[1] // 2, shape[2] // 2
        taken = tf.zeros_like(pooled, tf.bool)
        corners = []
        for row in (0, 1):
            for column in (0, 1):
                corner = features[:, row:2 * height:2, column:2 * width:2]
                chosen = tf.logical_and(tf.equal(corner, pooled), tf.logical_not(taken))
                taken = tf.logical_or(taken, chosen)
                corners.append(tf.where(chosen, upstream, tf.zeros_like(upstream)))
        # Stacked to (batch, height, 2, width, 2, channels), the corners interleave into place.
        rows = [tf.stack(corners[2 * row:2 * row + 2], axis=3) for row in (0, 1)]
        interleaved = tf.reshape(tf.stack(rows, axis=2), [shape[0], 2 * height, 2 * width, shape[3]])
        return tf.pad(interleaved, [[0, 0], [0, shape[1] - 2 * height], [0, shape[2] - 2 * width], [0, 0]])

    return pooled, gradient


@keras.saving.register_keras_serializable(package="separation")
class MaxPooling2x2(layers.Layer):
    """`layers.MaxPooling2D(2)` with `max_pool_2x2`'s gradient: training steps under XLA run
    1.2x faster (benchmarks/bench_training.py)."""

    def call(self, features):
        return max_pool_2x2(features)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return batch, height and height // 2, width and width // 2, channels


def _centre_crop(tensor, amount: int, name: str):
    return layers.Cropping2D(((amount, amount), (amount, amount)), name=name)(tensor)


def geometry(num_bins: int = 257, num_layers: int = 4, **_) -> UnetGeometry:
    """The U-Net's window sizes; its other arguments do not change them."""
    return UnetGeometry(num_layers, num_bins)


def build_separator(num_layers: int = 4, num_bins: int = 257, base_filters: int = 16,
                    source_names: tuple[str, ...] = PAPER_SOURCES) -> keras.Model:
    """U-Net mapping (input_bins, frames, 1) to a dict {source: (output_bins, frames - context, 1)}.

    Filters double per level from `base_filters`. The time axis is open: any input length
    `unet_shapes` allows for some frame count works.
    """
    shapes = unet_shapes(num_layers, 2 ** num_layers, num_bins)
    convolution = dict(kernel_size=3, padding="valid", activation="relu", kernel_initializer="glorot_uniform")
    mixture = keras.Input((shapes.input_bins, None, 1), name="mixture")
    features = layers.Conv2D(base_filters, name="encoder_0", **convolution)(mixture)
    skips = [features]
    for level in range(1, num_layers + 1):
        features = MaxPooling2x2(name=f"pool_{level}")(features)
        features = layers.Conv2D(base_filters * 2 ** level, name=f"encoder_{level}", **convolution)(features)
        skips.append(features)
    for level in reversed(range(num_layers)):
        filters = base_filters * 2 ** level
        features = layers.Conv2DTranspose(filters, 2, strides=2, activation="relu", name=f"upsample_{level}")(features)
        # Encoder level `level` is 6 * 2^(L - level) - 8 larger than the upsampled map.
        skip = _centre_crop(skips[level], 3 * 2 ** (num_layers - level) - 4, f"crop_skip_{level}")
        features = layers.Concatenate(name=f"concat_{level}")([skip, features])
        features = layers.Conv2D(filters, name=f"decoder_{level}", **convolution)(features)
    # Passing the input on to the last layer helps a network that outputs magnitudes, not masks.
    context = _centre_crop(mixture, (shapes.input_bins - shapes.output_bins) // 2, "crop_mixture")
    features = layers.Concatenate(name="concat_mixture")([context, features])
    # float32 outputs even under a mixed-precision policy: losses and expm1 need the range.
    outputs = {name: layers.Conv2D(1, 1, activation="relu", dtype="float32", name=name)(features)
               for name in source_names}
    return keras.Model(mixture, outputs, name="separator")

