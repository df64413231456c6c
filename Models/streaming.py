"""Separating audio files of any length with flat memory.

A file is never held whole: it is read in blocks, resampled to the model's rate with
`soxr.ResampleStream`, turned into STFT frames, separated in long windows, turned back into
audio by overlap-add with the mixture's phase, resampled back to the file's rate and appended
to the output files. Every stage keeps only the samples or frames that its next output still
needs, so memory depends on the block and window sizes, not on the length of the file.

The result equals whole-file separation at the model's rate up to float rounding
(`Separator.waveform` on each channel, resampled there and back with `Datasets.audio.resample`,
for the post-filters that treat channels alone: all but Wiener filtering of several channels):

* the STFT is centred with reflect padding like `Datasets.features.stft`, the first and last
  half window reflected from the signal's own ends;
* the network runs through the same windowing (`Models.windowing.WindowedSeparation`), fed
  block by block instead of all at once;
* the post-filter (Models/postfilter.py) takes the same blocks of frames from the first on;
* the inverse STFT accumulates both the windowed frames and the squared-window sum, as
  librosa's `istft` does, and divides where a sample has received all its frames.

A time-frequency bin where the mixture is exactly zero (digital silence) gives zero in every
source, in both (`Models.postfilter.unit_phase`).

The model is mono: the channels go through the network as one batch, and only the Wiener
post-filter looks at them together. Outputs are `<output_dir>/<input stem>/<source>.wav`, 32-bit float, at the
input's sample rate and channel count and with exactly its number of frames.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import librosa
import numpy as np
import soundfile
import soxr
from scipy.signal import get_window
from tqdm import tqdm

from Datasets.atomic import temporary_file
from Datasets.audio import AudioFileError, open_for_reading
from Models.postfilter import BLOCK_FRAMES
from Datasets.features import magnitude_from_log

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_BLOCK_SECONDS = 30.0


class _Resampler:
    """Streaming band-limited resampling, (frames, channels) in and out; a no-op at equal rates."""

    def __init__(self, from_rate: int, to_rate: int, channels: int):
        self._stream = (None if from_rate == to_rate else
                        soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality="HQ"))

    def push(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(np.ascontiguousarray(samples), last=last)


class _StreamingStft:
    """Centred, reflect-padded Hann STFT of a stream of (frames, channels) samples, emitting
    complex (channels, bins, frames) as soon as each frame's samples are all there."""

    def __init__(self, n_fft: int, hop: int, channels: int):
        self.n_fft, self.hop, self.pad = n_fft, hop, n_fft // 2
        self.signal_length = 0
        self._started = False
        # Samples from the start of the next frame on (padded-signal coordinates once started).
        self._buffer = np.zeros((0, channels), np.float32)
        # The signal's last pad + 1 samples, which the end padding reflects.
        self._tail = np.zeros((0, channels), np.float32)

    def push(self, samples: np.ndarray, last: bool) -> np.ndarray:
        self.signal_length += len(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        self._tail = np.concatenate([self._tail, samples])[-(self.pad + 1):]
        if not self._started:
            if last:  # the whole signal is here: pad both ends as the whole-file STFT does
                if self.signal_length > 0:
                    self._buffer = np.pad(self._buffer, ((self.pad, self.pad), (0, 0)), mode="reflect")
                return self._frames()
            if len(self._buffer) <= self.pad:  # the start's reflection needs pad + 1 samples
                return self._frames()
            self._buffer = np.concatenate([self._buffer[1:self.pad + 1][::-1], self._buffer])
            self._started = True
        if last:
            self._buffer = np.concatenate([self._buffer, self._tail[:-1][::-1]])
        return self._frames()

    def _frames(self) -> np.ndarray:
        """The frames that the buffer holds whole; unpadded samples are never enough for one."""
        count = max((len(self._buffer) - self.n_fft) // self.hop + 1, 0)
        if count == 0:
            return np.zeros((self._buffer.shape[1], self.n_fft // 2 + 1, 0), np.complex64)
        # librosa's own framing and FFT, so that the frames equal the whole-file STFT's to the
        # last bit: the phase of a bin with next to no energy swings with any rounding.
        used = self._buffer[:(count - 1) * self.hop + self.n_fft]
        spectrum = librosa.stft(np.ascontiguousarray(used.T), n_fft=self.n_fft, hop_length=self.hop,
                                window="hann", center=False).astype(np.complex64, copy=False)
        self._buffer = self._buffer[count * self.hop:]
        return spectrum


class _OverlapAdd:
    """Inverse of `_StreamingStft`: complex (channels, bins, frames) in, the finished samples
    (frames, channels) out, trimmed to the signal's span once its length is known."""

    def __init__(self, n_fft: int, hop: int, channels: int):
        self.n_fft, self.hop, self.pad = n_fft, hop, n_fft // 2
        self.window = get_window("hann", n_fft, fftbins=True).astype(np.float32)
        # Frames are added hop by hop: each is cut into `segments` pieces of one hop (zero-padded),
        # and piece k of every frame lands k hops after the frame's start, so one vectorised
        # addition per piece replaces one per frame.
        self.segments = -(-n_fft // hop)
        self._squared_window = np.zeros(self.segments * hop, np.float32)
        self._squared_window[:n_fft] = self.window ** 2
        self._sum = np.zeros((0, channels), np.float32)  # from the next unfinished padded sample on
        self._window_sum = np.zeros(0, np.float32)
        self._to_trim = self.pad  # the padded signal's first `pad` samples precede the signal
        self._emitted = 0

    def push(self, spectrum: np.ndarray, last: bool, signal_length: int) -> np.ndarray:
        channels, _, count = spectrum.shape
        frames = np.fft.irfft(spectrum, n=self.n_fft, axis=1).astype(np.float32) * self.window[:, None]
        frames = np.pad(frames, ((0, 0), (0, self.segments * self.hop - self.n_fft), (0, 0)))
        pieces = frames.reshape(channels, self.segments, self.hop, count).transpose(1, 3, 2, 0)
        span = max((count - 1 + self.segments) * self.hop, len(self._sum)) if count else len(self._sum)
        total = np.zeros((span, channels), np.float32)
        window_sum = np.zeros(span, np.float32)
        total[:len(self._sum)] = self._sum
        window_sum[:len(self._window_sum)] = self._window_sum
        for piece in range(self.segments if count else 0):
            placed = slice(piece * self.hop, (piece + count) * self.hop)
            total[placed] += pieces[piece].reshape(count * self.hop, channels)
            window_sum[placed] += np.tile(self._squared_window[piece * self.hop:(piece + 1) * self.hop], count)
        finished = span if last else count * self.hop
        audio = total[:finished]
        nonzero = window_sum[:finished] > np.finfo(np.float32).tiny
        audio[nonzero] /= window_sum[:finished][nonzero, None]
        self._sum, self._window_sum = total[finished:], window_sum[finished:]
        trimmed = min(self._to_trim, len(audio))
        self._to_trim -= trimmed
        audio = audio[trimmed:]
        if last:
            audio = np.concatenate([audio, np.zeros((max(signal_length - self._emitted - len(audio), 0),
                                                     audio.shape[1]), np.float32)])
            audio = audio[:signal_length - self._emitted]
        self._emitted += len(audio)
        return audio


class SeparationStream:
    """All stages for one file: push (frames, channels) blocks at `input_rate` in order, the
    last with `last=True`; get back {source: (frames, channels)} at `input_rate`. Concatenating
    the outputs gives each source with exactly as many frames as were pushed. `input_frames`,
    where known, lets a short file run in windows no longer than itself."""

    def __init__(self, separator, input_rate: int, channels: int, window_frames: int | None = None,
                 input_frames: int | None = None):
        settings = separator.settings
        self._to_model = _Resampler(input_rate, settings.sample_rate, channels)
        self._stft = _StreamingStft(settings.n_fft, settings.hop, channels)
        model_frames = input_frames and int(input_frames * settings.sample_rate / input_rate) // settings.hop + 1
        self._separator = separator.windows(channels, model_frames, window_frames)
        self._postfilter = separator.postfilter
        # Mixture frames and magnitude estimates awaiting the post-filter, which takes whole blocks
        self._mixture = np.zeros((channels, settings.num_bins, 0), np.complex64)
        self._magnitudes = {name: np.zeros((channels, settings.num_bins, 0), np.float32)
                            for name in separator.source_names}
        self._inverse = {name: _OverlapAdd(settings.n_fft, settings.hop, channels)
                         for name in separator.source_names}
        self._from_model = {name: _Resampler(settings.sample_rate, input_rate, channels)
                            for name in separator.source_names}
        self._pushed = 0
        self._returned = dict.fromkeys(separator.source_names, 0)

    def push(self, block: np.ndarray, last: bool) -> dict[str, np.ndarray]:
        self._pushed += len(block)
        spectrum = self._stft.push(self._to_model.push(block, last), last)
        self._mixture = np.concatenate([self._mixture, spectrum], axis=2)
        for name, estimate in self._separator.push(np.log1p(np.abs(spectrum)), last).items():
            self._magnitudes[name] = np.concatenate([self._magnitudes[name], magnitude_from_log(estimate)], axis=2)
        ready = next(iter(self._magnitudes.values())).shape[2]
        count = ready if last else ready // BLOCK_FRAMES * BLOCK_FRAMES
        sources = self._postfilter.apply({name: magnitude[:, :, :count] for name, magnitude in
                                          self._magnitudes.items()}, self._mixture[:, :, :count])
        audio = {}
        for name, source in sources.items():
            model_rate = self._inverse[name].push(source, last, self._stft.signal_length)
            audio[name] = self._fit_to_input_length(name, self._from_model[name].push(model_rate, last), last)
            self._magnitudes[name] = self._magnitudes[name][:, :, count:]
        self._mixture = self._mixture[:, :, count:]
        return audio

    def _fit_to_input_length(self, name: str, audio: np.ndarray, last: bool) -> np.ndarray:
        """Resampling there and back may come out a few frames long or short: cut or zero-pad to
        the number of frames pushed."""
        audio = audio[:max(self._pushed - self._returned[name], 0)]
        if last:
            missing = self._pushed - self._returned[name] - len(audio)
            audio = np.concatenate([audio, np.zeros((missing, audio.shape[1]), np.float32)])
        self._returned[name] += len(audio)
        return audio


def output_paths(separator, input_path: str, output_dir: str) -> dict[str, str]:
    """{source: `<output_dir>/<input stem>/<source>.wav`}."""
    stem = os.path.splitext(os.path.basename(input_path))[0]
    return {name: os.path.join(output_dir, stem, f"{name}.wav") for name in separator.source_names}


class OutputExists(FileExistsError):
    """An output file of an earlier run is in the way (`path`)."""

    def __init__(self, path: str):
        super().__init__(f"'{path}' already exists; pass overwrite=True to replace it, or skip_existing=True to "
                         "separate only the inputs whose outputs are missing.")
        self.path = path


def _refuse_existing(paths: Sequence[str], overwrite: bool) -> None:
    if overwrite:
        return
    for path in paths:
        if os.path.exists(path):
            raise OutputExists(path)


def _read_blocks(audio_file: soundfile.SoundFile, path: str, block_frames: int) -> Iterator[np.ndarray]:
    try:
        while True:
            block = audio_file.read(block_frames, dtype="float32", always_2d=True)
            yield block
            if len(block) < block_frames:
                return
    except RuntimeError as error:  # libsndfile reports truncated or corrupt data this way
        raise AudioFileError(f"Cannot read audio file '{path}': {error}") from error


def separate_file(separator, input_path: str, output_dir: str, overwrite: bool = False,
                  block_seconds: float = DEFAULT_BLOCK_SECONDS, window_frames: int | None = None,
                  progress: bool = False) -> list[str]:
    """Separates one audio file into `<output_dir>/<input stem>/<source>.wav` and returns the
    paths written. `window_frames` (output frames per window, rounded down to a multiple of the
    grid) defaults to the separator's choice for the memory budget (`Separator.window_shape`).
    Outputs are written under temporary names and renamed when complete."""
    input_path = os.fspath(input_path)
    targets = output_paths(separator, input_path, output_dir)
    _refuse_existing(list(targets.values()), overwrite)
    with open_for_reading(input_path) as audio_file, ExitStack() as cleanup:
        rate, channels = audio_file.samplerate, audio_file.channels
        stream = SeparationStream(separator, rate, channels, window_frames, audio_file.frames)
        folder = os.path.dirname(next(iter(targets.values())))
        # Plain WAV cannot pass 4 GiB (about 3 h of 44.1 kHz stereo float); RF64 can.
        container = "WAV" if audio_file.frames * channels * 4 < 2 ** 32 - 2 ** 20 else "RF64"
        writers = {}
        for name in targets:
            temporary = temporary_file(folder, prefix=f".{name}-", suffix=".wav")
            cleanup.callback(lambda path=temporary: os.path.exists(path) and os.unlink(path))
            writers[name] = cleanup.enter_context(
                soundfile.SoundFile(temporary, "w", rate, channels, subtype="FLOAT", format=container))
        bar = cleanup.enter_context(tqdm(total=audio_file.frames, unit="frame", unit_scale=True,
                                         disable=not progress, desc=os.path.basename(input_path)))
        block_frames = max(int(block_seconds * rate), 1)
        for block in _read_blocks(audio_file, input_path, block_frames):
            last = len(block) < block_frames
            for name, audio in stream.push(block, last).items():
                writers[name].write(audio)
            bar.update(len(block))
            if last:
                break
        for name, writer in writers.items():
            writer.close()
            os.replace(writer.name, targets[name])
    return list(targets.values())


def audio_files(inputs: Sequence[str]) -> list[str]:
    """The given files, and every wav/flac/ogg/mp3 inside the given folders (recursively, sorted)."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            found += sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                            if name.lower().endswith(AUDIO_EXTENSIONS))
        else:
            found.append(os.fspath(item))
    return found


class SeparationFailed(RuntimeError):
    """Some inputs could not be separated; every other one was."""


def plan_outputs(separator, inputs: Sequence[str], output_dir: str, overwrite: bool,
                 skip_existing: bool = False) -> list[str]:
    """The input files still to separate (see `audio_files`), once it is certain that their
    outputs neither collide nor overwrite existing files unasked. With `skip_existing`, an
    input whose outputs all exist is left out (a rerun after an interruption or a failure)."""
    files = audio_files(inputs)
    outputs = {file: list(output_paths(separator, file, output_dir).values()) for file in files}
    targets = [path for paths in outputs.values() for path in paths]
    if len(set(targets)) < len(targets):
        duplicate = next(path for path in targets if targets.count(path) > 1)
        raise ValueError(f"Two inputs would both write '{duplicate}': give them different file names.")
    if skip_existing:
        done = [file for file in files if all(os.path.exists(path) for path in outputs[file])]
        if done:
            log.info("Skipping %d of %d inputs whose outputs exist (skip_existing=True)", len(done), len(files))
        files = [file for file in files if file not in done]
    _refuse_existing([path for file in files for path in outputs[file]], overwrite)
    return files


def separate_paths(separator, inputs: Sequence[str], output_dir: str, overwrite: bool = False,
                   skip_existing: bool = False, separate_one=None) -> list[str]:
    """Separates files and folders of files (see `audio_files`) with `separate_one(path) ->
    written paths` (default: `separate_file` with a progress bar) and returns what was written.

    Every output is checked before the first file is separated, so a refused overwrite or two
    inputs with the same stem stop the run before it writes anything. A file that cannot be
    read (missing, empty, damaged, not audio) does not stop the others: each is named with its
    reason as it fails, and SeparationFailed lists them all at the end."""
    separate_one = separate_one or (lambda path: separate_file(separator, path, output_dir, overwrite=True,
                                                               progress=True))
    files = plan_outputs(separator, inputs, output_dir, overwrite, skip_existing)
    written, failures = [], {}
    for file in files:
        try:
            written += separate_one(file)
        except AudioFileError as error:
            log.error("Skipped: %s", error)
            failures[file] = str(error)
    if failures:
        raise SeparationFailed(f"{len(failures)} of {len(files)} input files could not be separated (the other "
                               f"{len(files) - len(failures)} were, into {output_dir}):\n"
                               + "\n".join(f"  {reason}" for reason in failures.values())
                               + "\nFix or remove them; rerun with skip_existing=True to do only what is missing.")
    return written
