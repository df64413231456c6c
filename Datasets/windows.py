"""The window sizes a separator trains and runs on, as the data pipeline needs them.

The network decides the sizes (`Models.shapes.unet_shapes` for the U-Net); the excerpt
streams only copy windows of these sizes out of spectrograms, so they take them as data.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowShapes:
    """Input and output window sizes, in frequency bins and STFT frames. The output window is
    centred in the input window: the input has context frames on both sides and zero bins
    around the spectrogram's."""

    input_bins: int
    input_frames: int
    output_bins: int
    output_frames: int

    @property
    def context_frames(self) -> int:
        """Extra frames on each side of the output window that the input window holds."""
        return (self.input_frames - self.output_frames) // 2

    @property
    def input_bins_below(self) -> int:
        """Zero bins below DC in the input, so that output bin k is spectrogram bin k."""
        return (self.input_bins - self.output_bins) // 2
