"""The scarce-pairs experiment of issue 15: the split, its demo data and the sweep script."""
import json
import os
import sys

import pytest

from conftest import REPO
from Datasets import load_dataset
from Datasets.partitions import DatasetConfigError


def _partitions(tiny_demo, tmp_path, paired_tracks=None):
    return load_dataset(False, list(tiny_demo), None, {}, "paper", None, False, str(tmp_path / "cache"),
                        paired_tracks=paired_tracks)


def test_scarce_pairs_split_is_deterministic_and_disjoint(tiny_demo, tmp_path):
    everything = _partitions(tiny_demo, tmp_path)
    scarce = _partitions(tiny_demo, tmp_path, paired_tracks=1)
    assert [track.name for track in scarce.train_sup] == [everything.train_sup[0].name]
    assert [track.name for track in _partitions(tiny_demo, tmp_path, 1).train_sup] == [scarce.train_sup[0].name]
    # the other paired song's mixture and sources are unpaired now, and no paired song's audio is
    moved = everything.train_sup[1]
    assert len(scarce.train_unsup.mixtures) == len(everything.train_unsup.mixtures) + 1
    assert moved.mixture.path in {sample.path for sample in scarce.train_unsup.mixtures}
    paired_files = {sample.path for track in scarce.train_sup for sample in (track.mixture, *track.sources.values())}
    unpaired_files = {sample.path for sample in scarce.train_unsup.mixtures} | {
        sample.path for samples in scarce.train_unsup.sources.values() for sample in samples}
    assert not paired_files & unpaired_files
    assert [track.name for track in scarce.valid] == [track.name for track in everything.valid]


@pytest.mark.parametrize("count", [0, 3])
def test_asking_for_more_paired_songs_than_exist_names_the_counts(tiny_demo, tmp_path, count):
    with pytest.raises(DatasetConfigError, match=f"`paired_tracks`: {count} paired songs asked for, but the "
                                                 "training split has 2"):
        _partitions(tiny_demo, tmp_path, paired_tracks=count)


def test_unknown_demo_setting_is_named(tmp_path):
    with pytest.raises(ValueError, match="`demo_options`: unknown demo settings \\['training_songs'\\]"):
        load_dataset(True, [], None, {}, "paper", None, False, str(tmp_path), demo_options={"training_songs": 3})


def test_sweep_script_runs_and_tabulates_gains_at_tiny_shapes(tiny_config, tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import semi_supervised_sweep

    tiny = {key: value for key, value in tiny_config.items() if key not in ("run_dir", "model_base_dir", "log_dir")}
    tiny.update(use_demo_data=False, paired_tracks=1, epoch_it=2)
    arguments = ["--seeds", "1", "--alphas", "1e-3", "--epochs", "2", "--output", str(tmp_path / "sweep")]
    for key, value in tiny.items():
        arguments += ["--with", f"{key}={json.dumps(value)}"]
    results = semi_supervised_sweep.main(arguments)
    assert set(results) == {"supervised seed=1", "fine-tune alpha=0.001 beta=0.001 seed=1"}
    for scores in results.values():
        assert set(scores["valid"]) == set(scores["test"]) == {"accompaniment", "voice"}
    assert results["supervised seed=1"]["steps"] == results["fine-tune alpha=0.001 beta=0.001 seed=1"]["steps"] == 4
    table = semi_supervised_sweep.table(results)
    assert "| fine-tune alpha=0.001 beta=0.001 | 1 |" in table
    # a rerun finds every run done; other settings in the same folder are refused
    assert semi_supervised_sweep.main(arguments) == results
    with pytest.raises(SystemExit):
        semi_supervised_sweep.main([*arguments, "--epochs", "4"])
