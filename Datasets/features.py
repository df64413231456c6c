"""Spectrogram features shared by both methods (librosa does the DSP).

Spectrograms are (bins, frames). The adversarial separator sees `log1p(|STFT|)` and predicts
the same for each source (Models/postfilter.py makes spectrograms of such estimates). The weak-label models see `log(mel + 1e-8)` frames (`MelSettings`) and
predict mel-band masks, which `mel_to_linear_matrix` spreads back over the STFT bins.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import librosa
import numpy as np


@dataclass(frozen=True)
class SpectrogramSettings:
    """The model's time-frequency resolution (paper: 8192 Hz mono, n_fft 512, hop 256), kept in
    one place so that cached training features and inference agree."""

    sample_rate: int = 8192
    n_fft: int = 512
    hop: int = 256

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1


def stft(audio: np.ndarray, n_fft: int = 512, hop: int = 256, window: str = "hann") -> np.ndarray:
    """STFT centred with reflect padding: complex64 (n_fft // 2 + 1, frames).

    The padding is done here: librosa 0.11's own centring computes the last frame from a
    differently reflected tail, which the block-wise STFT of Models/streaming.py cannot match."""
    padded = np.pad(np.asarray(audio, np.float32), n_fft // 2, mode="reflect") if len(audio) else \
        np.zeros(n_fft, np.float32)
    return librosa.stft(padded, n_fft=n_fft, hop_length=hop, window=window,
                        center=False).astype(np.complex64, copy=False)


def istft(spectrogram: np.ndarray, hop: int = 256, length: int | None = None, window: str = "hann") -> np.ndarray:
    """Inverse of `stft` (least-squares overlap-add); `length` trims or pads to that many samples."""
    n_fft = 2 * (spectrogram.shape[0] - 1)
    return librosa.istft(spectrogram, hop_length=hop, n_fft=n_fft, window=window, center=True,
                         length=length).astype(np.float32, copy=False)


def log_magnitude(spectrogram: np.ndarray) -> np.ndarray:
    """The network's input normalisation: log1p of the magnitude."""
    return np.log1p(np.abs(spectrogram)).astype(np.float32, copy=False)


def magnitude_from_log(log_mag: np.ndarray) -> np.ndarray:
    """Inverse of `log_magnitude`, clamped at zero."""
    return np.maximum(np.expm1(log_mag), 0.0).astype(np.float32, copy=False)


def mel_filterbank(sample_rate: int = 16000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 0.0,
                   fmax: float | None = 8000.0) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank, (n_mels, n_fft // 2 + 1)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               htk=False, norm="slaney").astype(np.float32)


@dataclass(frozen=True)
class MelSettings:
    """The weak-label models' features (SPEC section 3, TUT recipe): 16 kHz mono, Hamming
    window 1024, hop 512, 64 Slaney mel bands up to 8 kHz, `log(mel(|STFT|) + 1e-8)`."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = 8000.0
    window: str = "hamming"

    # Built once per settings (frozen, so hashable): every clip and every mask needs them.
    @functools.cache
    def filterbank(self) -> np.ndarray:
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)

    @functools.cache
    def mel_to_linear(self) -> np.ndarray:
        return mel_to_linear_matrix(self.filterbank())

    def spectrogram(self, audio: np.ndarray) -> np.ndarray:
        return stft(audio, self.n_fft, self.hop, self.window)

    def mel(self, audio: np.ndarray, power: float = 1.0) -> np.ndarray:
        """Mel magnitudes (power 1) or energies (power 2), (frames, n_mels): the models'
        time-major layout."""
        return self.mel_of(self.spectrogram(audio), power)

    def mel_of(self, spectrogram: np.ndarray, power: float = 1.0) -> np.ndarray:
        return (self.filterbank() @ np.abs(spectrogram) ** power).T.astype(np.float32, copy=False)

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop


LOG_MEL_FLOOR = 1e-8


def log_mel(mel: np.ndarray) -> np.ndarray:
    return np.log(mel + LOG_MEL_FLOOR).astype(np.float32, copy=False)


def mel_to_linear_matrix(filterbank: np.ndarray) -> np.ndarray:
    """(bins, mels) weights that spread mel-band masks over STFT bins: `linear = mel @ M.T`.

    Each bin's weights are its filterbank responses divided by their sum, so every row sums
    to 1 and a mask that is constant over the mel bands stays that constant. A bin that no
    band covers (DC with fmin 0, or above fmax) takes the mask of the nearest band by centre."""
    weights = filterbank.T.astype(np.float64)
    totals = weights.sum(axis=1, keepdims=True)
    uncovered = totals[:, 0] <= 0
    if np.any(uncovered):
        centres = np.argmax(filterbank, axis=1)  # bin of each band's peak
        bins = np.flatnonzero(uncovered)
        nearest = np.argmin(np.abs(bins[:, None] - centres[None, :]), axis=1)
        weights[bins] = 0.0
        weights[bins, nearest] = 1.0
        totals = weights.sum(axis=1, keepdims=True)
    return (weights / totals).astype(np.float32)
