"""The valid-convolution U-Net separator of Stoller et al. 2018 (SPEC section 2).

Spectrogram in, spectrograms out: log1p mixture magnitudes (bins, frames, 1) to one log1p
magnitude per source, each for the centre region of the input. Because every crop in a
valid-convolution U-Net is the same whatever the input size, the time axis is left open:
the same model runs on 158-frame training windows and on whole songs.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from Models.shapes import unet_shapes


@keras.saving.register_keras_serializable(package="separation")
class MaxPooling2x2(layers.Layer):
    """Exactly `layers.MaxPooling2D(2)`, written as the maximum of four strided slices.

    Under XLA on a CPU, MaxPooling2D's gradient becomes a select-and-scatter that builds index
    tensors the size of the layer: a sixth of a paper-shape training step. The gradient of
    `maximum` is an elementwise select that fuses with its neighbours, and the step runs 1.2x
    faster (benchmarks/bench_training.py). Ties send the gradient to one input, as pooling does.
    """

    def call(self, features):
        shape = ops.shape(features)
        features = features[:, :shape[1] // 2 * 2, :shape[2] // 2 * 2]
        return ops.maximum(ops.maximum(features[:, 0::2, 0::2], features[:, 0::2, 1::2]),
                           ops.maximum(features[:, 1::2, 0::2], features[:, 1::2, 1::2]))


def _centre_crop(tensor, amount: int, name: str):
    return layers.Cropping2D(((amount, amount), (amount, amount)), name=name)(tensor)


def build_separator(num_layers: int = 4, num_frames: int = 64, num_bins: int = 257, base_filters: int = 16,
                    source_names: tuple[str, ...] = ("accompaniment", "voice")) -> keras.Model:
    """U-Net mapping (input_bins, frames, 1) to a dict {source: (output_bins, frames - context, 1)}.

    Filters double per level from `base_filters`. `num_frames` does not constrain the model:
    any input length `unet_shapes` allows for some frame count works.
    """
    shapes = unet_shapes(num_layers, num_frames, num_bins)
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

