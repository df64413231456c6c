"""How long building the partitions of a 100-track descriptor takes from a warm `dataset.pkl`.

Run:  python benchmarks/bench_partitions.py

The real DSD100 descriptor (dataset_xml/DSD100.xml, 100 tracks) is pointed at a temporary
folder holding short generated files at every path it names. The script times the cold build
(parse, check files, derive 100 accompaniments, write dataset.pkl) and then the warm load in
the same run, and prints both with their ratio. Target: warm load under 1 s.
"""
import os
import sys
import tempfile
import time

import numpy as np
import soundfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from Datasets.descriptors import parse_descriptor  # noqa: E402
from Datasets.partitions import load_partitions  # noqa: E402

DESCRIPTOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dataset_xml", "DSD100.xml")


def populate(root: str) -> None:
    """Writes 0.25 s of stereo noise at every path the descriptor names."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (11025, 2)).astype(np.float32)
    for track in parse_descriptor(DESCRIPTOR).tracks:
        for instrument in track.instruments:
            path = os.path.join(root, instrument.relative_path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            soundfile.write(path, noise, 44100)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root, cache = os.path.join(folder, "DSD100"), os.path.join(folder, "cache")
        populate(root)
        start = time.perf_counter()
        load_partitions([DESCRIPTOR], cache, dataset_roots={"DSD100": root})
        cold = time.perf_counter() - start
        warm_times = []
        for _ in range(5):
            start = time.perf_counter()
            partitions = load_partitions([DESCRIPTOR], cache, dataset_roots={"DSD100": root})
            warm_times.append(time.perf_counter() - start)
        warm = float(np.median(warm_times))
        print(f"partitions of 100 tracks ({len(partitions.train_sup)}/{len(partitions.valid)}/"
              f"{len(partitions.test)}): warm dataset.pkl {warm * 1000:.1f} ms "
              f"(cold build {cold:.2f} s in the same run, {cold / warm:.0f}x slower); target < 1000 ms")


if __name__ == "__main__":
    main()
