"""Spectrogram features shared by both methods (librosa does the DSP).

Spectrograms are (bins, frames). The adversarial separator sees `log1p(|STFT|)` and predicts
the same for each source; `reconstruct` turns such estimates back into audio with the
mixture's phase.
"""
from __future__ import annotations

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


def stft(audio: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """Hann-windowed STFT, centred with reflect padding: complex64 (n_fft // 2 + 1, frames)."""
    return librosa.stft(np.asarray(audio, np.float32), n_fft=n_fft, hop_length=hop, window="hann",
                        center=True, pad_mode="reflect").astype(np.complex64, copy=False)


def istft(spectrogram: np.ndarray, hop: int = 256, length: int | None = None) -> np.ndarray:
    """Inverse of `stft` (least-squares overlap-add); `length` trims or pads to that many samples."""
    n_fft = 2 * (spectrogram.shape[0] - 1)
    return librosa.istft(spectrogram, hop_length=hop, n_fft=n_fft, window="hann", center=True,
                         length=length).astype(np.float32, copy=False)


def log_magnitude(spectrogram: np.ndarray) -> np.ndarray:
    """The network's input normalisation: log1p of the magnitude."""
    return np.log1p(np.abs(spectrogram)).astype(np.float32, copy=False)


def magnitude_from_log(log_mag: np.ndarray) -> np.ndarray:
    """Inverse of `log_magnitude`, clamped at zero."""
    return np.maximum(np.expm1(log_mag), 0.0).astype(np.float32, copy=False)


def unit_phase(mixture_spectrogram: np.ndarray) -> np.ndarray:
    """mixture / |mixture|, and 0 where the mixture has no energy: no source has energy there
    either, so a network that outputs some magnitude for silence cannot make silence audible."""
    magnitude = np.abs(mixture_spectrogram)
    return np.divide(mixture_spectrogram, magnitude, out=np.zeros_like(mixture_spectrogram), where=magnitude > 0)


def reconstruct(magnitude: np.ndarray, mixture_spectrogram: np.ndarray, hop: int = 256,
                length: int | None = None) -> np.ndarray:
    """Audio from an estimated magnitude and the mixture's phase."""
    return istft(magnitude * unit_phase(mixture_spectrogram), hop=hop, length=length)


def mel_filterbank(sample_rate: int = 16000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 0.0,
                   fmax: float | None = 8000.0) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank, (n_mels, n_fft // 2 + 1)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               htk=False, norm="slaney").astype(np.float32)
