"""The separation engine: one object, built from a checkpoint, applies a trained separator to
spectrograms, waveforms and audio files.

    separator = load_separator("checkpoints/<run>")      # Models/checkpoint.py
    separator.log_spectrogram(log_mixture)               # (bins, frames) -> {source: (bins, frames)}
    separator.waveform(mixture)                          # mono at separator.settings.sample_rate
    separator.separate_paths(["song.mp3", "album/"], "separated")   # streaming, flat memory

Every path runs the network through the one windowing (Models/windowing.py), so whole-song,
windowed and streaming results agree to float rounding. The network is the core model
(log1p magnitudes in, log1p magnitudes out); the post-filter (Models/postfilter.py) makes
complex spectrograms of its estimates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from Datasets import features
from Datasets.features import SpectrogramSettings
from Models import streaming
from Models.postfilter import PostFilter
from Models.windowing import WindowedSeparation

# Activation memory that one network call may take. Larger windows waste less on context
# frames, but past about a thousand frames (paper model, one channel) they stop getting faster.
ACTIVATION_BUDGET_BYTES = 256 * 2 ** 20
# float32 feature maps alive per input frame, in units of input_bins * first-layer filters:
# measured 2.3 for the paper's U-Net (TensorFlow frees each level's maps once they are used)
FEATURE_MAPS_PER_FRAME = 3
# On a CPU, output frames per window and per network call past which it gets no faster (or
# slower, as the feature maps leave the caches): benchmarks/bench_separation.py's table
MAX_WINDOW_FRAMES = 1024
MAX_FRAMES_PER_CALL = 2048


@dataclass
class Separator:
    """A trained separator with what it needs to be applied: its spectrogram settings, its
    window geometry (`grid` and `windows(frames)`, e.g. Models.shapes.UnetGeometry), the
    names of its outputs and the post-filter that turns its magnitudes into spectrograms
    (`dataclasses.replace(separator, postfilter=PostFilter("wiener"))` for another).
    `config` is the training config, where the checkpoint has one."""

    model: keras.Model
    settings: SpectrogramSettings
    geometry: object
    source_names: tuple[str, ...]
    path: str = ""
    config: dict = field(default_factory=dict)
    postfilter: PostFilter = field(default_factory=PostFilter)
    jit_compile: bool = False  # XLA: slower than the plain graph on the CPUs measured (benchmarks/)

    def window_shape(self, channels: int, frames: int | None = None) -> tuple[int, int]:
        """(output frames per window, windows per channel per network call) for `channels`
        channels: the longest window up to MAX_WINDOW_FRAMES whose activations fit the budget,
        then as many consecutive windows as fit too, up to MAX_FRAMES_PER_CALL in all. For `frames` known (a whole song), no
        longer than the next power-of-two number of grids that covers it, so that short songs
        are not padded to a long window and a handful of shapes serves all lengths."""
        grid = self.geometry.grid
        first_filters = next(layer.filters for layer in self.model.layers if hasattr(layer, "filters"))
        input_bins = self.geometry.windows(grid).input_bins
        bytes_per_frame = 4 * input_bins * first_filters * FEATURE_MAPS_PER_FRAME * channels
        longest = max(min(ACTIVATION_BUDGET_BYTES // bytes_per_frame, MAX_WINDOW_FRAMES) // grid, 1) * grid
        positions = max(min(ACTIVATION_BUDGET_BYTES // (bytes_per_frame * self.geometry.windows(longest).input_frames),
                            MAX_FRAMES_PER_CALL // (longest * channels)), 1)
        if frames is None:
            return longest, positions
        step = min(longest, self._covering(frames))
        return step, min(positions, _next_power_of_two(-(-frames // step)))

    def _covering(self, frames: int) -> int:
        """The shortest window of a power-of-two number of grids that covers `frames` frames."""
        grid = self.geometry.grid
        return grid * _next_power_of_two(-(-frames // grid))

    def windows(self, channels: int = 1, frames: int | None = None,
                window_frames: int | None = None) -> WindowedSeparation:
        """The windowed network for a stream of `channels` channels (of `frames` frames, where
        known); `window_frames` asks for windows of that length (no longer than a known stream
        needs), one per channel per call."""
        step, positions = self.window_shape(channels, frames)
        if window_frames is not None:
            step, positions = min(window_frames, self._covering(frames)) if frames else window_frames, 1
        return WindowedSeparation(self.model, self.geometry, self.settings.num_bins, step, channels, positions,
                                  self.jit_compile)

    def log_spectrogram(self, log_mixture: np.ndarray, window_frames: int | None = None) -> dict[str, np.ndarray]:
        """log1p mixture magnitudes (bins, frames) -> {source: log1p estimate (bins, frames)}."""
        windows = self.windows(1, log_mixture.shape[1], window_frames)
        return {name: estimate[0] for name, estimate in windows.push(log_mixture[None], last=True).items()}

    def reconstruct(self, log_estimates: dict[str, np.ndarray], spectrogram: np.ndarray,
                    length: int) -> dict[str, np.ndarray]:
        """Waveforms of `length` samples from log1p estimates (bins, frames) and the mono
        mixture's STFT, through the post-filter."""
        magnitudes = {name: features.magnitude_from_log(estimate)[None] for name, estimate in log_estimates.items()}
        sources = self.postfilter.apply(magnitudes, spectrogram[None])
        return {name: features.istft(source[0], self.settings.hop, length) for name, source in sources.items()}

    def waveform(self, mixture: np.ndarray, window_frames: int | None = None) -> dict[str, np.ndarray]:
        """Mono mixture waveform at the model's rate -> {source: waveform of the same length}."""
        spectrogram = features.stft(mixture, self.settings.n_fft, self.settings.hop)
        return self.reconstruct(self.log_spectrogram(features.log_magnitude(spectrogram), window_frames),
                                spectrogram, len(mixture))

    def separate_file(self, input_path: str, output_dir: str, overwrite: bool = False, **options) -> list[str]:
        """`<output_dir>/<input stem>/<source>.wav` for one file, streamed (Models/streaming.py)."""
        return streaming.separate_file(self, input_path, output_dir, overwrite, **options)

    def separate_paths(self, inputs: Sequence[str], output_dir: str, overwrite: bool = False,
                       skip_existing: bool = False) -> list[str]:
        """Every file of `inputs` (files and folders), streamed; see `streaming.separate_paths`."""
        return streaming.separate_paths(self, inputs, output_dir, overwrite, skip_existing)


def _next_power_of_two(count: int) -> int:
    return 1 << max(count - 1, 0).bit_length()
