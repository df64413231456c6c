"""Does the semi-supervised phase pay off where paired data is scarce? (issue 15)

Run from the repository root:

    python benchmarks/semi_supervised_sweep.py                       # the defaults below, about 1 h on 2 cores
    python benchmarks/semi_supervised_sweep.py --alphas 1e-4 1e-3 1e-2 --betas 1e-3 --seeds 1 2 3

On the scarce-pairs demo split (`with demo scarce_pairs`: 3 paired songs; 25 songs whose
mixtures and sources are unpaired, from other songs; 7 validation and 7 test songs) it trains,
for every seed and at equal separator-step budgets of `--epochs` epochs:

    supervised       the supervised phase alone, all epochs
    fine-tune        the supervised phase for half the epochs, then the semi-supervised phase
                     from its best model for the other half (semi_supervised_init=supervised)
    scratch          the semi-supervised phase alone from the random start (the paper)

the semi-supervised ones for every alpha x beta asked for. Each run's best model (by
validation loss) is scored on the validation and the test songs (median SDR per source).
The table gives, per setting, the mean and spread (standard deviation) over seeds and the
mean gain over supervised training of the same seed; the setting is chosen on the validation
songs. Results go to `<output>/results.json` after every run (atomically), and a rerun skips
the runs found there, so an interrupted sweep continues.

`--with KEY=VALUE` (JSON values) changes the training config of every run, e.g. tiny shapes
for a quick check: --with num_layers=2 --with base_filters=4 --with epoch_it=2.
"""
from __future__ import annotations

import argparse
import os
import sys
from statistics import mean, pstdev

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from resumable_runs import ResultsFile, config_updates  # noqa: E402

NAMED_CONFIGS = ["demo", "scarce_pairs"]


def runs_of(arguments) -> list[tuple[str, dict]]:
    """(run key, config updates) of every run of the sweep."""
    half = max(arguments.epochs // 2, 1)
    runs = []
    for seed in arguments.seeds:
        runs.append((f"supervised seed={seed}", {"seed": seed, "phases": ["supervised"],
                                                 "max_epochs": arguments.epochs}))
        for init in arguments.inits:
            for alpha in arguments.alphas:
                for beta in arguments.betas:
                    phases, epochs = ((["supervised", "semi_supervised"], half) if init == "supervised" else
                                      (["semi_supervised"], arguments.epochs))
                    runs.append((f"{'fine-tune' if init == 'supervised' else 'scratch'} alpha={alpha:g} "
                                 f"beta={beta:g} seed={seed}",
                                 {"seed": seed, "phases": phases, "max_epochs": epochs, "alpha": alpha,
                                  "beta": beta, "semi_supervised_init": init}))
    return runs


def train_and_score(updates: dict, folder: str) -> dict:
    """Trains one run and scores the best model of its last phase on the validation and test
    songs: {"valid"|"test": {source: median SDR}, "steps": separator steps}."""
    from Datasets import load_dataset_for
    from Models.checkpoint import load_separator
    from Models.scoring import evaluate_tracks, summarise
    from Training import ex

    config = {**updates, "patience": updates["max_epochs"], "model_base_dir": os.path.join(folder, "checkpoints"),
              "log_dir": os.path.join(folder, "logs"), "run_dir": os.path.join(folder, "runs")}
    run = ex.run(named_configs=NAMED_CONFIGS, config_updates=config)
    separator = load_separator(os.path.join(run.info["checkpoint_dir"], f"best_{config['phases'][-1]}.pkl"))
    partitions = load_dataset_for(run.config)
    scores = {}
    for partition in ("valid", "test"):
        summary = summarise(evaluate_tracks(separator, getattr(partitions, partition)), separator.source_names)
        scores[partition] = {name: values["median_SDR"] for name, values in summary.items()}
    scores["steps"] = run.config["epoch_it"] * run.config["max_epochs"] * len(run.config["phases"])
    return scores


def setting_of(key: str) -> tuple[str, int]:
    """'fine-tune alpha=0.001 beta=0.001 seed=2' -> ('fine-tune alpha=0.001 beta=0.001', 2)."""
    setting, seed = key.rsplit(" seed=", 1)
    return setting, int(seed)


def table(results: dict) -> str:
    """Markdown: per setting and source, validation and test median SDR (mean +- spread over
    seeds) and the mean test gain over supervised training of the same seeds."""
    by_setting: dict[str, dict[int, dict]] = {}
    for key, scores in results.items():
        setting, seed = setting_of(key)
        by_setting.setdefault(setting, {})[seed] = scores
    supervised = by_setting.get("supervised", {})
    sources = list(next(iter(results.values()))["test"])
    lines = ["| setting | seeds | " + " | ".join(f"valid {name} | test {name} | test gain {name}" for name in sources)
             + " |", "| --- | --- |" + " --- | --- | --- |" * len(sources)]
    for setting, seeds in sorted(by_setting.items(), key=lambda item: item[0] != "supervised"):
        cells = []
        for name in sources:
            valid = [scores["valid"][name] for scores in seeds.values()]
            test = [scores["test"][name] for scores in seeds.values()]
            gains = [scores["test"][name] - supervised[seed]["test"][name] for seed, scores in seeds.items()
                     if seed in supervised]
            cells += [f"{mean(valid):.2f} ± {pstdev(valid):.2f}", f"{mean(test):.2f} ± {pstdev(test):.2f}",
                      f"{mean(gains):+.2f} ± {pstdev(gains):.2f}" if gains and setting != "supervised" else ""]
        lines.append(f"| {setting} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_on_validation(results: dict, source: str) -> str:
    """The semi-supervised setting with the highest mean validation median SDR of `source`."""
    by_setting: dict[str, list[float]] = {}
    for key, scores in results.items():
        setting, _ = setting_of(key)
        if setting != "supervised":
            by_setting.setdefault(setting, []).append(scores["valid"][source])
    return max(by_setting, key=lambda setting: mean(by_setting[setting]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--betas", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--inits", nargs="+", choices=("supervised", "scratch"), default=["supervised"])
    parser.add_argument("--epochs", type=int, default=16, help="separator-step budget of every run, in epochs")
    parser.add_argument("--output", default=os.path.join(".cache", "sweeps", "scarce_pairs"))
    parser.add_argument("--with", dest="updates", action="append", default=[], metavar="KEY=VALUE")
    arguments = parser.parse_args(argv)
    updates = config_updates(arguments.updates, parser)
    saved = ResultsFile(arguments.output, {"epochs": arguments.epochs, "updates": updates}, parser)
    for key, run_updates in runs_of(arguments):
        if key in saved.runs:
            continue
        print(f"=== {key}", flush=True)
        saved.save(key, train_and_score({**updates, **run_updates}, arguments.output))
    results = saved.runs
    print(table(results))
    if any(setting_of(key)[0] != "supervised" for key in results):
        voice = "voice" if "voice" in next(iter(results.values()))["valid"] else None
        if voice:
            print(f"best on the validation songs' voice: {best_on_validation(results, voice)}")
    return results


if __name__ == "__main__":
    main()
