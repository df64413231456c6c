"""From the network's magnitude estimates to complex source spectrograms.

    none      each estimate with the mixture's phase (the paper's output; estimates need not
              sum to the mixture)
    softmask  the mixture times |est_s|^p / sum_k |est_k|^p (p = `softmask_power`)
    wiener    multichannel Wiener filtering: `wiener_iterations` rounds of expectation-
              maximisation of each source's power and spatial covariance over the channels,
              started from the estimates with the mixture's phase, as in Open-Unmix's and
              Spleeter's post-filter (norbert's `wiener` with `use_softmask=False`)

With softmask and wiener the sources sum to the mixture. Wiener's spatial covariances are
estimated over blocks of `BLOCK_FRAMES` frames counted from the first frame, as Open-Unmix
does, so memory stays flat for hour-long files and whole-song and streamed separation filter
the same blocks.

This module depends on numpy alone: `Evaluate.py export` copies it beside an exported model
for the standalone separation script.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSTFILTERS = ("none", "softmask", "wiener")
DEFAULT_POSTFILTER = "softmask"  # for separating files: the best on the demo's validation songs (README, "Post-filters")
BLOCK_FRAMES = 300  # Open-Unmix's wiener_win_len
# norbert's: float32's machine epsilon, as a floor on powers and determinants, its square root
# on the mixture covariance's diagonal (the spectra are complex64)
EPS = float(np.finfo(np.float32).eps)


def check_postfilter(postfilter: str, softmask_power: float = 1.0, wiener_iterations: int = 1) -> None:
    if postfilter not in POSTFILTERS:
        raise ValueError(f"Config key `postfilter`: unknown post-filter {postfilter!r}; choose one of "
                         f"{list(POSTFILTERS)}.")
    if not softmask_power > 0:
        raise ValueError(f"Config key `softmask_power` must be positive, not {softmask_power!r}.")
    if int(wiener_iterations) != wiener_iterations or wiener_iterations < 0:
        raise ValueError(f"Config key `wiener_iterations` must be a whole number >= 0, not {wiener_iterations!r}.")


@dataclass(frozen=True)
class PostFilter:
    name: str = "none"
    softmask_power: float = 1.0
    wiener_iterations: int = 1

    def __post_init__(self):
        check_postfilter(self.name, self.softmask_power, self.wiener_iterations)

    def apply(self, magnitudes: dict[str, np.ndarray], mixture: np.ndarray) -> dict[str, np.ndarray]:
        """{source: magnitudes (channels, bins, frames)} and the complex mixture spectrogram of
        the same shape -> {source: complex64 spectrogram}. Wiener filters in blocks of
        BLOCK_FRAMES from the first frame, so a stream must pass whole blocks but for its last."""
        if self.name == "none":
            phase = unit_phase(mixture)
            return {name: (magnitude * phase).astype(np.complex64) for name, magnitude in magnitudes.items()}
        if self.name == "softmask":
            return softmask(magnitudes, mixture, self.softmask_power)
        blocks = [wiener({name: magnitude[..., start:start + BLOCK_FRAMES] for name, magnitude in magnitudes.items()},
                         mixture[..., start:start + BLOCK_FRAMES], self.wiener_iterations)
                  for start in range(0, mixture.shape[-1], BLOCK_FRAMES)]
        if not blocks:
            return {name: np.zeros(mixture.shape, np.complex64) for name in magnitudes}
        return {name: np.concatenate([block[name] for block in blocks], axis=-1) for name in magnitudes}


def unit_phase(spectrogram: np.ndarray) -> np.ndarray:
    """e^{i angle} of each bin, and 0 where the bin is exactly 0 (digital silence), where
    numpy's angle would give the arbitrary phase 0 and a silent input a non-silent estimate."""
    magnitude = np.abs(spectrogram)
    return np.divide(spectrogram, magnitude, out=np.zeros_like(spectrogram), where=magnitude > 0)


def softmask(magnitudes: dict[str, np.ndarray], mixture: np.ndarray, power: float = 1.0) -> dict[str, np.ndarray]:
    """Each source gets the share |est_s|^p / sum_k |est_k|^p of the mixture; where every
    estimate is 0 the mixture is shared equally, so that the sources always sum to it."""
    powered = {name: np.power(np.maximum(magnitude, 0.0), power, dtype=np.float64)
               for name, magnitude in magnitudes.items()}
    total = sum(powered.values())
    share = 1.0 / len(powered)
    return {name: (mixture * np.divide(value, total, out=np.full_like(total, share), where=total > 0)
                   ).astype(np.complex64) for name, value in powered.items()}


def wiener(magnitudes: dict[str, np.ndarray], mixture: np.ndarray, iterations: int = 1) -> dict[str, np.ndarray]:
    """Multichannel Wiener filtering of one block: `magnitudes` {source: (channels, bins,
    frames)}, `mixture` complex (channels, bins, frames) -> {source: complex64 spectrogram}."""
    filtered = expectation_maximisation(magnitudes, mixture, iterations)
    # The regularisation keeps a little of the mixture out of every estimate, most in quiet
    # bins: shared out like a soft mask, so that the sources sum to the mixture
    residual = mixture - sum(filtered.values())
    shares = softmask({name: np.abs(estimate) for name, estimate in filtered.items()}, residual, power=2.0)
    return {name: (filtered[name] + shares[name]).astype(np.complex64) for name in filtered}


def expectation_maximisation(magnitudes: dict[str, np.ndarray], mixture: np.ndarray,
                             iterations: int) -> dict[str, np.ndarray]:
    """norbert's `wiener(..., use_softmask=False)`, vectorised over frames and bins, in the
    shapes of `wiener`."""
    phase = unit_phase(mixture)
    # (sources, frames, bins, channels), in double precision for the 2 x 2 inverses
    estimates = np.stack([np.transpose(magnitude * phase, (2, 1, 0)) for magnitude in magnitudes.values()]
                         ).astype(np.complex128)
    mix = np.transpose(mixture, (2, 1, 0)).astype(np.complex128)
    if iterations:
        # norbert scales the block so that the regularisation is relative to its level
        scale = max(1.0, float(np.abs(mix).max(initial=0.0)) / 10.0)
        estimates, mix = estimates / scale, mix / scale
        for _ in range(iterations):
            estimates = _em_round(estimates, mix)
        estimates *= scale
    return {name: np.transpose(estimate, (2, 1, 0)) for name, estimate in zip(magnitudes, estimates)}


def _em_round(estimates: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """One EM round: each source's power (frames, bins) and spatial covariance (bins, C, C)
    from its current estimate, then every source re-estimated as its Wiener gain times the mixture."""
    channels = mix.shape[-1]
    powers = np.mean(np.abs(estimates) ** 2, axis=-1)  # (sources, frames, bins)
    outer = estimates[..., :, None] * estimates[..., None, :].conj()  # (sources, frames, bins, C, C)
    covariances = outer.sum(axis=1) / (EPS + powers.sum(axis=1))[..., None, None]  # (sources, bins, C, C)
    mixture_covariance = np.einsum("sfb,sbij->fbij", powers, covariances) + np.sqrt(EPS) * np.eye(channels)
    inverse = _inverse(mixture_covariance)
    gains = powers[..., None, None] * np.einsum("sbij,fbjk->sfbik", covariances, inverse)
    return np.einsum("sfbij,fbj->sfbi", gains, mix)


def _inverse(matrices: np.ndarray) -> np.ndarray:
    """Inverses of (..., C, C) Hermitian matrices, closed-form for one and two channels (the
    mixture covariance's regularisation keeps them invertible)."""
    channels = matrices.shape[-1]
    if channels == 1:
        return 1.0 / (EPS + matrices)
    if channels == 2:
        a, b, c, d = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 1, 0], matrices[..., 1, 1]
        inverse_determinant = 1.0 / (a * d - b * c)
        return np.stack([np.stack([d, -b], axis=-1), np.stack([-c, a], axis=-1)], axis=-2) * \
            inverse_determinant[..., None, None]
    return np.linalg.pinv(matrices)
