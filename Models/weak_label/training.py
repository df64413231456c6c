"""What `python Training.py` runs for method="weak_label": config checks, the clips and their
features, the joint model, its training and the test report (tagging and event separation)."""
from __future__ import annotations

import collections
import functools
import os
import pickle
import time
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from Datasets.atomic import atomic_open
from Datasets.features import LOG_MEL_FLOOR, MelSettings
from Datasets.mel_cache import clip_mels, fit_frames
from Datasets.weak_label import RECIPES, cache_folder, load_clips, prepare
from Datasets.weak_label.folder import WeakLabelSet
from Models.checkpoint import load_event_separator, save_config
from Models.config_checks import (require_choices, require_non_negative_numbers, require_odd_window,
                                  require_positive_integers)
from Models.distribution import check_distribution, is_chief, strategy_for
from Models.weak_label.augmentation import Augmentation, check_augmentation_keys
from Models.weak_label.detection import check_detection_keys, settle_detection
from Models.weak_label.linear_floor import LinearFloor, clip_log_mels
from Models.weak_label.mask_model import are_frequency_dilations, hidden_blocks
from Models.weak_label.model import FRONT_END_LAYERS, Standardisation
from Models.weak_label.pooling import CLASSIFIERS
from Models.weak_label.separation import check_background_gate, is_event_result, mel_power, score_clips
from Models.weak_label.prior_bias import start_at_priors
from Models.weak_label.solver import SELECTION_METRICS, JointModel, LabelledFeatures, WeakLabelSolver
from Models.weak_label.tagging import detection_thresholds, undefined_auc_classes

MIN_TRAINING_CLIPS = 2  # per class: from one clip a model can only remember that recording

# Keys that shape the networks, their features or their data: a run resumes only with the same values.
RESUME_KEYS = ("expected_sr", "num_fft", "num_hop", "stft_window", "num_mels", "mel_fmin", "mel_fmax", "front_end",
               "mask_setting", "mask_channels", "mask_kernel_size", "mask_dropout", "mask_blocks",
               "mask_frequency_dilations", "mask_activation",
               "synchronized_batch_norm", "classifier", "gwrp_decay", "classifier_options", "weak_label_recipe",
               "data_root", "recipe_options", "ema_epochs")


def check_config(config: dict) -> None:
    """Rejects settings that cannot work, before any data is touched."""
    require_non_negative_numbers(config, ("learning_rate", "sparsity_weight", "lr_decay_factor", "gwrp_decay",
                                          "ema_epochs"))
    require_positive_integers(config, ("batch_size", "max_epochs", "patience", "summary_every", "num_workers",
                                       "num_mels", "lr_decay_epochs"))
    require_choices(config, {"weak_label_recipe": (*RECIPES, "folder"),
                             "front_end": tuple(FRONT_END_LAYERS), "mask_setting": ("thesis", "kong"),
                             "mask_activation": ("sigmoid", "softmax"), "classifier": CLASSIFIERS,
                             "selection_metric": SELECTION_METRICS, "output_bias": ("prior", "zero"),
                             "sparsity_masks": ("absent", "all")})
    check_augmentation_keys(config)
    require_odd_window(config, "mask_dilation", "frames, mel bands")
    if isinstance(config["mask_exponent"], bool) or not isinstance(config["mask_exponent"], (int, float)) \
            or not config["mask_exponent"] > 0:
        raise ValueError(f"Config key `mask_exponent` must be a positive number, got {config['mask_exponent']!r}.")
    check_background_gate(config["background_gate_db"])
    check_frequency_dilations(config)
    for key in ("sparsity_weight", "gwrp_decay"):
        if not 0 <= config[key] <= 1:
            raise ValueError(f"Config key `{key}` must lie in [0, 1], got {config[key]!r}.")
    check_distribution(config["distribution"], config["devices"])
    check_detection_keys(config)
    if config["weak_label_recipe"] not in ("demo",) and not config["data_root"]:
        raise ValueError(f"weak_label_recipe={config['weak_label_recipe']!r} needs `data_root`: the folder of its "
                         "source data (or, for 'folder', the prepared folder with labels.csv and classes.txt).")
    if config["data_root"] and not os.path.isdir(config["data_root"]):
        raise FileNotFoundError(f"Config key `data_root`: '{config['data_root']}' is not a folder.")


def check_frequency_dilations(config: dict) -> None:
    """`mask_frequency_dilations`: None, or one positive integer per hidden block of the mask model."""
    rates = config["mask_frequency_dilations"]
    if rates is None:
        return
    num_hidden = hidden_blocks(config["mask_setting"], config["mask_blocks"])
    if not are_frequency_dilations(rates, num_hidden):
        raise ValueError(f"Config key `mask_frequency_dilations` must be null or {num_hidden} positive integers, "
                         f"one per hidden block (mask_setting={config['mask_setting']!r}, "
                         f"mask_blocks={config['mask_blocks']!r}), got {rates!r}.")


def ema_momentum(ema_epochs: float, steps_per_epoch: int) -> float:
    """The per-step momentum of a moving average whose time constant is `ema_epochs` epochs
    (0: no average)."""
    return max(0.0, 1.0 - 1.0 / (ema_epochs * steps_per_epoch)) if ema_epochs else 0.0


def model_spec_of(config: dict, num_classes: int, num_frames: int) -> dict:
    """The arguments of `build_weak_label_model`; saved in every checkpoint to rebuild the model."""
    classifier_options = dict(config["classifier_options"])
    if config["classifier"] in ("gwrp", "gwrp_affine"):
        classifier_options.setdefault("decay", config["gwrp_decay"])
    if config["classifier"] == "dense":
        classifier_options.setdefault("num_frames", num_frames)
    return {"num_mels": config["num_mels"], "num_classes": num_classes,
            "mask_options": {"setting": config["mask_setting"], "last_activation": config["mask_activation"],
                             "channels": config["mask_channels"], "kernel_size": config["mask_kernel_size"],
                             "dropout": config["mask_dropout"], "num_blocks": config["mask_blocks"],
                             "frequency_dilations": config["mask_frequency_dilations"],
                             "synchronized_batch_norm": config["synchronized_batch_norm"]},
            "classifier_kind": config["classifier"], "classifier_options": classifier_options,
            "front_end": config["front_end"]}


def prepare_data(config: dict) -> str:
    """The folder of clips, labels.csv and classes.txt the config names, generated if need be."""
    if config["weak_label_recipe"] == "folder":
        return config["data_root"]
    arguments = dict(recipe=config["weak_label_recipe"], data_root=config["data_root"],
                     **{"sample_rate": config["expected_sr"], **config["recipe_options"]})
    return prepare(out_dir=cache_folder(config["cache_dir"], **arguments), **arguments)


@dataclass
class ClipFeatures:
    """The clips of a run with the model inputs of every split."""

    clips: WeakLabelSet
    splits: dict[str, list]  # split name -> its clips
    labelled: dict[str, LabelledFeatures]  # split name -> model inputs and labels
    settings: MelSettings
    standardisation: Standardisation
    num_frames: int
    log_mels: dict[str, list[np.ndarray]]  # split name -> each clip's log-mel frames, for the linear floor


def load_features(config: dict, log) -> ClipFeatures:
    """The clips the config names (made by their recipe if need be) and their standardised
    log-mel features, or mel energies for a front end inside the model, cut or padded to one length."""
    clips = load_clips(prepare_data(config))
    splits = {name: clips.split(name) for name in ("train", "valid", "test")}
    empty = [name for name, members in splits.items() if not members]
    if empty:
        raise ValueError(f"{os.path.join(clips.folder, 'labels.csv')} has no clips in split(s) {empty}: every "
                         "split (train, valid, test) needs clips.")
    log.info("Weak-label data in %s: %s; classes %s", clips.folder,
             ", ".join(f"{len(members)} {name}" for name, members in splits.items()), ", ".join(clips.classes))
    settings = MelSettings(config["expected_sr"], config["num_fft"], config["num_hop"], config["num_mels"],
                           config["mel_fmin"], config["mel_fmax"], config["stft_window"])
    paths = {name: [clip.mixture_path for clip in members] for name, members in splits.items()}
    mel_cache = os.path.join(config["cache_dir"], "mels")
    log_mels = {name: clip_log_mels(values, settings, mel_cache, config["num_workers"])
                for name, values in paths.items()}
    # Clips of a recipe all have one length; a user's clips are cropped or padded to the most common.
    num_frames = collections.Counter(len(mel) for mel in log_mels["train"]).most_common(1)[0][0]
    if config["front_end"] == "logmel":
        inputs = {name: fit_frames(values, num_frames, float(np.log(LOG_MEL_FLOOR)))
                  for name, values in log_mels.items()}
        standardisation = Standardisation.fit(inputs["train"], config["standardise_per_band"])
        inputs = {name: standardisation(values) for name, values in inputs.items()}
    else:  # the model's front-end layer normalises the mel energies
        inputs = {name: fit_frames(clip_mels(values, settings, mel_cache, config["num_workers"],
                                             mel_power(config["front_end"])), num_frames, 0.0)
                  for name, values in paths.items()}
        standardisation = Standardisation(np.zeros(config["num_mels"], np.float32),
                                          np.ones(config["num_mels"], np.float32))
    labelled = {name: LabelledFeatures(inputs[name], np.stack([clip.labels for clip in splits[name]]))
                for name in splits}
    return ClipFeatures(clips, splits, labelled, settings, standardisation, num_frames, log_mels)


def check_labels(data: ClipFeatures, log) -> None:
    """Refuses training labels with nothing to learn; warns of classes whose AUC the validation
    or test split cannot measure (left out of the weighted averages)."""
    labels_path = os.path.join(data.clips.folder, "labels.csv")
    training = data.labelled["train"].labels > 0.5
    few = [f"'{name}' ({count})" for name, count in zip(data.clips.classes, training.sum(axis=0))
           if count < MIN_TRAINING_CLIPS]
    if few:
        raise ValueError(f"{labels_path}: class(es) {', '.join(few)} have fewer than {MIN_TRAINING_CLIPS} training "
                         "clips (in brackets: the train clips labelled with each): add clips or drop the classes "
                         "from classes.txt.")
    everywhere = [name for name, present in zip(data.clips.classes, training.all(axis=0)) if present]
    if training.all() or not training.any():
        raise ValueError(f"{labels_path}: the labels are the same for every training clip "
                         f"({'all classes present' if training.all() else 'no class present'}): nothing to learn. "
                         "Training needs clips with and clips without each class.")
    if everywhere:
        raise ValueError(f"{labels_path}: class(es) {', '.join(everywhere)} are present in every training clip: "
                         "nothing tells them apart. Add training clips without them, or drop them from classes.txt.")
    for split in ("valid", "test"):
        undefined = undefined_auc_classes(data.labelled[split].labels, data.clips.classes)
        if undefined:
            log.warning("The %s split (%s) has class(es) %s in no clip or in every clip: their ROC AUC is "
                        "undefined and left out of the weighted average.", split, labels_path, ", ".join(undefined))


def linear_floor(data: ClipFeatures) -> LinearFloor:
    """The linear floor trained on the training clips."""
    return LinearFloor().fit(data.log_mels["train"], data.labelled["train"].labels)


def floor_tagging_of(floor: LinearFloor, data: ClipFeatures, split: str) -> dict:
    """The floor's tagging metrics on `split`."""
    return floor.tagging(data.log_mels[split], data.labelled[split].labels, data.clips.classes)


def settle_detection_into(best: str, config: dict, data: ClipFeatures, floor: LinearFloor, log) -> None:
    """Completes the best checkpoint's tagging (`detection.settle_detection`): the clip
    statistics' read-out with its weight and the detection thresholds, settled on the validation clips."""
    readout, thresholds, aucs = settle_detection(load_event_separator(best), data.splits["valid"],
                                                 data.log_mels["valid"], floor, config)
    with open(best, "rb") as handle:
        state = pickle.load(handle)
    state["clip_statistics"] = readout.to_state() if readout else None
    state["detection_thresholds"] = thresholds
    with atomic_open(best) as output:
        pickle.dump(state, output, protocol=pickle.HIGHEST_PROTOCOL)
    log.info("Clip probabilities: masks with weight %s on the clip statistics' read-out (validation weighted AUC "
             "%.4f; masks alone %.4f)", np.round(readout.weight, 3) if readout else 0, aucs["fused"], aucs["masks"])


def train(config: dict, run, log, seed: int, run_name: str, checkpoint_dir: str) -> dict:
    """Trains the joint model on the clips of `config`, scores its best model on the test clips
    and returns the Sacred result: tagging metrics and event separation medians with counts."""
    data = load_features(config, log)
    clips, splits, labelled, settings = data.clips, data.splits, data.labelled, data.settings
    check_labels(data, log)
    floor = linear_floor(data)
    valid_floor = floor_tagging_of(floor, data, "valid")
    log.info("Linear floor (logistic regression on pooled log-mel statistics) on the validation split: weighted "
             "AUC %.4f, mAP %.4f", valid_floor.get("weighted_auc", np.nan),
             valid_floor.get("mean_average_precision", np.nan))
    tf.keras.utils.set_random_seed(seed)
    model_spec = model_spec_of(config, len(clips.classes), data.num_frames)
    steps_per_epoch = -(-len(splits["train"]) // config["batch_size"])
    strategy = strategy_for(config)
    joint = JointModel(model_spec, config["learning_rate"], config["lr_decay_epochs"] * steps_per_epoch,
                       config["lr_decay_factor"], config["sparsity_weight"], config["jit_compile"], strategy,
                       config["sparsity_masks"], ema_momentum(config["ema_epochs"], steps_per_epoch))
    if config["output_bias"] == "prior" and not config["resume"]:
        start_at_priors(joint.model, config["classifier"], labelled["train"].features[:config["batch_size"]],
                        labelled["train"].labels.mean(axis=0))
    chief = is_chief(config["distribution"])
    if chief:
        save_config(config, checkpoint_dir)
    tensorboard_dir = os.path.join(config["log_dir"], run_name)
    # what separation needs besides the model, in every checkpoint
    description = {"data_folder": os.path.abspath(clips.folder), "mel_settings": asdict(settings),
                   "standardisation": {"mean": data.standardisation.mean, "std": data.standardisation.std},
                   "front_end": config["front_end"], "detection_threshold": config["detection_threshold"],
                   "mask_exponent": config["mask_exponent"], "mask_dilation": list(config["mask_dilation"]),
                   "background_gate_db": float(config["background_gate_db"])}

    epoch_ends = [time.perf_counter()]

    def log_epoch(stage, epoch, metrics):
        epoch_ends.append(time.perf_counter())
        for name, value in metrics.items():
            run.log_scalar(f"valid.{name}", float(value), epoch)

    solver = WeakLabelSolver(joint, labelled["train"], labelled["valid"], clips.classes, checkpoint_dir,
                             tensorboard_dir, model_spec, description, config["batch_size"], config["max_epochs"],
                             config["patience"], config["selection_metric"], config["summary_every"], seed,
                             on_epoch_end=log_epoch, chief=chief,
                             augmentation=Augmentation.of(config, data.standardisation),
                             thresholds_of=functools.partial(detection_thresholds, config["detection_threshold"],
                                                             false_alarm_rate=config["detection_false_alarm_rate"]))
    run.info.update({"checkpoint_dir": os.path.abspath(checkpoint_dir),
                     "tensorboard_dir": os.path.abspath(tensorboard_dir), "data_folder": description["data_folder"]})
    if config["resume"]:
        solver.restore(solver.checkpoint_path("last"))
        log.info("Resuming %s at epoch %d", checkpoint_dir, solver.progress.epoch)
    solver.train(("train",))
    if not chief:  # the chief scores and reports
        return {}

    best = solver.checkpoint_path("best")
    settle_detection_into(best, config, data, floor, log)
    separator = load_event_separator(best)
    events, test_tagging, summary = score_clips(separator, splits["test"])
    test_floor = floor_tagging_of(floor, data, "test")
    # the median over this session's epochs (training and validation); the first one also traces the steps
    epoch_seconds = float(np.median(np.diff(epoch_ends))) if len(epoch_ends) > 1 else float("nan")
    run.info["results"] = {"test_tagging": test_tagging, "test_linear_floor": test_floor, "test_events": summary,
                           "test_clips": events, "checkpoint": os.path.abspath(best),
                           "epoch_seconds": epoch_seconds, "train_clips": len(splits["train"])}
    overall = summary["all"]
    masks_alone = test_tagging.get("masks", test_tagging)
    log.info("Test: weighted AUC %.4f (masks alone %.4f), mAP %.4f, EER %.4f (linear floor: weighted AUC %.4f, mAP "
             "%.4f); event SDR median %.2f dB (mixture %.2f, ideal binary mask %.2f), %d of %d events missed, %d false "
             "alarms", test_tagging.get("weighted_auc", np.nan), masks_alone.get("weighted_auc", np.nan),
             test_tagging.get("mean_average_precision", np.nan),
             test_tagging.get("mean_eer", np.nan), test_floor.get("weighted_auc", np.nan),
             test_floor.get("mean_average_precision", np.nan), overall.get("separated_median_SDR", np.nan),
             overall.get("mixture_median_SDR", np.nan), overall.get("oracle_ibm_median_SDR", np.nan),
             overall["missed"], overall["events"], overall["false_alarms"])
    log.info("Training: %.1f s per epoch (median; training and validation) over %d training clips",
             epoch_seconds, len(splits["train"]))
    if config["save_best_artifact"]:
        run.add_artifact(best, "best.pkl")
    return {"weak_label": {**{f"test_{key}": test_tagging[key] for key in
                              ("weighted_auc", "mean_average_precision", "mean_eer") if key in test_tagging},
                           **({"test_masks_weighted_auc": masks_alone["weighted_auc"]}
                              if "weighted_auc" in masks_alone else {}),
                           **{f"test_floor_{key}": test_floor[key] for key in
                              ("weighted_auc", "mean_average_precision") if key in test_floor},
                           **{f"event_{key}": value for key, value in overall.items() if is_event_result(key)},
                           "epoch_seconds": epoch_seconds, "train_clips": len(splits["train"])}}
