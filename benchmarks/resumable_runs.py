"""What the training benchmarks (semi_supervised_sweep.py, weak_label_dev_set.py) share: their
`--with KEY=VALUE` config updates, and a results file that is rewritten atomically after every
run, so that a rerun with the same settings skips the runs it holds."""
from __future__ import annotations

import argparse
import json
import os

from Datasets.atomic import atomic_open


def config_updates(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """`KEY=VALUE` strings -> {key: value}, each value read as JSON where it parses, else as text."""
    updates = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--with {item}: expected KEY=VALUE")
        try:
            updates[key] = json.loads(value)
        except json.JSONDecodeError:
            updates[key] = value
    return updates


class ResultsFile:
    """`<folder>/results.json`: {"settings": ..., "runs": {run key: result}}. A file written with
    other settings is refused, naming both, so results of different experiments never mix."""

    def __init__(self, folder: str, settings: dict, parser: argparse.ArgumentParser):
        self.path, self.settings, self.runs = os.path.join(folder, "results.json"), settings, {}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                saved = json.load(handle)
            if saved["settings"] != settings:
                parser.error(f"{self.path} holds runs with {saved['settings']}, not {settings}: choose another "
                             "--output.")
            self.runs = saved["runs"]
        os.makedirs(folder, exist_ok=True)

    def save(self, key: str, result: dict) -> None:
        self.runs[key] = result
        with atomic_open(self.path, "w") as handle:
            json.dump({"settings": self.settings, "runs": self.runs}, handle, indent=2)
