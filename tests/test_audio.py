import os

import numpy as np
import pytest
import soundfile

from Datasets import audio, features
from Sample import SilentSample
from conftest import write_tone


def test_round_trip_and_metadata(tmp_path):
    signal = np.random.default_rng(0).uniform(-1, 1, (1000, 2)).astype(np.float32)
    path = tmp_path / "out" / "x.wav"
    audio.write(path, signal, 22050)
    sample = audio.info(path)
    assert (sample.sample_rate, sample.channels, sample.num_frames) == (22050, 2, 1000)
    np.testing.assert_array_equal(audio.read(sample), signal)
    assert list((tmp_path / "out").iterdir()) == [path]  # no temporary file left behind


def test_excerpt_is_read_by_seeking(tmp_path):
    signal = np.arange(5000, dtype=np.float32)[:, None] / 5000
    audio.write(tmp_path / "ramp.wav", signal, 8000)
    excerpt = audio.read(tmp_path / "ramp.wav", start=1234, num_frames=100)
    np.testing.assert_array_equal(excerpt, signal[1234:1334])
    assert len(audio.read(tmp_path / "ramp.wav", start=4950, num_frames=100)) == 50


@pytest.mark.parametrize("extension", ["flac", "ogg"])
def test_compressed_formats(tmp_path, extension):
    path = tmp_path / f"tone.{extension}"
    time = np.arange(16000) / 16000
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 440 * time), 16000)
    sample = audio.info(path)
    assert sample.sample_rate == 16000 and abs(sample.duration - 1.0) < 0.01
    excerpt = audio.read(sample, start=4000, num_frames=2000, mono=True)
    assert excerpt.shape == (2000,)
    assert 0.4 < np.abs(excerpt).max() < 0.6


def test_mp3_excerpt_by_seeking():
    sample = audio.info(os.path.join(os.path.dirname(__file__), "data", "tone_440hz_2s.mp3"))
    assert (sample.sample_rate, sample.channels) == (22050, 2) and abs(sample.duration - 2.0) < 0.1
    excerpt = audio.read(sample, start=22050, num_frames=4096)
    assert excerpt.shape == (4096, 2)
    np.testing.assert_allclose(np.abs(excerpt).max(axis=0), [0.5, 0.25], atol=0.05)
    resampled = audio.read(sample, start=22050, num_frames=4096, sample_rate=8192, mono=True)
    assert abs(len(resampled) - 4096 * 8192 / 22050) <= 1


def test_mono_downmix_is_channel_mean(tmp_path):
    signal = np.stack([np.full(100, 0.2), np.full(100, 0.6)], axis=1).astype(np.float32)
    audio.write(tmp_path / "s.wav", signal, 8000)
    np.testing.assert_allclose(audio.read(tmp_path / "s.wav", mono=True), 0.4, atol=1e-6)


def test_resampling_keeps_a_tone(tmp_path):
    write_tone(str(tmp_path / "t.wav"), frequency=1000.0, seconds=1.0, rate=44100)
    resampled = audio.read(tmp_path / "t.wav", sample_rate=8192, mono=True)
    assert len(resampled) == 8192
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 8192 / len(resampled) - 1000.0) < 2
    assert abs(np.sqrt(np.mean(resampled[500:-500] ** 2)) - 0.3 / np.sqrt(2)) < 0.005


def test_silent_sample_reads_zeros():
    silence = SilentSample(duration=0.5, sample_rate=16000, channels=2)
    assert audio.read(silence).shape == (8000, 2)
    assert not audio.read(silence, sample_rate=8000, mono=True).any()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(audio.AudioFileError, match="nothere.wav.*does not exist"):
        audio.read(tmp_path / "nothere.wav")


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunkjunkjunk" * 10)
    with pytest.raises(audio.AudioFileError, match="broken.wav"):
        audio.info(path)
    with pytest.raises(audio.AudioFileError, match="broken.wav"):
        audio.read(path)


def test_stft_round_trip_and_paper_shapes():
    signal = np.random.default_rng(1).uniform(-0.5, 0.5, 8192).astype(np.float32)
    spectrogram = features.stft(signal)
    assert spectrogram.shape == (257, 8192 // 256 + 1)
    np.testing.assert_allclose(features.istft(spectrogram, length=len(signal)), signal, atol=1e-5)
    log_mag = features.log_magnitude(spectrogram)
    np.testing.assert_allclose(features.magnitude_from_log(log_mag), np.abs(spectrogram), rtol=1e-5, atol=1e-6)


def test_mel_filterbank_is_slaney():
    import librosa

    bank = features.mel_filterbank()
    assert bank.shape == (64, 513)
    np.testing.assert_allclose(bank, librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmax=8000), rtol=1e-6)
    # Slaney normalisation: each triangle has unit area in Hz, so peaks shrink as bands widen.
    assert bank[0].max() > bank[-1].max()
