"""The run-comparison table: Sacred file-observer runs side by side.

    python Evaluate.py compare with runs=runs

One row per run, with the config keys that differ between runs and the test SDR medians of
each phase, each with the number of songs (or events) behind it; best voice (or vocals) first.
"""
from __future__ import annotations

import json
import os


def _read_runs(runs_dir: str) -> list[dict]:
    """Sacred file-observer runs: {"id", "status", "config", "result"} each."""
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        folder = os.path.join(runs_dir, name)
        try:
            with open(os.path.join(folder, "run.json")) as handle:
                record = json.load(handle)
            with open(os.path.join(folder, "config.json")) as handle:
                config = json.load(handle)
        except (OSError, ValueError):
            continue  # Sacred's _sources folder, or a run still starting
        runs.append({"id": name, "status": record.get("status", "?"), "config": config,
                     "result": record.get("result") or {}})
    return runs


def _medians(result: dict) -> dict[str, tuple[float, int | str, int]]:
    """SDR medians of a Training.py result with the number of songs (or events) behind each and
    how many of them failed, phase by phase: {"<phase> <source>": (dB, count, failed)}."""
    return {f"{phase} {key[:-len('_median_SDR')]}": (value, scores.get(key.replace("_median_", "_count_"), "?"),
                                                     scores.get(f"{key[:-len('_median_SDR')]}_failed", 0))
            for phase, scores in result.items() if isinstance(scores, dict)
            for key, value in scores.items() if key.endswith("_median_SDR")}


def _median_cell(median: tuple[float, int | str, int] | None) -> str:
    if median is None:
        return "-"
    value, count, failed = median
    return f"{value:.2f} (n={count}{f', {failed} failed' if failed else ''})"


def comparison_table(runs_dir: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the runs in `runs_dir`: the config keys that differ, SDR medians, best first."""
    runs = _read_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"No Sacred runs in '{runs_dir}' (config key `runs`).")
    keys = sorted({key for run in runs for key in run["config"]})
    differing = [key for key in keys if key != "seed" and
                 len({json.dumps(run["config"].get(key), sort_keys=True) for run in runs}) > 1]
    scores = [_medians(run["result"]) for run in runs]
    columns = sorted({column for score in scores for column in score})
    # Rank by the singing of the last phase, the paper's headline figure.
    ranking = next((column for column in (f"{phase} {source}" for phase in ("semi_supervised", "supervised")
                                          for source in ("voice", "vocals")) if column in columns),
                   columns[0] if columns else None)

    def sort_key(index):
        median = scores[index].get(ranking) if ranking else None
        return (median is None, -median[0] if median else 0.0)

    header = ["run", "status", *differing, *(f"{column} SDR" for column in columns)]
    rows = [[runs[i]["id"], runs[i]["status"], *(json.dumps(runs[i]["config"].get(key)) for key in differing),
             *(_median_cell(scores[i].get(column)) for column in columns)]
            for i in sorted(range(len(runs)), key=sort_key)]
    return header, rows


def compare_runs(runs_dir: str) -> str:
    """`comparison_table` as aligned text."""
    header, rows = comparison_table(runs_dir)
    widths = [max(len(str(row[col])) for row in [header, *rows]) for col in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows])
