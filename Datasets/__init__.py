"""Data: audio I/O, descriptors, partitions, features and the excerpt pipeline.

`load_dataset` is the one entry point the experiments use; its arguments are the data keys
of the Sacred config (see Training.py).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from Datasets.conversions import PAPER_SOURCES
from Datasets.partitions import DatasetConfigError, Partitions, load_custom_partitions, load_partitions

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_dataset(use_demo_data: bool, descriptors: list[str], dataset_root: str | None,
                 dataset_roots: dict[str, str], split: str, dataset_loader: str | None,
                 skip_missing_files: bool, cache_dir: str, source_names: Sequence[str] = PAPER_SOURCES,
                 demo_seed: int = 0) -> Partitions:
    """The partitions the config asks for: a user loader, the built-in demo data, or descriptors.

    A relative descriptor path that does not exist from the working folder is looked up in the
    project, so the shipped `dataset_xml/...` work from anywhere."""
    if dataset_loader:
        return load_custom_partitions(dataset_loader, source_names)
    descriptors = [path if os.path.exists(path) or os.path.isabs(path) else os.path.join(PROJECT_DIR, path)
                   for path in descriptors]
    if use_demo_data:
        from Datasets.demo import generate_demo_data

        descriptors += generate_demo_data(os.path.join(cache_dir, "demo"), seed=demo_seed)
    if not descriptors:
        raise DatasetConfigError("No data: set `descriptors` to XML descriptor files (see dataset_xml/), "
                                 "`use_demo_data=True`, or `dataset_loader='module:function'`.")
    return load_partitions(descriptors, cache_dir, dataset_root, dataset_roots, split, skip_missing_files,
                           source_names)


def load_dataset_for(config: dict) -> Partitions:
    """`load_dataset` with the data keys of a Training.py config."""
    return load_dataset(config["use_demo_data"], config["descriptors"], config["dataset_root"],
                        config["dataset_roots"], config["split"], config["dataset_loader"],
                        config["skip_missing_files"], config["cache_dir"], config["source_names"])
