"""The model table and self-describing checkpoints: a new architecture is one module plus one
registry line, and a checkpoint rebuilds its network with nothing beside it."""
import json
import os
import pickle
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from Datasets.features import SpectrogramSettings
from Datasets.windows import WindowShapes
from Models import registry
from Models.adversarial.model import AdversarialSeparator
from Models.checkpoint import CheckpointError, load_separator, separator_description
from Models.registry import Architecture, SeparatorSpec
from Models.separation import Separator

SOURCES = ("accompaniment", "voice")


@dataclass(frozen=True)
class FrameGeometry:
    """A network that looks at each frame alone: no context, any shift."""

    num_bins: int
    grid: int = 1

    def windows(self, num_frames: int) -> WindowShapes:
        return WindowShapes(self.num_bins, num_frames, self.num_bins, num_frames)


def build_frame_masker(num_bins: int, source_names, hidden: int = 8) -> keras.Model:
    """Per frame, a small dense network over the bins (as 1 x 1 convolutions over the bin axis)."""
    mixture = keras.Input((num_bins, None, 1), name="mixture")
    features = keras.layers.Conv2D(hidden, (num_bins, 1), padding="same", activation="relu", name="encoder_0")(mixture)
    return keras.Model(mixture, {name: keras.layers.Conv2D(1, 1, activation="relu", name=name)(features)
                                 for name in source_names})


def frame_geometry(num_bins: int, **_) -> FrameGeometry:
    return FrameGeometry(num_bins)


@pytest.fixture
def frame_masker(monkeypatch):
    monkeypatch.setitem(registry.ARCHITECTURES, "frame_masker", Architecture(build_frame_masker, frame_geometry))
    return SeparatorSpec("frame_masker", 33, SOURCES, {"hidden": 6})


def test_a_registered_architecture_trains_and_separates(frame_masker):
    keras.utils.set_random_seed(0)
    model = AdversarialSeparator(frame_masker, num_frames=8, critic_base_filters=4, critic_max_filters=8,
                                 critic_dense_units=4, supervised_lr=1e-2)
    shapes, rng = model.shapes, np.random.default_rng(0)
    assert (shapes.input_frames, shapes.output_frames) == (8, 8)
    mixture = rng.uniform(0, 1, (4, 33, 8, 1)).astype(np.float32)
    sources = np.concatenate([0.4 * mixture, 0.6 * mixture], axis=-1)
    losses = [float(model.supervised_step(mixture, sources)["supervised_loss"]) for _ in range(5)]
    assert losses[-1] < losses[0]
    unpaired = [(mixture, (sources[..., :1], sources[..., 1:])) for _ in range(model.num_disc + 1)]
    assert np.isfinite(float(model.semi_supervised_step(mixture, sources, unpaired)["separator_loss"]))

    separator = Separator(model.separator, SpectrogramSettings(8192, 64, 32), frame_masker.geometry(), SOURCES)
    signal = rng.uniform(-0.3, 0.3, 8192).astype(np.float32)
    whole, windowed = separator.waveform(signal), separator.waveform(signal, window_frames=5)
    for name in SOURCES:
        assert whole[name].shape == signal.shape and np.abs(whole[name]).max() > 0
        np.testing.assert_allclose(windowed[name], whole[name], atol=1e-5)


def test_checkpoints_rebuild_their_network_with_nothing_beside_them(frame_masker, tmp_path):
    model = AdversarialSeparator(frame_masker, num_frames=8, critic_base_filters=4, critic_max_filters=8,
                                 critic_dense_units=4)
    settings = SpectrogramSettings(8192, 64, 32)
    state = {**separator_description(frame_masker, settings, {"seed": 1}), "separator": model.separator.get_weights()}
    with open(tmp_path / "best_supervised.pkl", "wb") as handle:
        pickle.dump(state, handle)
    loaded = load_separator(str(tmp_path))  # no config.json in the folder
    assert loaded.source_names == SOURCES and loaded.settings == settings and loaded.config == {"seed": 1}
    assert isinstance(loaded.geometry, FrameGeometry)
    log_mixture = np.random.default_rng(1).uniform(0, 1, (33, 20)).astype(np.float32)
    expected = Separator(model.separator, settings, frame_masker.geometry(), SOURCES).log_spectrogram(log_mixture)
    for name, estimate in loaded.log_spectrogram(log_mixture).items():
        np.testing.assert_allclose(estimate, expected[name], atol=1e-6)


def test_checkpoints_of_the_first_format_load_through_their_config_json(tmp_path):
    """Written before checkpoints described themselves: weights and training state only."""
    spec = SeparatorSpec("unet", 33, SOURCES, {"num_layers": 2, "base_filters": 2})
    weights = spec.build().get_weights()
    with open(tmp_path / "best_supervised.pkl", "wb") as handle:
        pickle.dump({"separator": weights, "progress": {}}, handle)
    with pytest.raises(CheckpointError, match="older version.*config.json beside it.*missing"):
        load_separator(str(tmp_path))
    config = {"expected_sr": 8192, "num_fft": 64, "num_hop": 32, "num_layers": 2, "num_frames": 8, "base_filters": 2,
              "source_names": list(SOURCES)}
    with open(tmp_path / "config.json", "w") as handle:
        json.dump(config, handle)
    loaded = load_separator(str(tmp_path))
    assert loaded.geometry.grid == 4 and loaded.config == config
    np.testing.assert_array_equal(loaded.model.get_weights()[0], weights[0])


def test_unknown_architecture_lists_the_registered_ones(tiny_config):
    from Training import ex

    with pytest.raises(ValueError, match="Unknown separator architecture 'transformer'.*registered: unet"):
        ex.run(config_updates=dict(tiny_config, architecture="transformer"))
    assert not os.path.exists(tiny_config["run_dir"])
