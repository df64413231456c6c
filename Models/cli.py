"""The `separate` console command (installed by `pip install .`):

    separate CHECKPOINT INPUT... -o OUT [--postfilter wiener] [--overwrite] [--device cpu|gpu]
             [--mask-dilation FRAMES BANDS] [--mask-exponent POWER] [--background-gate-db DB]
             [--detection-threshold P|RULE] [--detection-false-alarm-rate SHARE] [--clip-statistics-weight W|RULE]

CHECKPOINT is a run folder or checkpoint file of either method; INPUT files and folders
(searched for wav, flac, ogg and mp3). Every file becomes `OUT/<file stem>/<source>.wav`.
TensorFlow is imported only once the arguments are understood, so that `--help` and
argument errors answer at once.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from Models.config_checks import is_finite_non_negative, is_odd_window, is_share
from Models.postfilter import DEFAULT_POSTFILTER, POSTFILTERS  # numpy only

# The options for weak-label checkpoints only, by config key: how the masks separate, and which
# settle detection anew (Models/weak_label/detection.py)
MASK_OPTIONS = {"mask_dilation": "--mask-dilation", "mask_exponent": "--mask-exponent",
                "background_gate_db": "--background-gate-db"}
DETECTION_OPTIONS = {"detection_threshold": "--detection-threshold",
                     "detection_false_alarm_rate": "--detection-false-alarm-rate",
                     "clip_statistics_weight": "--clip-statistics-weight"}


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not is_share(value):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _share_or_rule(text: str, rules: tuple[str, ...]):
    if text in rules:
        return text
    try:
        return _share(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] or one of {', '.join(rules)}, "
                                         f"got {text!r}") from None


def _detection_threshold(text: str):
    from Models.weak_label.tagging import DETECTION_RULES  # imports scikit-learn: only where the option is given

    return _share_or_rule(text, DETECTION_RULES)


def _clip_statistics_weight(text: str):
    from Models.weak_label.clip_statistics import FUSION_RULES

    return _share_or_rule(text, FUSION_RULES)


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="separate", description="Separate audio files with a trained model of this project.",
        epilog="A file that cannot be read is named and skipped; the command then exits with status 1.")
    arguments.add_argument("checkpoint", help="a run folder (checkpoints/<run>) or a checkpoint file")
    arguments.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, or folders of them")
    arguments.add_argument("-o", "--output", required=True, help="folder for <file stem>/<source>.wav")
    arguments.add_argument("--postfilter", choices=POSTFILTERS, default=DEFAULT_POSTFILTER,
                           help=f"how source spectrograms are made of the estimates (default {DEFAULT_POSTFILTER})")
    arguments.add_argument("--wiener-iterations", type=int, default=1, help="EM rounds of --postfilter wiener")
    arguments.add_argument("--softmask-power", type=float, default=1.0, help="exponent of --postfilter softmask")
    arguments.add_argument("--mask-dilation", type=int, nargs=2, metavar=("FRAMES", "BANDS"),
                           help="weak-label checkpoints: the window of the max filter on the masks, positive odd "
                                "sizes (1 1: none), instead of the one the checkpoint was trained with")
    arguments.add_argument("--mask-exponent", type=float, metavar="POWER",
                           help="weak-label checkpoints: the power the masks are raised to, instead of the "
                                "checkpoint's (above 1 sharpens them)")
    arguments.add_argument("--background-gate-db", type=float, metavar="DB",
                           help="weak-label checkpoints: masks count in full from this many dB above each band's "
                                "median over the input, not below it (0: no gate), instead of the checkpoint's")
    arguments.add_argument("--detection-threshold", type=_detection_threshold, metavar="P|RULE",
                           help="weak-label checkpoints: the clip probability from which a class is separated, for "
                                "every class, or validation_eer / validation_false_alarms settled anew on the "
                                "run's validation clips, instead of the checkpoint's thresholds")
    arguments.add_argument("--detection-false-alarm-rate", type=_share, metavar="SHARE",
                           help="weak-label checkpoints: the thresholds anew, so that this share of the run's "
                                "validation clips without each class detect it (its validation_false_alarms rule)")
    arguments.add_argument("--clip-statistics-weight", type=_clip_statistics_weight, metavar="W|RULE",
                           help="weak-label checkpoints: the weight of the pooled log-mel statistics in the clip "
                                "probabilities (0: the masks alone), or validation / validation_per_class, "
                                "settled anew on the run's clips with the thresholds")
    arguments.add_argument("--overwrite", action="store_true", help="replace earlier results in OUT")
    arguments.add_argument("--skip-existing", action="store_true",
                           help="separate only the inputs whose outputs are missing from OUT")
    arguments.add_argument("--device", choices=("cpu", "gpu"), default=None,
                           help="run on the CPU, or fail unless TensorFlow sees a GPU (default: a GPU if any)")
    return arguments


def use_device(device: str | None) -> None:
    """`--device gpu` without a GPU is an error, not a silent fallback: the user asked for speed
    that the machine cannot give."""
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("separate: --device gpu, but TensorFlow sees no GPU here (is tensorflow-cpu installed, "
                         "or CUDA missing?). Run with --device cpu, or without --device.")


def separate_inputs(trained, inputs: list[str], output_dir: str, overwrite: bool, skip_existing: bool) -> list[str]:
    """Separates files and folders with a loaded separator or event separator; see
    `Models.streaming.separate_paths` for what happens to unreadable files."""
    from Models.separation import Separator
    from Models.weak_label.separation import separate_event_paths

    if isinstance(trained, Separator):
        return trained.separate_paths(inputs, output_dir, overwrite, skip_existing)
    return separate_event_paths(trained, inputs, output_dir, overwrite, skip_existing)


def main(argv: list[str] | None = None) -> None:
    command = parser()
    arguments = command.parse_args(argv)
    if arguments.mask_dilation and not is_odd_window(arguments.mask_dilation, 2):
        command.error(f"--mask-dilation needs positive odd sizes (a centred window; 1 1: none), "
                      f"got {' '.join(map(str, arguments.mask_dilation))}")
    if arguments.mask_exponent is not None and not arguments.mask_exponent > 0:
        command.error(f"--mask-exponent must be positive, got {arguments.mask_exponent}")
    if arguments.background_gate_db is not None and not is_finite_non_negative(arguments.background_gate_db):
        command.error(f"--background-gate-db must be a non-negative number of dB (0: no gate), "
                      f"got {arguments.background_gate_db}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_device(arguments.device)
    from dataclasses import replace

    from Models.checkpoint import CheckpointError, load_trained
    from Models.postfilter import PostFilter
    from Models.separation import Separator
    from Models.streaming import OutputExists, SeparationFailed

    try:
        postfilter = PostFilter(arguments.postfilter, arguments.softmask_power, arguments.wiener_iterations)
        trained = load_trained(arguments.checkpoint, arguments.mask_exponent, arguments.mask_dilation,
                               arguments.background_gate_db)
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"separate: {error}") from None
    detection = {key: getattr(arguments, key) for key in DETECTION_OPTIONS if getattr(arguments, key) is not None}
    if isinstance(trained, Separator):
        weak_label_options = [option for key, option in {**MASK_OPTIONS, **DETECTION_OPTIONS}.items()
                              if getattr(arguments, key) is not None]
        if weak_label_options:
            raise SystemExit(f"separate: {', '.join(weak_label_options)} apply to weak-label checkpoints; "
                             f"'{arguments.checkpoint}' holds a separator of mixtures into sources.")
        trained = replace(trained, postfilter=postfilter)
    elif detection:
        from Models.weak_label.detection import resettled

        try:
            trained = resettled(trained, detection)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"separate: {error}") from None
    start = time.perf_counter()
    try:
        written = separate_inputs(trained, arguments.inputs, arguments.output, arguments.overwrite,
                                  arguments.skip_existing)
    except OutputExists as error:
        raise SystemExit(f"separate: '{error.path}' is there from an earlier run: add --overwrite to replace "
                         "it, or --skip-existing to separate only what is missing.") from None
    except ValueError as error:  # two inputs that would write the same outputs
        raise SystemExit(f"separate: {error}") from None
    except SeparationFailed as failure:
        print(f"separate: {failure}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"Wrote {len(written)} files to {arguments.output} in {time.perf_counter() - start:.1f} s.")


if __name__ == "__main__":
    main()
