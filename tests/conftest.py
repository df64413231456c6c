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
