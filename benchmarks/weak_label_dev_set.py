"""Weak-label training on real recordings: the numbers of issue 16 on the development set.

Run from the repository root, after building the set of real recordings (Debian packages,
README "Weak labels on real recordings"):

    python -m Datasets.weak_label.debian_sounds --cache-dir .cache/debian_sounds --output .cache/weak_dev
    python benchmarks/weak_label_dev_set.py --data-root .cache/weak_dev          # about 35 min on 2 cores
    python benchmarks/weak_label_dev_set.py --data-root .cache/weak_dev --classifiers gwrp_affine --seeds 1 \\
        --with front_end='"pcen"'                                                # one variant, one seed
    python benchmarks/weak_label_dev_set.py --data-root .cache/weak_dev --classifiers gwrp_affine --splits 0 1 2

Every run is `Training.py with <--named>` on the generic recipe's clips of that folder: one event
per 4 s clip at 0 dB event-to-background ratio, 240 train / 60 valid / 60 test clips, test
events and backgrounds never heard in training. `--splits` names the recipe seeds that deal the
recordings (drum kits, voices, background pieces) to the splits: the test split holds one or two
kits per drum class, so its figures measure how a model does on those, and other splits show how
much that decides. Per classifier (`classifier=`), split and seed it records the best model's
test report (weighted ROC AUC, that of the masks alone where the clip statistics are fused, and
the linear floor trained on the same clips, event SDR
medians of the model, the mixture and the ideal binary mask, missed events, seconds per epoch)
and the same report on the validation split. The table gives means and spreads (standard
deviation) over the seeds of each split, and with several splits over all runs; the event SDR
of each run is the median over its scored events, and the count of events behind it is shown.
A second table gives the test figures per class over all runs (AUC beside the floor's, event SDR,
missed events).

Results go to `<output>/results.json` after every run (atomically); a rerun skips the runs found
there, so an interrupted benchmark continues.

`--rescore FOLDER` trains nothing: it scores the best models recorded in FOLDER/results.json
again, on their test and validation splits, with the settings of `--with` (only those that
leave the trained masks alone: how they separate, mask_exponent, mask_dilation and
background_gate_db, and which classes count as present, clip_statistics_weight,
detection_threshold and detection_false_alarm_rate, which settle anew on the validation split
as training settles them; the run's config.json gives the ones not named), and tabulates them
as above:

    python benchmarks/weak_label_dev_set.py --data-root .cache/weak_dev --rescore .cache/weak_label_dev_set \
        --with background_gate_db=0 --output .cache/weak_label_dev_set_no_gate
    python benchmarks/weak_label_dev_set.py --data-root .cache/weak_dev --rescore .cache/weak_label_dev_set \
        --with clip_statistics_weight='"validation_per_class"' --output .cache/weak_label_dev_set_per_class
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from statistics import mean, pstdev

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from resumable_runs import ResultsFile, config_updates  # noqa: E402
from Models.weak_label.detection import DETECTION_KEYS, check_detection_keys  # noqa: E402

DEV_SET = {"weak_label_recipe": "generic",
           "recipe_options": {"events_per_clip": [1, 1], "ebr_db": [0, 0],
                              "clips_per_split": {"train": 240, "valid": 60, "test": 60}}}


def _event_figures(summary: dict) -> dict:
    return {"event_sdr": summary.get("separated_median_SDR", float("nan")),
            "scored_events": summary.get("separated_count_SDR", 0), "missed": summary["missed"],
            "events": summary["events"], "false_alarms": summary["false_alarms"]}


def report(tagging: dict, floor: dict, events: dict) -> dict:
    """The figures of one split's report, over all classes and per class."""
    overall = events["all"]
    per_class = {name: {"auc": tagging["per_class"].get(name, {}).get("auc", float("nan")),
                        "floor_auc": floor["per_class"].get(name, {}).get("auc", float("nan")),
                        **_event_figures(summary)}
                 for name, summary in events.items() if name != "all"}
    return {"weighted_auc": tagging.get("weighted_auc", float("nan")),
            # the masks' own clip probabilities where those of the run fuse the clip statistics
            "masks_weighted_auc": tagging.get("masks", tagging).get("weighted_auc", float("nan")),
            "floor_weighted_auc": floor.get("weighted_auc", float("nan")), **_event_figures(overall),
            "mixture_sdr": overall["mixture_median_SDR"], "ideal_binary_mask_sdr": overall["oracle_ibm_median_SDR"],
            "per_class": per_class}


def split_reports(separator, splits: tuple[str, ...], detection: dict | None = None) -> dict:
    """`report` of a loaded event separator on each of `splits` of the clips it was trained on,
    beside the linear floor trained (once) on their training split, and the clip statistics'
    weight it detects with (one, or one per class); with `detection` (keys of DETECTION_KEYS, the
    others as the run set them), which classes count as present is first settled anew on the
    validation split."""
    from Datasets.weak_label import load_clips
    from Models.weak_label.detection import resettled
    from Models.weak_label.linear_floor import clips_floor, clips_floor_tagging
    from Models.weak_label.separation import score_clips

    clips = load_clips(separator.data_folder, separator.classes)
    floor = clips_floor(clips.split("train"), separator.settings)
    if detection:
        separator = resettled(separator, detection, clips, floor)
    reports = {"clip_statistics_weight": separator.clip_statistics_weight}
    for split in splits:
        chosen = clips.split(split)
        _, tagging, events = score_clips(separator, chosen)
        reports[split] = report(tagging, clips_floor_tagging(floor, chosen, separator.settings, separator.classes),
                                events)
    return reports


def train_and_score(updates: dict, named: list[str], folder: str) -> dict:
    """One training run; its best model's test and validation figures and its epoch time."""
    from Models.checkpoint import load_event_separator
    from Training import ex

    config = {**updates, "model_base_dir": os.path.join(folder, "checkpoints"),
              "log_dir": os.path.join(folder, "logs"), "run_dir": os.path.join(folder, "runs")}
    run = ex.run(named_configs=named, config_updates=config)
    results = run.info["results"]
    return {"test": report(results["test_tagging"], results["test_linear_floor"], results["test_events"]),
            **split_reports(load_event_separator(results["checkpoint"]), ("valid",)),
            "epoch_seconds": results["epoch_seconds"], "train_clips": results["train_clips"],
            "checkpoint": results["checkpoint"]}


SEPARATION_KEYS = ("mask_exponent", "mask_dilation", "background_gate_db")


def recorded_checkpoint(run: dict, folder: str) -> str:
    """The run's best checkpoint: where it was recorded, or in FOLDER/checkpoints where the
    results folder has moved."""
    if os.path.isfile(run["checkpoint"]):
        return run["checkpoint"]
    moved = os.path.join(folder, "checkpoints", *run["checkpoint"].split(os.sep)[-2:])
    if not os.path.isfile(moved):
        raise FileNotFoundError(f"The best checkpoint of a recorded run is neither at '{run['checkpoint']}' nor at "
                                f"'{moved}': score only results whose checkpoints are kept.")
    return moved


def rescore(run: dict, folder: str, separation: dict, detection: dict) -> dict:
    """A recorded run (of results FOLDER) with its test and validation figures scored again,
    its best model separating with `separation` (keys of SEPARATION_KEYS) and, where `detection`
    names keys of DETECTION_KEYS, detecting classes as settled anew with them."""
    from Models.checkpoint import load_event_separator

    separator = load_event_separator(recorded_checkpoint(run, folder), **separation)
    return {**run, **split_reports(separator, ("test", "valid"), detection)}


def _spread(values: list[float], digits: int = 3) -> str:
    return f"{mean(values):.{digits}f} ± {pstdev(values):.{digits}f}"


def _defined_spread(values: list[float]) -> str:
    """The spread of the defined values (a class absent from a split has no AUC), and how many."""
    defined = [value for value in values if math.isfinite(value)]
    if len(defined) == len(values):
        return _spread(values)
    return f"{_spread(defined)} ({len(defined)} runs)" if defined else "undefined"


def run_key(classifier: str, split: int, seed: int) -> str:
    return f"{classifier} split={split} seed={seed}"


def classifier_and_split(key: str) -> tuple[str, str]:
    """The classifier and recipe split of a `run_key`."""
    classifier, split = key.rsplit(" seed=", 1)[0].split(" split=")
    return classifier, split


def table(results: dict) -> str:
    """Markdown, one row per classifier, recipe split (or all of them) and evaluated split:
    means ± spreads over the runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for key, scores in results.items():
        groups.setdefault(classifier_and_split(key), []).append(scores)
    for classifier in dict.fromkeys(classifier for classifier, _ in groups):
        splits = [runs for (name, _), runs in groups.items() if name == classifier]
        if len(splits) > 1:
            groups[(classifier, "all")] = [run for runs in splits for run in runs]
    lines = ["| classifier | recipe split | evaluated on | runs | weighted AUC | masks alone | linear floor "
             "| AUC - floor | event SDR (dB) | events scored | missed | false alarms | mixture SDR "
             "| ideal binary mask SDR | s / epoch (train clips) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (classifier, recipe_split), runs in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] == "all")):
        for split in ("valid", "test"):
            figures = [run[split] for run in runs]
            lines.append(" | ".join([
                f"| {classifier}", recipe_split, split, str(len(runs)), _spread([f["weighted_auc"] for f in figures]),
                # runs recorded before the clip statistics could be fused were scored on the masks alone
                _spread([f.get("masks_weighted_auc", f["weighted_auc"]) for f in figures]),
                _spread([f["floor_weighted_auc"] for f in figures]),
                _spread([f["weighted_auc"] - f["floor_weighted_auc"] for f in figures]),
                _spread([f["event_sdr"] for f in figures], 2),
                "/".join(str(f["scored_events"]) for f in figures),
                "/".join(f"{f['missed']} of {f['events']}" for f in figures),
                "/".join(str(f.get("false_alarms", "-")) for f in figures),
                _spread([f["mixture_sdr"] for f in figures], 2),
                _spread([f["ideal_binary_mask_sdr"] for f in figures], 2),
                f"{mean(run['epoch_seconds'] for run in runs):.1f} ({runs[0]['train_clips']}) |"]))
    return "\n".join(lines)


def class_table(results: dict, split: str = "test") -> str:
    """Markdown, one row per classifier and class over all runs of `split`: where the model wins
    or loses against the floor, and which classes it separates. A run whose events of a class were
    all missed has no event SDR for it: the SDR column counts the runs behind its mean."""
    by_class: dict[tuple[str, str], list[dict]] = {}
    for key, scores in results.items():
        for name, figures in scores[split].get("per_class", {}).items():
            by_class.setdefault((classifier_and_split(key)[0], name), []).append(figures)
    lines = [f"| classifier | class ({split}) | runs | AUC | linear floor | event SDR (dB) | runs with an SDR "
             "| missed | false alarms |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (classifier, name), runs in sorted(by_class.items()):
        scored = [run["event_sdr"] for run in runs if run["scored_events"]]
        lines.append(" | ".join([
            f"| {classifier}", name, str(len(runs)), _defined_spread([run["auc"] for run in runs]),
            _defined_spread([run["floor_auc"] for run in runs]), _spread(scored, 2) if scored else "none",
            f"{len(scored)} of {len(runs)}",
            f"{sum(run['missed'] for run in runs)} of {sum(run['events'] for run in runs)}",
            # runs recorded before false alarms were counted have none to add
            (str(sum(run["false_alarms"] for run in runs)) if all("false_alarms" in run for run in runs)
             else "-") + " |"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="the development set (debian_sounds --output)")
    parser.add_argument("--named", nargs="+", default=["weak_label_demo"], help="named configs of configs/")
    parser.add_argument("--classifiers", nargs="+", default=["gwrp_affine", "max"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--splits", type=int, nargs="+", default=[0],
                        help="recipe seeds: which recordings go to train, valid and test (default 0)")
    parser.add_argument("--with", dest="updates", action="append", default=[], metavar="KEY=VALUE",
                        help="a Training.py config key for every run (JSON value); repeatable")
    parser.add_argument("--output", default=os.path.join(".cache", "weak_label_dev_set"))
    parser.add_argument("--rescore", metavar="FOLDER",
                        help="train nothing: score the runs of FOLDER/results.json again with the settings of "
                             f"--with ({', '.join(SEPARATION_KEYS + DETECTION_KEYS)})")
    arguments = parser.parse_args(argv)
    if arguments.rescore:
        return rescore_folder(arguments, parser)
    if not os.path.isdir(os.path.join(arguments.data_root, "events")):
        parser.error(f"--data-root {arguments.data_root} has no events/ folder: build the development set first "
                     "(python -m Datasets.weak_label.debian_sounds --cache-dir CACHE --output DATA).")
    updates = {**DEV_SET, "data_root": os.path.abspath(arguments.data_root),
               **config_updates(arguments.updates, parser)}
    saved = ResultsFile(arguments.output, {"named": arguments.named, "updates": updates}, parser)
    chosen = {}
    for classifier in arguments.classifiers:
        for split in arguments.splits:
            for seed in arguments.seeds:
                key = run_key(classifier, split, seed)
                if key not in saved.runs:
                    recipe_options = {**updates["recipe_options"], "seed": split}
                    saved.save(key, train_and_score({**updates, "recipe_options": recipe_options,
                                                     "classifier": classifier, "seed": seed},
                                                    arguments.named, arguments.output))
                chosen[key] = saved.runs[key]
    print(table(chosen))
    print()
    print(class_table(chosen))
    return chosen


def rescore_folder(arguments, parser: argparse.ArgumentParser) -> dict:
    source = os.path.join(arguments.rescore, "results.json")
    if not os.path.isfile(source):
        parser.error(f"--rescore {arguments.rescore}: there is no results.json there to score again.")
    updates = config_updates(arguments.updates, parser)
    unknown = sorted(set(updates) - set(SEPARATION_KEYS + DETECTION_KEYS))
    if unknown:
        parser.error(f"--rescore takes only the settings that leave the trained masks alone in --with "
                     f"({', '.join(SEPARATION_KEYS + DETECTION_KEYS)}), not {', '.join(unknown)}: train anew for those.")
    separation = {key: value for key, value in updates.items() if key in SEPARATION_KEYS}
    detection = {key: value for key, value in updates.items() if key in DETECTION_KEYS}
    try:
        check_detection_keys(detection)
    except ValueError as error:
        parser.error(str(error))
    with open(source) as handle:
        recorded = json.load(handle)
    saved = ResultsFile(arguments.output, {"rescored": os.path.abspath(source), "of": recorded["settings"],
                                           "separation": separation, **({"detection": detection} if detection else {})},
                        parser)
    for key, run in recorded["runs"].items():
        if key not in saved.runs:
            try:
                saved.save(key, rescore(run, arguments.rescore, separation, detection))
            except (FileNotFoundError, ValueError) as error:
                parser.error(f"--rescore {arguments.rescore}, run '{key}': {error}")
    print(table(saved.runs))
    print()
    print(class_table(saved.runs))
    return saved.runs


if __name__ == "__main__":
    main()
