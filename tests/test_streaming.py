"""Streaming file separation (Models/streaming.py) against whole-file separation, on a tiny
untrained U-Net (2 layers, 4 base filters, n_fft 64) so that every case runs in a second or so."""
import os

import keras
import numpy as np
import pytest
import soundfile

from Datasets import audio
from Datasets.audio import AudioFileError
from Datasets.features import SpectrogramSettings
from Models.separation import Separator
from Models.separator import build_separator
from Models.shapes import UnetGeometry
from Models.streaming import separate_file, separate_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("accompaniment", "voice")


def tiny_trained(output_bias: float = 0.0) -> Separator:
    """A 2-layer, 4-filter U-Net at n_fft 64. Its output kernels are made non-negative so that no
    source is silenced by a dead ReLU, whatever the random initialisation."""
    keras.utils.set_random_seed(0)
    model = build_separator(num_layers=2, num_bins=33, base_filters=4, source_names=SOURCES)
    for name in SOURCES:
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([np.abs(kernel), np.full_like(bias, output_bias)])
    return Separator(model, SpectrogramSettings(sample_rate=8192, n_fft=64, hop=32), UnetGeometry(2, 33), SOURCES,
                     "untrained")


@pytest.fixture(scope="module")
def trained():
    return tiny_trained()


def write_noise(path, seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """Noise as float WAV (FLAC and Ogg Vorbis at their defaults); returns what was written."""
    signal = (0.3 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))).astype(np.float32)
    soundfile.write(path, signal, rate, subtype="FLOAT" if path.endswith(".wav") else None)
    return signal


def whole_file_reference(trained, signal: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """Each channel resampled whole to the model's rate, separated whole, resampled back."""
    settings = trained.settings
    per_channel = [trained.waveform(audio.resample(channel, rate, settings.sample_rate)) for channel in signal.T]
    result = {}
    for name in SOURCES:
        channels = [audio.resample(estimates[name], settings.sample_rate, rate) for estimates in per_channel]
        stacked = np.stack(channels, axis=1)[:len(signal)]
        result[name] = np.pad(stacked, ((0, len(signal) - len(stacked)), (0, 0)))
    return result


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (8192, 1)])
def test_streaming_equals_whole_file_separation(trained, tmp_path, rate, channels):
    signal = write_noise(str(tmp_path / "song.wav"), 3.1, rate, channels)
    # 0.37 s blocks and 16-frame windows: the 3.1 s file spans 9 blocks and ~50 windows.
    written = separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "out"), block_seconds=0.37,
                            window_frames=16)
    assert written == [str(tmp_path / "out" / "song" / f"{name}.wav") for name in SOURCES]
    reference = whole_file_reference(trained, signal, rate)
    for name, path in zip(SOURCES, written):
        separated, written_rate = soundfile.read(path, dtype="float32", always_2d=True)
        assert written_rate == rate and separated.shape == signal.shape
        assert soundfile.info(path).subtype == "FLOAT"
        peak = np.abs(reference[name]).max()
        assert peak > 0
        assert np.abs(separated - reference[name]).max() < 1e-4 * peak


def test_whole_song_windowed_and_streaming_separation_agree(trained, tmp_path):
    """The three paths of the engine at the model's rate (no resampling): whole-song in one
    window, whole-song in 16-frame windows, and a file streamed in 0.3 s blocks."""
    signal = write_noise(str(tmp_path / "song.wav"), 2.5, trained.settings.sample_rate, 1)[:, 0]
    whole = trained.waveform(signal, window_frames=10_000)
    windowed = trained.waveform(signal, window_frames=16)
    streamed = trained.separate_file(str(tmp_path / "song.wav"), str(tmp_path / "out"), block_seconds=0.3,
                                     window_frames=16)
    for name, path in zip(SOURCES, streamed):
        peak = np.abs(whole[name]).max()
        assert peak > 0 and whole[name].shape == signal.shape
        assert np.abs(windowed[name] - whole[name]).max() <= 1e-5 * peak
        assert np.abs(soundfile.read(path, dtype="float32")[0] - whole[name]).max() <= 1e-5 * peak
    log_mixture = np.random.default_rng(4).uniform(0, 2, (33, 101)).astype(np.float32)
    for name, estimate in trained.log_spectrogram(log_mixture, window_frames=8).items():
        np.testing.assert_allclose(estimate, trained.log_spectrogram(log_mixture)[name], atol=1e-5)


def test_window_size_does_not_change_the_result(trained, tmp_path):
    write_noise(str(tmp_path / "song.wav"), 2.0, 16000, 1)
    small = separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "small"), block_seconds=0.5,
                          window_frames=4)
    large = separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "large"))
    for small_path, large_path in zip(small, large):
        small_audio, large_audio = soundfile.read(small_path)[0], soundfile.read(large_path)[0]
        assert np.abs(small_audio - large_audio).max() < 1e-4 * np.abs(large_audio).max()


def test_mp3_input(trained, tmp_path):
    mp3 = os.path.join(REPO, "tests", "data", "tone_440hz_2s.mp3")
    header = soundfile.info(mp3)
    decoded = soundfile.read(mp3, dtype="float32", always_2d=True)[0]
    for path in separate_file(trained, mp3, str(tmp_path), block_seconds=0.5):
        separated, rate = soundfile.read(path, always_2d=True)
        assert rate == header.samplerate and separated.shape == decoded.shape
        assert np.isfinite(separated).all() and np.abs(separated).max() > 0


def test_refuses_to_overwrite_unless_asked(trained, tmp_path):
    write_noise(str(tmp_path / "song.wav"), 0.5, 8192, 1)
    first = separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "out"))
    with pytest.raises(FileExistsError, match=r"accompaniment\.wav.*overwrite=True"):
        separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "out"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        separate_paths(trained, [str(tmp_path / "song.wav")], str(tmp_path / "out"))
    assert separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "out"), overwrite=True) == first
    assert sorted(os.listdir(tmp_path / "out" / "song")) == ["accompaniment.wav", "voice.wav"]  # no temporaries


@pytest.mark.parametrize("name, content", [("notes.txt", b"not audio at all"), ("broken.wav", b"RIFF\x00\x01junk"),
                                           ("missing.flac", None)])
def test_unreadable_input_names_the_file(trained, tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioFileError, match=name):
        separate_file(trained, str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_silent_input_gives_silent_outputs(tmp_path):
    """Even from a network that predicts energy for a silent mixture (a positive output bias)."""
    soundfile.write(str(tmp_path / "silence.wav"), np.zeros((20000, 2), np.float32), 44100, subtype="FLOAT")
    for path in separate_file(tiny_trained(output_bias=0.5), str(tmp_path / "silence.wav"), str(tmp_path),
                              block_seconds=0.1):
        separated = soundfile.read(path, always_2d=True)[0]
        assert separated.shape == (20000, 2)
        assert np.isfinite(separated).all() and not separated.any()


@pytest.mark.filterwarnings("ignore:n_fft=64 is too large:UserWarning")  # the whole-file reference's
@pytest.mark.parametrize("num_samples", [20, 100, 700])
def test_input_shorter_than_a_window(trained, tmp_path, num_samples):
    signal = write_noise(str(tmp_path / "short.wav"), num_samples / 22050, 22050, 2)
    written = separate_file(trained, str(tmp_path / "short.wav"), str(tmp_path / "out"))
    reference = whole_file_reference(trained, signal, 22050)
    for name, path in zip(SOURCES, written):
        separated = soundfile.read(path, dtype="float32", always_2d=True)[0]
        assert separated.shape == signal.shape
        assert np.abs(separated - reference[name]).max() <= 1e-4 * max(np.abs(reference[name]).max(), 1e-6)


@pytest.mark.parametrize("num_samples", [0, 1])
def test_input_with_no_sample_at_the_model_rate(trained, tmp_path, num_samples):
    """Whole-file separation cannot take these (nothing is left after resampling): zeros of the
    input's length."""
    soundfile.write(str(tmp_path / "tiny.wav"), np.ones((num_samples, 1), np.float32), 22050, subtype="FLOAT")
    for path in separate_file(trained, str(tmp_path / "tiny.wav"), str(tmp_path)):
        separated = soundfile.read(path, always_2d=True)[0]
        assert separated.shape == (num_samples, 1) and not separated.any()


def test_separate_paths_walks_folders(trained, tmp_path):
    albums = tmp_path / "albums"
    (albums / "one").mkdir(parents=True)
    write_noise(str(albums / "one" / "a.wav"), 0.3, 16000, 1)
    write_noise(str(albums / "b.flac"), 0.3, 8192, 2)
    write_noise(str(tmp_path / "c.ogg"), 0.3, 22050, 1)
    (albums / "cover.jpg").write_bytes(b"\xff\xd8")
    written = separate_paths(trained, [str(albums), str(tmp_path / "c.ogg")], str(tmp_path / "out"))
    assert sorted(os.path.relpath(path, tmp_path / "out") for path in written) == \
        sorted(os.path.join(stem, f"{name}.wav") for stem in ("a", "b", "c") for name in SOURCES)
    assert soundfile.info(str(tmp_path / "out" / "b" / "voice.wav")).channels == 2
    assert soundfile.info(str(tmp_path / "out" / "c" / "voice.wav")).samplerate == 22050


def test_separate_paths_refuses_two_inputs_with_one_stem(trained, tmp_path):
    write_noise(str(tmp_path / "song.wav"), 0.3, 8192, 1)
    write_noise(str(tmp_path / "song.flac"), 0.3, 8192, 1)
    with pytest.raises(ValueError, match="song"):
        separate_paths(trained, [str(tmp_path / "song.wav"), str(tmp_path / "song.flac")], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_one_bad_file_stops_a_folder(trained, tmp_path, caplog):
    """Case 3 of the reliability issue: every readable file is separated, each bad one is named
    with its reason, the run fails at the end, and skip_existing=True finishes the rest."""
    from Models.streaming import SeparationFailed

    folder = tmp_path / "album"
    folder.mkdir()
    write_noise(str(folder / "a.wav"), 0.3, 8192, 1)
    (folder / "b.wav").write_bytes(b"RIFF\x00\x01junk")
    (folder / "c.wav").write_bytes(b"")
    write_noise(str(folder / "d.flac"), 0.3, 16000, 2)
    out = tmp_path / "out"
    with pytest.raises(SeparationFailed, match=r"2 of 4 input files could not be separated") as failure:
        separate_paths(trained, [str(folder)], str(out))
    assert "b.wav" in str(failure.value) and "c.wav' is empty" in str(failure.value)
    assert "b.wav" in caplog.text  # named as it fails, not only at the end
    assert sorted(os.listdir(out)) == ["a", "d"]
    done = {path: os.path.getmtime(path) for stem in ("a", "d") for path in
            (str(out / stem / f"{name}.wav") for name in SOURCES)}

    with pytest.raises(FileExistsError, match="skip_existing=True"):
        separate_paths(trained, [str(folder)], str(out))
    write_noise(str(folder / "b.wav"), 0.3, 8192, 1)
    (folder / "c.wav").unlink()
    written = separate_paths(trained, [str(folder)], str(out), skip_existing=True)
    assert written == [str(out / "b" / f"{name}.wav") for name in SOURCES]
    assert all(os.path.getmtime(path) == mtime for path, mtime in done.items())


def test_output_files_are_not_private(trained, tmp_path):
    """Case 5: separated audio, and anything written through the atomic-write helper, gets the
    permissions of an ordinary new file (0666 less the umask), not the temporary file's 0600."""
    import stat

    from Datasets.atomic import atomic_open

    expected = 0o666 & ~_current_umask()
    write_noise(str(tmp_path / "song.wav"), 0.3, 8192, 1)
    for path in separate_file(trained, str(tmp_path / "song.wav"), str(tmp_path / "out")):
        assert stat.S_IMODE(os.stat(path).st_mode) == expected
    with atomic_open(tmp_path / "report.json", "w") as handle:
        handle.write("{}")
    assert stat.S_IMODE(os.stat(tmp_path / "report.json").st_mode) == expected
    assert expected != 0o600


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_empty_input_is_reported_as_empty(trained, tmp_path):
    """Case 10: a 0-byte file is named as empty, not as a format libsndfile does not know."""
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty\.wav' is empty \(0 bytes\)"):
        separate_file(trained, str(tmp_path / "empty.wav"), str(tmp_path / "out"))
    with pytest.raises(AudioFileError, match=r"is empty \(0 bytes\)"):
        audio.info(tmp_path / "empty.wav")
    with pytest.raises(AudioFileError, match=r"is empty \(0 bytes\)"):
        audio.read(tmp_path / "empty.wav")


def test_batches_of_windows_equal_one_window_per_call_and_trace_once(trained):
    """Three windows of each of two channels per call, fed in uneven blocks, give the frames of
    one window per call; a second song of another length reuses the traced graph."""
    from Models.windowing import WindowedSeparation

    rng = np.random.default_rng(5)
    songs = [rng.uniform(0, 2, (2, 33, frames)).astype(np.float32) for frames in (203, 77)]
    for song in songs:
        reference = WindowedSeparation(trained.model, trained.geometry, 33, 16, 2).push(song, last=True)
        batched = WindowedSeparation(trained.model, trained.geometry, 33, 16, 2, positions=3)
        parts = [batched.push(song[:, :, start:start + 29], last=start + 29 >= song.shape[2])
                 for start in range(0, song.shape[2], 29)]
        for name in SOURCES:
            joined = np.concatenate([part[name] for part in parts if part], axis=2)
            assert joined.shape == song.shape
            np.testing.assert_allclose(joined, reference[name], atol=1e-5)
    assert batched.model.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("postfilter", ["softmask", "wiener"])
def test_streamed_post_filters_equal_the_whole_song(trained, tmp_path, postfilter):
    """Blocks of 0.3 s (not a multiple of the Wiener filter's frame blocks) and whole-song
    separation filter the same blocks; the sources sum to the mixture."""
    from dataclasses import replace

    from Models.postfilter import BLOCK_FRAMES, PostFilter

    filtered = replace(trained, postfilter=PostFilter(postfilter))
    signal = write_noise(str(tmp_path / "song.wav"), 3.0, trained.settings.sample_rate, 1)[:, 0]
    assert len(signal) // trained.settings.hop > 2 * BLOCK_FRAMES
    whole = filtered.waveform(signal)
    streamed = filtered.separate_file(str(tmp_path / "song.wav"), str(tmp_path / "out"), block_seconds=0.3)
    for name, path in zip(SOURCES, streamed):
        np.testing.assert_allclose(soundfile.read(path, dtype="float32")[0], whole[name], atol=1e-4)
    np.testing.assert_allclose(sum(whole.values()), signal, atol=1e-4)


def test_stereo_wiener_sources_sum_to_the_input(trained, tmp_path):
    from dataclasses import replace

    from Models.postfilter import PostFilter

    signal = write_noise(str(tmp_path / "song.wav"), 2.0, trained.settings.sample_rate, 2)
    signal[:, 1] *= 0.3  # channels of different levels
    soundfile.write(str(tmp_path / "song.wav"), signal, trained.settings.sample_rate, subtype="FLOAT")
    written = replace(trained, postfilter=PostFilter("wiener", wiener_iterations=2)).separate_file(
        str(tmp_path / "song.wav"), str(tmp_path / "out"))
    total = sum(soundfile.read(path, dtype="float32", always_2d=True)[0] for path in written)
    np.testing.assert_allclose(total, signal, atol=1e-4)
