"""Tests of Datasets/excerpts.py on tiny shapes: window alignment against directly computed
features, zero padding, seeded determinism and resumption, unpaired gains and silence
handling, cache reuse and invalidation, and the tf.data adaptor."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile

from Datasets import audio, excerpts, features
from Datasets.excerpts import (PairedExcerpts, SpectrogramCache, UnpairedExcerpts, as_tf_dataset,
                               silent_spectrogram)
from Datasets.features import SpectrogramSettings
from Models.shapes import unet_shapes
from Sample import Sample, SilentSample

SETTINGS = SpectrogramSettings(sample_rate=8192, n_fft=64, hop=32)  # 33 bins
SHAPES = unet_shapes(num_layers=2, num_frames=8, num_bins=SETTINGS.num_bins)  # 54 x 30 -> 34 x 10
BINS = SETTINGS.num_bins
BELOW = SHAPES.input_bins_below
CONTEXT = SHAPES.context_frames
MARKER_BIN, MARKER_FRAME = 12, 40


def write_audio(folder, name: str, signal: np.ndarray, rate: int = SETTINGS.sample_rate) -> Sample:
    path = os.path.join(folder, f"{name}.wav")
    soundfile.write(path, signal.astype(np.float32), rate, subtype="FLOAT")
    return audio.info(path)


def direct_features(sample: Sample) -> np.ndarray:
    """log1p |STFT| computed without the cache, as the network should see it."""
    signal = np.clip(audio.read(sample, sample_rate=SETTINGS.sample_rate, mono=True), -1, 1)
    return features.log_magnitude(features.stft(signal, SETTINGS.n_fft, SETTINGS.hop))


def padded_window(spectrogram: np.ndarray, first_frame: int, num_frames: int) -> np.ndarray:
    """Frames [first_frame, first_frame + num_frames) with zeros outside the song."""
    window = np.zeros((spectrogram.shape[0], num_frames), np.float32)
    for offset in range(num_frames):
        if 0 <= first_frame + offset < spectrogram.shape[1]:
            window[:, offset] = spectrogram[:, first_frame + offset]
    return window


def matching_starts(window: np.ndarray, spectrogram: np.ndarray) -> list[int]:
    return [start for start in range(spectrogram.shape[1] - window.shape[1] + 1)
            if np.array_equal(window, spectrogram[:, start:start + window.shape[1]])]


def marker_track(folder, num_frames: int = 64, seed: int = 0) -> tuple[Sample, Sample, Sample]:
    """Noise accompaniment (every window unique) and a voice tone burst at bin MARKER_BIN
    around frame MARKER_FRAME; the mixture is their sum."""
    num_samples = (num_frames - 1) * SETTINGS.hop
    accompaniment = 0.01 * np.random.default_rng(seed).standard_normal(num_samples)
    voice = np.zeros(num_samples)
    burst = slice((MARKER_FRAME - 1) * SETTINGS.hop, (MARKER_FRAME + 1) * SETTINGS.hop)
    frequency = MARKER_BIN * SETTINGS.sample_rate / SETTINGS.n_fft
    seconds = np.arange(num_samples)[burst] / SETTINGS.sample_rate
    voice[burst] = 0.5 * np.sin(2 * np.pi * frequency * seconds)
    return (write_audio(folder, f"mixture{seed}", accompaniment + voice),
            write_audio(folder, f"accompaniment{seed}", accompaniment),
            write_audio(folder, f"voice{seed}", voice))


@pytest.fixture
def cache(tmp_path) -> SpectrogramCache:
    return SpectrogramCache(tmp_path / "cache", SETTINGS)


@pytest.fixture
def track(tmp_path) -> tuple[Sample, Sample, Sample]:
    return marker_track(tmp_path)


def test_paired_windows_line_up_with_directly_computed_features(track, cache):
    mixture, sources = PairedExcerpts([track], SHAPES, 32, cache, seed=1).next_batch()
    assert mixture.shape == (32, SHAPES.input_bins, SHAPES.input_frames, 1)
    assert sources.shape == (32, SHAPES.output_bins, SHAPES.output_frames, 2)
    expected_mixture, expected_accompaniment, expected_voice = map(direct_features, track)
    windows_with_marker = 0
    for index in range(32):
        [start] = matching_starts(sources[index, :BINS, :, 0], expected_accompaniment)
        np.testing.assert_array_equal(sources[index, :BINS, :, 1],
                                      expected_voice[:, start:start + SHAPES.output_frames])
        assert not sources[index, BINS:].any()
        mixture_window = padded_window(expected_mixture, start - CONTEXT, SHAPES.input_frames)
        np.testing.assert_array_equal(mixture[index, BELOW:BELOW + BINS, :, 0], mixture_window)
        assert not mixture[index, :BELOW].any() and not mixture[index, BELOW + BINS:].any()
        if start <= MARKER_FRAME < start + SHAPES.output_frames:
            windows_with_marker += 1
            frame = MARKER_FRAME - start
            assert np.argmax(sources[index, :, frame, 1]) == MARKER_BIN
            assert np.argmax(mixture[index, :, CONTEXT + frame, 0]) == BELOW + MARKER_BIN
    assert windows_with_marker > 0


def test_song_shorter_than_a_window_is_zero_padded(tmp_path, cache):
    short = marker_track(tmp_path, num_frames=5)
    expected_mixture, expected_accompaniment, _ = map(direct_features, short)
    assert expected_mixture.shape[1] == 5 < SHAPES.output_frames
    mixture, sources = PairedExcerpts([short], SHAPES, 2, cache, seed=0).next_batch()
    for index in range(2):
        np.testing.assert_array_equal(
            mixture[index, BELOW:BELOW + BINS, :, 0],
            padded_window(expected_mixture, -CONTEXT, SHAPES.input_frames))
        np.testing.assert_array_equal(
            sources[index, :BINS, :, 0], padded_window(expected_accompaniment, 0, SHAPES.output_frames))
    assert not mixture[:, :, :CONTEXT].any() and not mixture[:, :, CONTEXT + 5:].any()


def two_tracks(folder) -> list[tuple[Sample, Sample, Sample]]:
    return [marker_track(folder, num_frames=64, seed=0), marker_track(folder, num_frames=40, seed=1)]


def assert_same_batches(first: list, second: list) -> None:
    for (mixture_a, sources_a), (mixture_b, sources_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(mixture_a, mixture_b)
        for source_a, source_b in zip(np.atleast_1d(sources_a), np.atleast_1d(sources_b), strict=True):
            np.testing.assert_array_equal(source_a, source_b)


def draw(stream, count: int) -> list:
    return [stream.next_batch() for _ in range(count)]


def test_paired_batches_are_deterministic_and_resume_exactly(tmp_path, cache):
    tracks = two_tracks(tmp_path)
    stream = PairedExcerpts(tracks, SHAPES, 4, cache, seed=7)
    assert_same_batches(draw(stream, 3), draw(PairedExcerpts(tracks, SHAPES, 4, cache, seed=7), 3))
    other_seed = PairedExcerpts(tracks, SHAPES, 4, cache, seed=8)
    assert not np.array_equal(stream.next_batch()[0], other_seed.next_batch()[0])

    state = json.loads(json.dumps(stream.get_state()))
    expected = draw(stream, 3)
    resumed = PairedExcerpts(tracks, SHAPES, 4, cache, seed=0)
    resumed.set_state(state)
    assert_same_batches(draw(resumed, 3), expected)


def test_state_of_an_already_prefetched_batch_is_recoverable(tmp_path, cache):
    tracks = two_tracks(tmp_path)
    stream = PairedExcerpts(tracks, SHAPES, 4, cache, seed=3)
    batches = draw(stream, 5)
    resumed = PairedExcerpts(tracks, SHAPES, 4, cache, seed=0)
    resumed.set_state(json.loads(json.dumps(stream.get_state(batch_index=2))))
    assert_same_batches(draw(resumed, 3), batches[2:])
    assert resumed.get_state()["batches_drawn"] == 5


def unpaired(tracks, cache, seed: int = 0, batch_size: int = 32, **options) -> UnpairedExcerpts:
    return UnpairedExcerpts([track[0] for track in tracks], {"accompaniment": [track[1] for track in tracks],
                                                             "voice": [track[2] for track in tracks]},
                            SHAPES, batch_size, cache, seed, **options)


def test_unpaired_batches_are_deterministic_and_resume_exactly(tmp_path, cache):
    tracks = two_tracks(tmp_path)
    stream = unpaired(tracks, cache, seed=5, batch_size=4)
    assert_same_batches(draw(stream, 2), draw(unpaired(tracks, cache, seed=5, batch_size=4), 2))
    state = json.loads(json.dumps(stream.get_state()))
    expected = draw(stream, 2)
    resumed = unpaired(tracks, cache, seed=0, batch_size=4)
    resumed.set_state(state)
    assert_same_batches(draw(resumed, 2), expected)


def recovered_gain(window: np.ndarray, spectrogram: np.ndarray, first_frame: int) -> float | None:
    """The gain g with window = log1p(g * expm1(reference)), if the ratio is the same everywhere."""
    reference = np.expm1(padded_window(spectrogram, first_frame, window.shape[1]))
    audible = reference > 1e-3
    ratios = np.expm1(window)[audible] / reference[audible]
    return float(ratios.mean()) if np.allclose(ratios, ratios.mean(), rtol=1e-3) else None


def gains_of(windows: np.ndarray, spectrogram: np.ndarray, context: int) -> list[float]:
    gains = []
    for window in windows:
        candidates = [recovered_gain(window, spectrogram, start - context)
                      for start in range(spectrogram.shape[1] - SHAPES.output_frames + 1)]
        [gain] = [gain for gain in candidates if gain is not None]
        gains.append(gain)
    return gains


def test_unpaired_excerpts_get_gains_between_0_2_and_1_2(tmp_path, cache):
    track = marker_track(tmp_path)
    mixture, (accompaniment, voice) = unpaired([track], cache, batch_size=16).next_batch()
    assert mixture.shape == (16, SHAPES.input_bins, SHAPES.input_frames, 1)
    assert accompaniment.shape == voice.shape == (16, SHAPES.output_bins, SHAPES.output_frames, 1)
    mixture_gains = gains_of(mixture[:, BELOW:BELOW + BINS, :, 0], direct_features(track[0]), CONTEXT)
    accompaniment_gains = gains_of(accompaniment[:, :BINS, :, 0], direct_features(track[1]), 0)
    for gains in mixture_gains, accompaniment_gains:
        assert all(0.2 <= gain <= 1.2 for gain in gains)
        assert min(gains) < 0.5 and max(gains) > 0.9  # spread over the range, not one constant
    assert not mixture[:, :BELOW].any() and not accompaniment[:, BINS:].any()


def test_unpaired_source_lists_leave_out_silent_samples_and_silent_passages(tmp_path, cache):
    track = marker_track(tmp_path)  # the voice is silent except around MARKER_FRAME
    silent_voice = SilentSample(duration=2.0, sample_rate=SETTINGS.sample_rate)
    voices = [silent_voice, track[2]]

    def loudest_voice_bins(max_redraws: int) -> np.ndarray:
        stream = UnpairedExcerpts([track[0]], {"accompaniment": [track[1]], "voice": voices}, SHAPES, 32, cache,
                                  seed=0, max_redraws=max_redraws)
        return np.concatenate([stream.next_batch()[1][1].max(axis=(1, 2, 3)) for _ in range(2)])

    assert (loudest_voice_bins(max_redraws=0) == 0).any()
    assert (loudest_voice_bins(max_redraws=100) >= np.log1p(1e-2)).all()

    with pytest.raises(ValueError, match="recording of 'voice'"):
        UnpairedExcerpts([track[0]], {"accompaniment": [track[1]], "voice": [silent_voice]}, SHAPES, 4, cache, seed=0)
    with pytest.raises(ValueError, match="mixture"):
        UnpairedExcerpts([], {"accompaniment": [track[1]], "voice": [track[2]]}, SHAPES, 4, cache, seed=0)


def test_silent_sample_spectrogram_matches_a_real_file_of_that_length(tmp_path):
    cache = SpectrogramCache(tmp_path / "cache", SETTINGS)
    for rate, num_samples in [(8192, 1000), (44100, 12345), (22050, 22051)]:
        real = write_audio(tmp_path, f"noise{rate}", np.full(num_samples, 0.1), rate)
        silent = SilentSample(duration=num_samples / rate, sample_rate=rate)
        assert silent_spectrogram(silent, SETTINGS).shape == cache.load(real).shape
        assert not cache.load(silent).any()


def test_cache_decodes_each_file_once_and_recomputes_a_changed_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    files = [write_audio(data, name, np.full(4000, 0.1), 44100) for name in ("a", "b")]
    expected = direct_features(files[0])
    reads = []
    real_read = audio.read
    monkeypatch.setattr(audio, "read", lambda source, *args, **kwargs: reads.append(source) or
                        real_read(source, *args, **kwargs))

    SpectrogramCache(tmp_path / "cache", SETTINGS).prepare(files)
    assert len(reads) == 2
    reloaded = SpectrogramCache(tmp_path / "cache", SETTINGS).load_all(files)[0]
    np.testing.assert_array_equal(reloaded, expected)
    assert len(reads) == 2
    assert sorted(os.listdir(data)) == ["a.wav", "b.wav"]  # nothing written next to the data
    assert all(name.endswith(".npy") for name in os.listdir(tmp_path / "cache"))

    changed = write_audio(data, "a", np.full(4000, 0.2), 44100)  # same size: only the mtime tells
    os.utime(changed.path, ns=(10**18, 10**18))
    recomputed = SpectrogramCache(tmp_path / "cache", SETTINGS).load_all([changed, files[1]])[0]
    assert len(reads) == 3 and reads[-1] == changed

    SpectrogramCache(tmp_path / "cache", SpectrogramSettings(8192, 128, 64)).prepare(files[1:])
    assert len(reads) == 4  # other settings, other entry

    monkeypatch.undo()
    np.testing.assert_array_equal(recomputed, direct_features(changed))


def test_tf_dataset_yields_the_declared_shapes(tmp_path, cache):
    tf = pytest.importorskip("tensorflow")
    tracks = two_tracks(tmp_path)
    paired_stream = PairedExcerpts(tracks, SHAPES, 3, cache, seed=0)
    mixture, sources = next(iter(as_tf_dataset(paired_stream)))
    assert mixture.shape == (3, SHAPES.input_bins, SHAPES.input_frames, 1)
    assert mixture.dtype == tf.float32
    assert sources.shape == (3, SHAPES.output_bins, SHAPES.output_frames, 2)

    unpaired_stream = unpaired(tracks, cache, batch_size=3)
    dataset = as_tf_dataset(unpaired_stream)
    assert len(dataset.element_spec[1]) == 2
    mixture, (accompaniment, voice) = next(iter(dataset))
    assert mixture.shape == (3, SHAPES.input_bins, SHAPES.input_frames, 1)
    assert accompaniment.shape == voice.shape == (3, SHAPES.output_bins, SHAPES.output_frames, 1)


def test_cache_rejects_a_missing_file(tmp_path, cache):
    missing = Sample(str(tmp_path / "missing.wav"), 44100, 2, 1.0)
    with pytest.raises(audio.AudioFileError, match="does not exist"):
        cache.prepare([missing])


def test_resampled_length_matches_soxr():
    for from_rate, num_samples in [(44100, 44101), (16384, 1001), (22050, 7), (8192, 500)]:
        resampled = audio.resample(np.zeros(num_samples, np.float32), from_rate, SETTINGS.sample_rate)
        assert excerpts.resampled_length(num_samples, from_rate, SETTINGS.sample_rate) == len(resampled)
