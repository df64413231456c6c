"""What `python Training.py` runs for method="adversarial": config checks, data, the model,
the two phases and the test scores of the best model of each phase."""
from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np
import tensorflow as tf

from Datasets import load_dataset_for
from Datasets.audio import read
from Datasets.conversions import check_source_names
from Datasets.excerpts import PairedExcerpts, SpectrogramCache, UnpairedExcerpts
from Datasets.features import SpectrogramSettings
from Datasets.partitions import SPLITS, Partitions, UnpairedSources
from Models.adversarial.model import AdversarialSeparator
from Models.adversarial.solver import PHASES, AudioExample, Solver, ValidationSong
from Models.checkpoint import load_separator, save_config, separator_description
from Models.config_checks import require_choices, require_non_negative_numbers, require_positive_integers
from Models.distribution import check_distribution, is_chief, strategy_for
from Models.postfilter import PostFilter, check_postfilter
from Models.registry import SeparatorSpec, architecture
from Models.scoring import evaluate_tracks, flat_result, median_text, summarise
from Models.separation import Separator

# Keys that shape the networks or their features: a run resumes only with the same values.
RESUME_KEYS = ("expected_sr", "num_fft", "num_hop", "architecture", "architecture_options", "num_layers",
               "num_frames", "base_filters", "critic_base_filters", "critic_max_filters", "critic_dense_units",
               "source_names")
EXAMPLE_SECONDS = 10  # of the first validation song, separated into TensorBoard after every epoch


def check_config(config: dict) -> None:
    """Rejects settings that cannot work, before any data is touched."""
    require_non_negative_numbers(config, ("alpha", "beta", "lam", "init_sup_sep_lr", "init_unsup_sep_lr",
                                          "init_disc_lr"))
    require_positive_integers(config, ("batch_size", "num_disc", "epoch_it", "max_epochs", "patience", "num_layers",
                                       "num_frames", "base_filters", "summary_every", "num_workers"))
    check_source_names(config["source_names"])
    architecture(config["architecture"])  # an unknown name is refused with the registered ones
    if config["architecture"] == "unet":
        check_unet_config(config)
    if set(config["phases"]) - set(PHASES) or not config["phases"]:
        raise ValueError(f"Config key `phases` must list some of {PHASES}, got {config['phases']!r}.")
    require_choices(config, {"semi_supervised_init": ("scratch", "supervised"), "split": SPLITS})
    check_distribution(config["distribution"], config["devices"])
    check_postfilter(config["postfilter"], config["softmask_power"], config["wiener_iterations"])


def check_unet_config(config: dict) -> None:
    """The U-Net halves both axes num_layers times: the frequency bins and the frames it predicts must allow it."""
    num_layers, scale = config["num_layers"], 2 ** config["num_layers"]
    num_bins = config["num_fft"] // 2 + 1
    if num_bins < scale:
        raise ValueError(f"num_layers={num_layers} halves the frequency axis {num_layers} times, so it needs at "
                         f"least {scale} frequency bins, but num_fft={config['num_fft']} gives {num_bins}: raise "
                         f"num_fft to at least {2 * (scale - 1)}, or lower num_layers to at most "
                         f"{int(math.log2(num_bins))}.")
    if config["num_frames"] < scale:
        raise ValueError(f"num_layers={num_layers} halves the time axis {num_layers} times, so num_frames "
                         f"({config['num_frames']}) must be at least {scale}: raise num_frames to {scale}, or lower "
                         f"num_layers to at most {int(math.log2(config['num_frames']))}.")


def load_partitions(config: dict, log) -> Partitions:
    partitions = load_dataset_for(config)
    log.info("Partitions:\n%s", partitions.summary())
    unpaired = partitions.train_unsup
    if "semi_supervised" in config["phases"] and not (unpaired.mixtures and all(unpaired.sources.values())):
        counts = " / ".join(f"{len(samples)} {name}" for name, samples in unpaired.sources.items())
        raise ValueError(f"The semi-supervised phase needs unpaired mixtures and recordings of every source, but "
                         f"train_unsup has {len(unpaired.mixtures)} mixtures / {counts}. Add data sets without "
                         "databaseSplit tags, or set phases=['supervised'].")
    return partitions


def build_model(config: dict, settings: SpectrogramSettings, seed: int) -> AdversarialSeparator:
    strategy = strategy_for(config)
    tf.keras.utils.set_random_seed(seed)
    return AdversarialSeparator(
        SeparatorSpec.from_config(config, settings.num_bins), num_frames=config["num_frames"],
        critic_base_filters=config["critic_base_filters"], critic_max_filters=config["critic_max_filters"],
        critic_dense_units=config["critic_dense_units"], supervised_lr=config["init_sup_sep_lr"],
        semi_supervised_lr=config["init_unsup_sep_lr"], critic_lr=config["init_disc_lr"], alpha=config["alpha"],
        beta=config["beta"], lam=config["lam"], num_disc=config["num_disc"], seed=seed,
        jit_compile=config["jit_compile"], jit_compile_semi_supervised=config["jit_compile_semi_supervised"],
        mixed_precision=config["mixed_precision"], strategy=strategy)


def train(config: dict, run, log, seed: int, run_name: str, checkpoint_dir: str) -> dict:
    """Trains the phases of `config`, scores the best model of each on the test songs and
    returns the Sacred result: per phase the test loss and every source's medians with counts."""
    partitions = load_partitions(config, log)
    settings = SpectrogramSettings(config["expected_sr"], config["num_fft"], config["num_hop"])
    model = build_model(config, settings, seed)
    cache = SpectrogramCache(os.path.join(config["cache_dir"], "spectrograms"), settings)
    unpaired_sources = partitions.train_unsup
    tracks = partitions.train_sup + partitions.valid + partitions.test
    cache.prepare([s for t in tracks for s in (t.mixture, *t.sources.values())] + unpaired_sources.mixtures
                  + [s for samples in unpaired_sources.sources.values() for s in samples], config["num_workers"])
    paired = PairedExcerpts([(t.mixture, *t.sources.values()) for t in partitions.train_sup], model.shapes,
                            config["batch_size"], cache, seed)
    unpaired = held_back = None
    if "semi_supervised" in config["phases"]:
        unpaired = UnpairedExcerpts(unpaired_sources.mixtures, unpaired_sources.sources, model.shapes,
                                    config["batch_size"], cache, seed + 1)
        validation = UnpairedSources()
        for track in partitions.valid:
            validation.add(track)
        if validation.mixtures and all(validation.sources.values()):
            held_back = UnpairedExcerpts(validation.mixtures, validation.sources, model.shapes, config["batch_size"],
                                         cache, seed + 2)

    def songs(partition):
        return [ValidationSong(t.name, cache.load(t.mixture), np.stack([cache.load(s) for s in t.sources.values()]))
                for t in partition]

    def log_epoch(phase, epoch, metrics):
        for name, value in metrics.items():
            run.log_scalar(f"{phase}.{name}", float(value), epoch)

    chief = is_chief(config["distribution"])
    if chief:
        save_config(config, checkpoint_dir)
    tensorboard_dir = os.path.join(config["log_dir"], run_name)
    example = None
    if partitions.valid:
        track, num_samples = partitions.valid[0], EXAMPLE_SECONDS * settings.sample_rate
        frames = num_samples // settings.hop + 1
        example = AudioExample(
            read(track.mixture, num_frames=EXAMPLE_SECONDS * track.mixture.sample_rate,
                 sample_rate=settings.sample_rate, mono=True)[:num_samples],
            np.stack([cache.load(source)[:, :frames] for source in track.sources.values()]))
    separation = Separator(model.separator, settings, model.spec.geometry(), model.source_names)
    solver = Solver(model, separation, separator_description(model.spec, settings, config), paired, unpaired,
                    songs(partitions.valid), checkpoint_dir, tensorboard_dir, config["epoch_it"],
                    config["max_epochs"], config["patience"], config["summary_every"],
                    config["validation_window_frames"], config["semi_supervised_init"], example,
                    on_epoch_end=log_epoch, chief=chief, held_back=held_back)
    run.info.update({"checkpoint_dir": os.path.abspath(checkpoint_dir),
                     "tensorboard_dir": os.path.abspath(tensorboard_dir)})
    if config["resume"]:
        solver.restore(solver.checkpoint_path("last"))
        log.info("Resuming %s at %s epoch %d", checkpoint_dir, solver.progress.stage, solver.progress.epoch)

    solver.train(tuple(config["phases"]))
    if not chief:  # the chief scores and reports
        return {}
    # Scored after all phases, so that no worker waits in a collective while the chief scores.
    test_songs = songs(partitions.test)
    results = {}
    for phase in config["phases"]:
        results[phase] = score_phase(solver, phase, partitions, test_songs, config)
        medians = "; ".join(f"{name} {median_text(summary)}, {median_text(summary, 'NSDR')}"
                            for name, summary in results[phase]["test"].items())
        log.info("%s: best validation loss %.5f, test loss %.5f; test medians: %s", phase,
                 results[phase]["validation_loss"], results[phase]["test_loss"], medians)
        if config["save_best_artifact"]:
            run.add_artifact(results[phase]["checkpoint"], f"best_{phase}.pkl")
    run.info["results"] = results
    return {phase: {"test_loss": result["test_loss"], **flat_result(result["test"])}
            for phase, result in results.items()}


def score_phase(solver: Solver, phase: str, partitions: Partitions, test_songs: list[ValidationSong],
                config: dict) -> dict:
    """The test scores of the saved best model of `phase`, loaded into a network of its own: a
    resumed run may still be training a later phase in the solver's."""
    best = solver.checkpoint_path(solver.best_name(phase))
    separator = replace(load_separator(best), postfilter=PostFilter(config["postfilter"], config["softmask_power"],
                                                                    config["wiener_iterations"]))
    scores = evaluate_tracks(separator, partitions.test, config["validation_window_frames"])
    return {"validation_loss": float(solver.best_validation_loss(phase)),
            "test_loss": float(solver.supervised_loss(test_songs, separator)),
            "test": summarise(scores, separator.source_names), "test_tracks": scores,
            "checkpoint": os.path.abspath(best)}
