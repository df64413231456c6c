import os
import sys

import numpy as np
import pytest
import soundfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_tone(path, frequency=440.0, seconds=1.0, rate=16000, channels=1, amplitude=0.3):
    """A sine tone file; returns the written signal (frames, channels)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    time = np.arange(int(seconds * rate)) / rate
    signal = (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)
    signal = np.repeat(signal[:, None], channels, axis=1)
    soundfile.write(path, signal, rate, subtype="FLOAT")
    return signal


@pytest.fixture
def dsd_folder(tmp_path):
    """A DSD100-layout folder: 4 Dev and 4 Test tracks of 1 s tones."""
    root = tmp_path / "DSD100"
    for split in ("Dev", "Test"):
        for index in range(4):
            folder = f"{index:03d} - Artist {index} - Song {split} {index}"
            stems = {"vocals": 600.0, "bass": 80.0, "drums": 200.0, "other": 1000.0}
            mixture = sum(write_tone(str(root / "Sources" / split / folder / f"{stem}.wav"), frequency,
                                     channels=2, amplitude=0.1) for stem, frequency in stems.items())
            os.makedirs(root / "Mixtures" / split / folder)
            soundfile.write(str(root / "Mixtures" / split / folder / "mixture.wav"), mixture, 16000,
                            subtype="FLOAT")
    return root


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A tiny demo data set: 2 training and 2 test songs, 3 extra songs (the last, a test song,
    instrumental like the full demo's), 3 s each at 8192 Hz."""
    from Datasets.demo import generate_demo_data

    root = tmp_path_factory.mktemp("demo")
    return generate_demo_data(str(root), seed=3, training_tracks=2, test_tracks=2, extra_tracks=3,
                              instrumental_extra_tracks=1, duration=3.0, sample_rate=8192, channels=1)


@pytest.fixture
def tiny_config(tiny_demo, tmp_path):
    """Training.py config updates for runs of a few seconds. Without XLA: compiling the supervised
    step takes longer than a tiny run trains (test_tiny_run_writes_config_metrics_checkpoints_and_tensorboard
    keeps it, as Training.py's default)."""
    return dict(use_demo_data=False, descriptors=tiny_demo, num_fft=64, num_hop=32, num_layers=2, num_frames=8,
                base_filters=4, critic_base_filters=4, critic_max_filters=8, critic_dense_units=4, batch_size=4,
                num_disc=2, epoch_it=3, max_epochs=2, patience=2, summary_every=1, seed=5, jit_compile=False,
                init_sup_sep_lr=1e-3, init_unsup_sep_lr=1e-3, init_disc_lr=1e-3,
                run_dir=str(tmp_path / "runs"), model_base_dir=str(tmp_path / "checkpoints"),
                log_dir=str(tmp_path / "logs"), cache_dir=str(tmp_path / "cache"))
