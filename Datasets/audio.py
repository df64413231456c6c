"""Audio file I/O: metadata, seeking excerpt reads, mono downmix, resampling, atomic writes.

libsndfile (through soundfile) decodes wav, flac, ogg and mp3 and seeks in all of them, so an
excerpt never decodes the whole file. Formats it cannot read (m4a, wma, ...) go through
audioread, which needs the ffmpeg binary.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import soundfile
import soxr

from Datasets.atomic import atomic_open

from Sample import Sample, SilentSample


class AudioFileError(RuntimeError):
    """An audio file is missing, unreadable or in a format no installed decoder handles."""


def _missing_or_unreadable(path: str, error: Exception) -> AudioFileError:
    if not os.path.exists(path):
        return AudioFileError(f"Audio file '{path}' does not exist.")
    return AudioFileError(f"Cannot read audio file '{path}': {error}")


def _audioread_fallback_error(path: str, error: Exception) -> AudioFileError:
    if shutil.which("ffmpeg") is None:
        return AudioFileError(
            f"Cannot decode '{path}': libsndfile does not support this format ({error}) and the "
            "fallback decoder ffmpeg is not installed. Install it (e.g. `apt-get install ffmpeg`) "
            "or convert the file to wav/flac.")
    return AudioFileError(f"Cannot decode '{path}' with libsndfile or ffmpeg: {error}")


def info(path: str | os.PathLike) -> Sample:
    """Reads sample rate, channel count and duration from the file header."""
    path = os.fspath(path)
    try:
        header = soundfile.info(path)
        return Sample(path, int(header.samplerate), int(header.channels),
                      header.frames / header.samplerate)
    except soundfile.LibsndfileError as error:
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            raise _missing_or_unreadable(path, error) from error
        sndfile_error = error
    try:
        import audioread

        with audioread.audio_open(path) as decoder:
            return Sample(path, int(decoder.samplerate), int(decoder.channels), float(decoder.duration))
    except Exception as error:  # audioread raises several unrelated exception types
        raise _audioread_fallback_error(path, sndfile_error) from error


def _read_with_audioread(path: str, start: int, num_frames: int | None) -> tuple[np.ndarray, int]:
    import audioread

    with audioread.audio_open(path) as decoder:
        blocks = [np.frombuffer(block, dtype="<i2") for block in decoder]
        channels, sample_rate = decoder.channels, decoder.samplerate
    audio = (np.concatenate(blocks).reshape(-1, channels) / 32768.0).astype(np.float32)
    stop = None if num_frames is None else start + num_frames
    return audio[start:stop], int(sample_rate)


def read(source: Sample | SilentSample | str | os.PathLike, start: int = 0, num_frames: int | None = None,
         sample_rate: int | None = None, mono: bool = False) -> np.ndarray:
    """Reads audio as float32.

    `start` and `num_frames` count frames at the file's own rate; reading past the end returns
    fewer frames. With `sample_rate` the result is resampled to it. Returns shape
    (frames, channels), or (frames,) with `mono=True` (mean of the channels).
    """
    if isinstance(source, SilentSample):
        available = max(source.num_frames - start, 0)
        frames = available if num_frames is None else min(num_frames, available)
        audio = np.zeros((frames, source.channels), np.float32)
        file_rate = source.sample_rate
    else:
        path = os.fspath(source.path if isinstance(source, Sample) else source)
        try:
            with soundfile.SoundFile(path) as audio_file:
                file_rate = audio_file.samplerate
                audio_file.seek(min(start, audio_file.frames))
                audio = audio_file.read(-1 if num_frames is None else num_frames,
                                        dtype="float32", always_2d=True)
        except soundfile.LibsndfileError as error:
            if not os.path.exists(path) or os.path.getsize(path) == 0:
                raise _missing_or_unreadable(path, error) from error
            try:
                audio, file_rate = _read_with_audioread(path, start, num_frames)
            except Exception as fallback_error:
                raise _audioread_fallback_error(path, error) from fallback_error
        except RuntimeError as error:  # soundfile reports truncated or corrupt data this way
            raise _missing_or_unreadable(path, error) from error
    if mono:
        audio = to_mono(audio)
    if sample_rate is not None and sample_rate != file_rate:
        audio = resample(audio, file_rate, sample_rate)
    return audio


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,), the mean of the channels."""
    return audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with libsoxr (high quality); works on (frames,) or (frames, channels)."""
    if from_rate == to_rate:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def write(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Writes a WAV file atomically: a half-written file never appears under `path`.

    The default 32-bit float subtype keeps sums and differences of sources that exceed [-1, 1].
    """
    with atomic_open(path) as file:
        soundfile.write(file, audio, sample_rate, subtype=subtype, format="WAV")
