"""Audio file I/O: metadata, seeking excerpt reads, mono downmix, resampling, atomic writes.

libsndfile (through soundfile) decodes wav, flac, ogg and mp3 and seeks in all of them, so an
excerpt never decodes the whole file. Formats it cannot read (m4a, wma, ...) go through
audioread, which needs the ffmpeg binary.
"""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import soundfile
import soxr

from Datasets.atomic import atomic_open

from Sample import Sample, SilentSample


class AudioFileError(RuntimeError):
    """An audio file is missing, empty, damaged, unreadable or in a format no installed decoder handles."""


class DamagedAudioError(AudioFileError):
    """A file holds less audio than its header says: it was cut short while written or copied."""


# libsndfile trims a chunk size that the file cannot hold to what is there, and notes both in
# its log: "data : 80000 (should be 3360)". WAV and WAVEX log the data chunk, AIFF the SSND
# chunk, RF64 only the RIFF size.
_PROMISED_SIZE = re.compile(r"^\s*(data|SSND|Riff size)\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
# Sizes a writer that could not seek back leaves in a streamed WAV: no promise at all.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def _check_complete(path: str, audio_file: soundfile.SoundFile) -> None:
    """Raises DamagedAudioError when the header promises at least one frame more than the file holds."""
    for _, promised, present in _PROMISED_SIZE.findall(audio_file.extra_info):
        promised, present = int(promised), int(present)
        if promised in _UNKNOWN_SIZES or promised <= present:
            continue
        bytes_per_frame = present / audio_file.frames if audio_file.frames else 0
        if bytes_per_frame and promised - present < bytes_per_frame:
            continue  # a missing pad byte, not missing audio
        promised_seconds = promised / bytes_per_frame / audio_file.samplerate if bytes_per_frame else None
        raise DamagedAudioError(
            f"Audio file '{path}' is damaged: its header promises "
            f"{f'{promised_seconds:.2f} s' if promised_seconds else f'{promised} bytes'} of audio but the file "
            f"holds {audio_file.frames / audio_file.samplerate:.2f} s (cut short while written or copied?). "
            "Replace it with a complete copy.")


def _open_error(path: str, error: Exception) -> AudioFileError:
    """Why libsndfile could not open `path`, for a file that is not there or is empty."""
    if not os.path.exists(path):
        return AudioFileError(f"Audio file '{path}' does not exist.")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return AudioFileError(f"Audio file '{path}' is empty (0 bytes): it holds no audio. Replace it or leave it out.")
    return AudioFileError(f"Cannot read audio file '{path}' (supported: wav, flac, ogg, mp3): {error}")


def open_for_reading(path: str | os.PathLike) -> soundfile.SoundFile:
    """An open libsndfile reader, after checking that the file holds all the audio its header
    promises; AudioFileError naming the file otherwise. Formats libsndfile cannot decode raise
    too: `info` and `read` fall back to ffmpeg for them."""
    path = os.fspath(path)
    try:
        audio_file = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise _open_error(path, error) from error
    try:
        _check_complete(path, audio_file)
    except DamagedAudioError:
        audio_file.close()
        raise
    return audio_file


def _audioread_fallback_error(path: str, error: Exception) -> AudioFileError:
    if shutil.which("ffmpeg") is None:
        return AudioFileError(
            f"Cannot decode '{path}': libsndfile does not support this format ({error}) and the "
            "fallback decoder ffmpeg is not installed. Install it (e.g. `apt-get install ffmpeg`) "
            "or convert the file to wav/flac.")
    return AudioFileError(f"Cannot decode '{path}' with libsndfile or ffmpeg: {error}")


def _needs_fallback(path: str, error: AudioFileError) -> bool:
    """Whether a file libsndfile refused may still decode with ffmpeg: not a missing, empty or damaged one."""
    return not isinstance(error, DamagedAudioError) and os.path.isfile(path) and os.path.getsize(path) > 0


def info(path: str | os.PathLike) -> Sample:
    """Reads sample rate, channel count and duration from the file header (and checks that the
    file holds as much audio as the header says)."""
    path = os.fspath(path)
    try:
        with open_for_reading(path) as audio_file:
            return Sample(path, int(audio_file.samplerate), int(audio_file.channels),
                          audio_file.frames / audio_file.samplerate)
    except AudioFileError as error:
        if not _needs_fallback(path, error):
            raise
        sndfile_error = error.__cause__ or error
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
            with open_for_reading(path) as audio_file:
                file_rate = audio_file.samplerate
                audio_file.seek(min(start, audio_file.frames))
                audio = audio_file.read(-1 if num_frames is None else num_frames, dtype="float32", always_2d=True)
        except AudioFileError as error:
            if not _needs_fallback(path, error):
                raise
            try:
                audio, file_rate = _read_with_audioread(path, start, num_frames)
            except Exception as fallback_error:
                raise _audioread_fallback_error(path, error.__cause__ or error) from fallback_error
        except RuntimeError as error:  # libsndfile reports data it cannot decode this way
            raise AudioFileError(f"Cannot read audio file '{path}': {error}") from error
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
