"""Shape arithmetic of the valid-convolution U-Net (SPEC section 2).

Each encoder level halves (2x2 max pool) and loses 2 (3x3 valid conv); each decoder level
doubles (2x2 transposed conv) and loses 2. For `num_layers` L and a bottleneck of size b
(per axis) the output is `2^L b - 2^(L+1) + 2` and the input `2^L b + 2^(L+2) - 2`, so the
output sizes the network can produce are spaced 2^L apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from Datasets.windows import WindowShapes


def valid_output_size(target: int, num_layers: int) -> int:
    """The smallest output size >= `target` that the U-Net arithmetic allows."""
    scale = 2 ** num_layers
    bottleneck = max(math.ceil((target + 2 * scale - 2) / scale), 1)
    return scale * bottleneck - 2 * scale + 2


def input_size_for_output(output: int, num_layers: int) -> int:
    """The input size whose valid convolutions shrink to exactly `output`."""
    scale = 2 ** num_layers
    if output < 1 or (output + 2 * scale - 2) % scale:
        raise ValueError(f"output size {output} is not reachable with num_layers={num_layers}; "
                         f"use valid_output_size() to round it up")
    bottleneck = (output + 2 * scale - 2) // scale
    return scale * bottleneck + 4 * scale - 2


def unet_shapes(num_layers: int, num_frames: int, num_bins: int) -> WindowShapes:
    """Window sizes for a U-Net that must predict at least `num_frames` frames of all
    `num_bins` frequency bins (257 for n_fft 512: paper values give 350x158 -> 258x66).
    Output bins beyond `num_bins` and input bins around the spectrogram are zero padding.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    output_bins = valid_output_size(num_bins, num_layers)
    output_frames = valid_output_size(num_frames, num_layers)
    return WindowShapes(input_size_for_output(output_bins, num_layers),
                      input_size_for_output(output_frames, num_layers), output_bins, output_frames)


@dataclass(frozen=True)
class UnetGeometry:
    """How the U-Net's windows depend on the frames it is asked to predict, for the windowing
    of whole songs (Models/windowing.py)."""

    num_layers: int
    num_bins: int

    @property
    def grid(self) -> int:
        """The network is equivariant to time shifts by multiples of this many frames."""
        return 2 ** self.num_layers

    def windows(self, num_frames: int) -> WindowShapes:
        return unet_shapes(self.num_layers, num_frames, self.num_bins)
