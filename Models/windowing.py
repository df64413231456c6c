"""Running a separator over spectrograms of any length: the one windowing of the project.

The network's time axis is open, so a spectrogram is cut into long windows, each with its
context frames on both sides (zeros before the first frame and after the last), and the
outputs are laid end to end. Max pooling makes the U-Net equivariant only to shifts by
multiples of its grid (2^num_layers frames), so windows advance by such a multiple and the
surplus output frames of each window are dropped. Then the result does not depend on the
window length or on where a stream was cut into blocks (up to float rounding), only the
memory does.

The network always runs on batches of one fixed shape, (positions x channels) windows of one
length, the last batch padded with silent windows: a graph with static shapes lets the
convolution kernels specialise (about twice the speed of one traced for any batch and length
on a CPU) and is traced once per model and shape, not once per song.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf


@functools.lru_cache(maxsize=8)
def compiled_separator(model, batch: int, input_bins: int, input_frames: int, jit_compile: bool = False) -> Callable:
    """The model as one TensorFlow graph for inputs of exactly (batch, input_bins, input_frames, 1)."""
    spec = tf.TensorSpec([batch, input_bins, input_frames, 1], tf.float32)
    return tf.function(lambda mixture: model(mixture, training=False), input_signature=[spec], jit_compile=jit_compile)


class WindowedSeparation:
    """Separates a stream of log1p mixture frames (channels, bins, frames) in windows of `step`
    output frames (rounded down to the geometry's grid, at least one grid), `positions`
    consecutive windows of every channel per network call: push blocks in order, the last
    with `last=True`, and get back {source: (channels, bins, frames)} for every frame whose
    batch has run. Concatenated, the outputs have as many frames as were pushed."""

    def __init__(self, model, geometry, num_bins: int, step: int, channels: int, positions: int = 1,
                 jit_compile: bool = False):
        grid = geometry.grid
        self.step, self.positions, self.channels = max(step // grid, 1) * grid, max(positions, 1), channels
        shapes = geometry.windows(self.step)
        self.num_bins, self.input_frames = num_bins, shapes.input_frames
        self.model = compiled_separator(model, self.positions * channels, shapes.input_bins, shapes.input_frames,
                                        jit_compile)
        self._bins_below = shapes.input_bins_below
        # Padded log mixture from the next window's start on; the first window sees `context` zeros.
        self._buffer = np.zeros((channels, shapes.input_bins, shapes.context_frames), np.float32)
        self._windows: list[np.ndarray] = []  # cut, waiting for a full batch: (channels, bins, input frames) each
        self._received = 0
        self._cut = 0  # output frames of the windows cut so far
        self._produced = 0

    def push(self, log_frames: np.ndarray, last: bool) -> dict[str, np.ndarray]:
        self._received += log_frames.shape[2]
        padded = np.zeros((*self._buffer.shape[:2], log_frames.shape[2]), np.float32)
        padded[:, self._bins_below:self._bins_below + self.num_bins] = log_frames
        self._buffer = np.concatenate([self._buffer, padded], axis=2)
        while self._buffer.shape[2] >= self.input_frames or (last and self._cut < self._received):
            if self._buffer.shape[2] < self.input_frames:  # zeros after the signal
                missing = self.input_frames - self._buffer.shape[2]
                self._buffer = np.pad(self._buffer, ((0, 0), (0, 0), (0, missing)))
            self._windows.append(self._buffer[:, :, :self.input_frames])
            self._buffer = self._buffer[:, :, self.step:]
            self._cut += self.step
        batches = len(self._windows) // self.positions
        if last and len(self._windows) % self.positions:
            batches += 1
            silent = np.zeros_like(self._windows[0])
            self._windows += [silent] * (self.positions - len(self._windows) % self.positions)
        estimates: dict[str, list[np.ndarray]] = {}
        for _ in range(batches):
            batch, self._windows = self._windows[:self.positions], self._windows[self.positions:]
            outputs = self.model(tf.constant(np.concatenate(batch)[..., None]))
            for name, output in outputs.items():
                # (positions * channels, bins, frames, 1) -> (channels, bins, positions * step)
                output = np.asarray(output)[:, :self.num_bins, :self.step, 0]
                output = output.reshape(self.positions, self.channels, self.num_bins, self.step)
                estimates.setdefault(name, []).append(np.concatenate(list(output), axis=2))
        # The last windows may reach past the signal; their surplus frames are no frames of the song.
        produced = self.step * self.positions * batches
        kept = min(produced, self._received - self._produced)
        self._produced += kept
        return {name: np.concatenate(parts, axis=2)[:, :, :kept] for name, parts in estimates.items()}
