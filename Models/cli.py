"""The `separate` console command (installed by `pip install .`):

    separate CHECKPOINT INPUT... -o OUT [--postfilter wiener] [--overwrite] [--device cpu|gpu]
             [--mask-dilation FRAMES BANDS] [--mask-exponent POWER] [--background-gate-db DB]

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

from Models.config_checks import is_finite_non_negative, is_odd_window
from Models.postfilter import DEFAULT_POSTFILTER, POSTFILTERS  # numpy only


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
    if isinstance(trained, Separator):
        if arguments.mask_dilation or arguments.mask_exponent is not None or arguments.background_gate_db is not None:
            raise SystemExit(f"separate: --mask-dilation, --mask-exponent and --background-gate-db apply to "
                             f"weak-label checkpoints; "
                             f"'{arguments.checkpoint}' holds a separator of mixtures into sources.")
        trained = replace(trained, postfilter=postfilter)
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
