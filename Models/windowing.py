"""Running a separator over spectrograms of any length: the one windowing of the project.

The network's time axis is open, so a spectrogram is cut into long windows, each with its
context frames on both sides (zeros before the first frame and after the last), and the
outputs are laid end to end. Max pooling makes the U-Net equivariant only to shifts by
multiples of its grid (2^num_layers frames), so windows advance by such a multiple and the
surplus output frames of each window are dropped. Then the result does not depend on the
window length or on where a stream was cut into blocks (up to float rounding), only the
memory does.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf


@functools.lru_cache(maxsize=4)
def compiled_separator(model) -> Callable:
    """The model as one TensorFlow graph, traced once for any batch and window length (and once
    per model, not per song): about twice as fast on a CPU as Keras's layer-by-layer eager calls."""
    spec = tf.TensorSpec([None, model.input_shape[1], None, 1], tf.float32)
    return tf.function(lambda mixture: model(mixture, training=False), input_signature=[spec])


class WindowedSeparation:
    """Separates a stream of log1p mixture frames (channels, bins, frames) in windows of `step`
    output frames (rounded down to the geometry's grid, at least one grid): push blocks in
    order, the last with `last=True`, and get back {source: (channels, bins, frames)} for every
    frame whose window is complete. Concatenated, the outputs have as many frames as were pushed."""

    def __init__(self, model, geometry, num_bins: int, step: int, channels: int):
        grid = geometry.grid
        self.step = max(step // grid, 1) * grid
        shapes = geometry.windows(self.step)
        self.model, self.num_bins, self.input_frames = compiled_separator(model), num_bins, shapes.input_frames
        self._bins_below = shapes.input_bins_below
        # Padded log mixture from the next window's start on; the first window sees `context` zeros.
        self._buffer = np.zeros((channels, shapes.input_bins, shapes.context_frames), np.float32)
        self._received = 0
        self._produced = 0

    def push(self, log_frames: np.ndarray, last: bool) -> dict[str, np.ndarray]:
        self._received += log_frames.shape[2]
        padded = np.zeros((*self._buffer.shape[:2], log_frames.shape[2]), np.float32)
        padded[:, self._bins_below:self._bins_below + self.num_bins] = log_frames
        self._buffer = np.concatenate([self._buffer, padded], axis=2)
        estimates: dict[str, list[np.ndarray]] = {}
        while self._buffer.shape[2] >= self.input_frames or (last and self._produced < self._received):
            if self._buffer.shape[2] < self.input_frames:  # zeros after the signal
                missing = self.input_frames - self._buffer.shape[2]
                self._buffer = np.pad(self._buffer, ((0, 0), (0, 0), (0, missing)))
            outputs = self.model(tf.constant(self._buffer[:, :, :self.input_frames, None]))
            for name, output in outputs.items():
                estimates.setdefault(name, []).append(np.asarray(output)[:, :self.num_bins, :self.step, 0])
            self._buffer = self._buffer[:, :, self.step:]
            self._produced += self.step
        # The last window may reach past the signal; its surplus frames are no frames of the song.
        surplus = max(self._produced - self._received, 0)
        return {name: np.concatenate(parts, axis=2)[:, :, :self.step * len(parts) - surplus]
                for name, parts in estimates.items()}
