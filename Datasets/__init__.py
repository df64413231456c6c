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
                 demo_options: dict | None = None, paired_tracks: int | None = None) -> Partitions:
    """The partitions the config asks for: a user loader, the built-in demo data, or descriptors;
    with `paired_tracks`, only that many training songs stay paired (`Partitions.with_paired`).

    A relative descriptor path that does not exist from the working folder is looked up in the
    project, so the shipped `dataset_xml/...` work from anywhere."""
    if dataset_loader:
        partitions = load_custom_partitions(dataset_loader, source_names)
    else:
        descriptors = [path if os.path.exists(path) or os.path.isabs(path) else os.path.join(PROJECT_DIR, path)
                       for path in descriptors]
        if use_demo_data:
            from Datasets.demo import demo_folder, generate_demo_data

            descriptors += generate_demo_data(demo_folder(cache_dir, demo_options or {}), **(demo_options or {}))
        if not descriptors:
            raise DatasetConfigError("No data: set `descriptors` to XML descriptor files (see dataset_xml/), "
                                     "`use_demo_data=True`, or `dataset_loader='module:function'`.")
        partitions = load_partitions(descriptors, cache_dir, dataset_root, dataset_roots, split, skip_missing_files,
                                     source_names)
    return partitions if paired_tracks is None else partitions.with_paired(paired_tracks)


def load_dataset_for(config: dict) -> Partitions:
    """`load_dataset` with the data keys of a Training.py config (also a checkpoint's, written
    before the demo_options and paired_tracks keys existed)."""
    return load_dataset(config["use_demo_data"], config["descriptors"], config["dataset_root"],
                        config["dataset_roots"], config["split"], config["dataset_loader"],
                        config["skip_missing_files"], config["cache_dir"], config["source_names"],
                        config.get("demo_options"), config.get("paired_tracks"))
