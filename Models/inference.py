"""Whole-song application of the valid-convolution U-Net.

The model's time axis is open, so a song is cut into long windows, each with its context
frames on both sides, and the outputs are laid end to end. Max pooling makes the network
equivariant only to shifts by multiples of 2^num_layers frames, so windows advance by such a
multiple (the two surplus output frames of each window are dropped). Then the result does
not depend on the window length (up to float rounding), only the memory does.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from Datasets.windows import WindowShapes
from Models.shapes import input_size_for_output, valid_output_size


@functools.lru_cache(maxsize=4)
def compiled_separator(model) -> Callable:
    """The model as one TensorFlow graph, traced once for any batch and window length (and once
    per model, not per song): about twice as fast on a CPU as Keras's layer-by-layer eager calls."""
    spec = tf.TensorSpec([None, model.input_shape[1], None, 1], tf.float32)
    return tf.function(lambda mixture: model(mixture, training=False), input_signature=[spec])


def separate_log_spectrogram(separator, log_mixture: np.ndarray, shapes: WindowShapes, num_layers: int,
                             window_frames: int = 1024) -> dict[str, np.ndarray]:
    """log1p mixture magnitudes (bins, frames) -> {source: log1p estimate (bins, frames)}."""
    num_bins, num_frames = log_mixture.shape
    grid = 2 ** num_layers
    step = max(min(window_frames, num_frames) // grid, 1) * grid
    output_frames = valid_output_size(step, num_layers)
    input_frames = input_size_for_output(output_frames, num_layers)
    context = (input_frames - output_frames) // 2
    num_windows = -(-num_frames // step)
    padded = np.zeros((shapes.input_bins, (num_windows - 1) * step + input_frames), np.float32)
    padded[shapes.input_bins_below:shapes.input_bins_below + num_bins, context:context + num_frames] = log_mixture
    estimates: dict[str, list[np.ndarray]] = {}
    compiled = compiled_separator(separator)
    for window in range(num_windows):
        start = window * step
        outputs = compiled(tf.constant(padded[None, :, start:start + input_frames, None]))
        for name, output in outputs.items():
            estimates.setdefault(name, []).append(np.asarray(output)[0, :num_bins, :step, 0])
    return {name: np.concatenate(parts, axis=1)[:, :num_frames] for name, parts in estimates.items()}
