"""Data: audio I/O, descriptors, partitions, features and the excerpt pipeline.

`load_dataset` is the one entry point the experiments use; its arguments are the data keys
of the Sacred config (see Training.py).
"""
from __future__ import annotations

import os

from Datasets.partitions import DatasetConfigError, Partitions, load_custom_partitions, load_partitions


def load_dataset(use_demo_data: bool, descriptors: list[str], dataset_root: str | None,
                 dataset_roots: dict[str, str], split: str, dataset_loader: str | None,
                 skip_missing_files: bool, cache_dir: str, demo_seed: int = 0) -> Partitions:
    """The partitions the config asks for: a user loader, the built-in demo data, or descriptors."""
    if dataset_loader:
        return load_custom_partitions(dataset_loader)
    descriptors = list(descriptors)
    if use_demo_data:
        from Datasets.demo import generate_demo_data

        descriptors += generate_demo_data(os.path.join(cache_dir, "demo"), seed=demo_seed)
    if not descriptors:
        raise DatasetConfigError("No data: set `descriptors` to XML descriptor files (see dataset_xml/), "
                                 "`use_demo_data=True`, or `dataset_loader='module:function'`.")
    return load_partitions(descriptors, cache_dir, dataset_root, dataset_roots, split, skip_missing_files)
