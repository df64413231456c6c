"""The separation engine: one object, built from a checkpoint, applies a trained separator to
spectrograms, waveforms and audio files.

    separator = load_separator("checkpoints/<run>")      # Models/checkpoint.py
    separator.log_spectrogram(log_mixture)               # (bins, frames) -> {source: (bins, frames)}
    separator.waveform(mixture)                          # mono at separator.settings.sample_rate
    separator.separate_paths(["song.mp3", "album/"], "separated")   # streaming, flat memory

Every path runs the network through the one windowing (Models/windowing.py), so whole-song,
windowed and streaming results agree to float rounding. The network is the core model
(log1p magnitudes in, log1p magnitudes out); each estimate takes the mixture's phase.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from Datasets import features
from Datasets.features import SpectrogramSettings
from Models import streaming
from Models.windowing import WindowedSeparation

# Activation memory that one separator window may take. Larger windows waste less on context
# frames, but past about a thousand frames (paper model, one channel) they stop getting faster.
ACTIVATION_BUDGET_BYTES = 256 * 2 ** 20
# float32 feature maps alive per input frame, in units of input_bins * first-layer filters: about
# six at full resolution (first conv, skip crop, upsampling, concatenation, last conv), and the
# coarser levels add as much again (each halves the area per channel doubling).
FEATURE_MAPS_PER_FRAME = 12
WHOLE_SONG_WINDOW_FRAMES = 2048  # output frames per network call on whole songs in memory


@dataclass
class Separator:
    """A trained separator with what it needs to be applied: its spectrogram settings, its
    window geometry (`grid` and `windows(frames)`, e.g. Models.shapes.UnetGeometry) and the
    names of its outputs. `config` is the training config, where the checkpoint has one."""

    model: keras.Model
    settings: SpectrogramSettings
    geometry: object
    source_names: tuple[str, ...]
    path: str = ""
    config: dict = field(default_factory=dict)

    def windows(self, window_frames: int, channels: int = 1) -> WindowedSeparation:
        """The windowed network for a stream of `channels` channels."""
        return WindowedSeparation(self.model, self.geometry, self.settings.num_bins, window_frames, channels)

    def log_spectrogram(self, log_mixture: np.ndarray,
                        window_frames: int = WHOLE_SONG_WINDOW_FRAMES) -> dict[str, np.ndarray]:
        """log1p mixture magnitudes (bins, frames) -> {source: log1p estimate (bins, frames)}."""
        window_frames = min(window_frames, log_mixture.shape[1])  # no window longer than the song
        estimates = self.windows(window_frames).push(log_mixture[None], last=True)
        return {name: estimate[0] for name, estimate in estimates.items()}

    def reconstruct(self, log_estimates: dict[str, np.ndarray], spectrogram: np.ndarray,
                    length: int) -> dict[str, np.ndarray]:
        """Waveforms of `length` samples from log1p magnitude estimates and the mixture's STFT."""
        return {name: features.reconstruct(features.magnitude_from_log(log_estimate), spectrogram,
                                           self.settings.hop, length)
                for name, log_estimate in log_estimates.items()}

    def waveform(self, mixture: np.ndarray, window_frames: int = WHOLE_SONG_WINDOW_FRAMES) -> dict[str, np.ndarray]:
        """Mono mixture waveform at the model's rate -> {source: waveform of the same length}."""
        spectrogram = features.stft(mixture, self.settings.n_fft, self.settings.hop)
        return self.reconstruct(self.log_spectrogram(features.log_magnitude(spectrogram), window_frames),
                                spectrogram, len(mixture))

    def window_frames_for_budget(self, channels: int, budget_bytes: int = ACTIVATION_BUDGET_BYTES) -> int:
        """The longest output window (a multiple of the grid) whose activations for all
        `channels` fit in `budget_bytes`."""
        first_filters = next(layer.filters for layer in self.model.layers if hasattr(layer, "filters"))
        input_bins = self.geometry.windows(self.geometry.grid).input_bins
        bytes_per_frame = 4 * input_bins * first_filters * FEATURE_MAPS_PER_FRAME * channels
        grid = self.geometry.grid
        return max(budget_bytes // bytes_per_frame // grid, 1) * grid

    def separate_file(self, input_path: str, output_dir: str, overwrite: bool = False, **options) -> list[str]:
        """`<output_dir>/<input stem>/<source>.wav` for one file, streamed (Models/streaming.py)."""
        return streaming.separate_file(self, input_path, output_dir, overwrite, **options)

    def separate_paths(self, inputs: Sequence[str], output_dir: str, overwrite: bool = False,
                       skip_existing: bool = False) -> list[str]:
        """Every file of `inputs` (files and folders), streamed; see `streaming.separate_paths`."""
        return streaming.separate_paths(self, inputs, output_dir, overwrite, skip_existing)
