"""The per-source WGAN critic of Stoller et al. 2018 (SPEC section 2).

It scores one source's log1p magnitudes in the separator's output shape. It looks at the
target region only: the DC bin, the zero bins above Nyquist and the surplus frames of the
valid-convolution output are cropped first, so real and separated excerpts are compared on
exactly the same bins and frames.
"""
from __future__ import annotations

import keras
from keras import layers

from Datasets.windows import WindowShapes


def build_critic(shapes: WindowShapes, num_bins: int, num_frames: int, base_filters: int = 32,
                 max_filters: int = 256, dense_units: int = 32, name: str = "critic") -> keras.Model:
    """Critic over (shapes.output_bins, shapes.output_frames, 1); returns one unbounded score."""
    extra_bins_above = shapes.output_bins - num_bins
    extra_frames = shapes.output_frames - num_frames
    source = keras.Input((shapes.output_bins, shapes.output_frames, 1), name="source")
    features = layers.Cropping2D(((1, extra_bins_above), (extra_frames // 2, extra_frames - extra_frames // 2)),
                                 name="crop_target_region")(source)
    height, width = num_bins - 1, num_frames
    filters, index = min(base_filters, max_filters), 0
    while height > 4 and width > 4:  # halve both axes until the time axis is short
        features = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"conv_{index}")(features)
        features = layers.LeakyReLU(0.2, name=f"leaky_{index}")(features)
        height, width = -(-height // 2), -(-width // 2)
        index += 1
        if height > 4 and width > 4:
            filters = min(filters * 2, max_filters)
    while height > 4:  # then only the frequency axis, keeping the last width
        features = layers.Conv2D(filters, (4, 2), strides=(2, 1), padding="same", name=f"conv_{index}")(features)
        features = layers.LeakyReLU(0.2, name=f"leaky_{index}")(features)
        height, index = -(-height // 2), index + 1
    features = layers.Flatten(name="flatten")(features)
    features = layers.Dense(dense_units, name="dense")(features)
    features = layers.LeakyReLU(0.2, name="leaky_dense")(features)
    score = layers.Dense(1, use_bias=False, dtype="float32", name="score")(features)
    return keras.Model(source, score, name=name)
