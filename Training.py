"""The Sacred training experiment of both methods.

    python Training.py print_config                  # every knob, with its default
    python Training.py with demo                     # built-in demo data, small shapes, minutes
    python Training.py with alpha=0.1                # any key can be overridden
    python Training.py with paper dataset_root=/data # the published settings on your copy of the data
    python Training.py with resume=checkpoints/<run> # continue an interrupted run
    python Training.py with weak_label_demo          # the weak-label method on its built-in demo
    python Training.py with weak_label_tut data_root=/data/TUT-rare-sound-events-2017-development

method="adversarial" (Stoller et al. 2018): phase 1 trains the separator on paired data; phase 2
adds the per-source critics and the unpaired data. Each phase stops early on the validation
loss; the best model of each phase is then scored on the test partition.

method="weak_label" (Kong et al. 2018): a mask model and a pooling classifier learn from clip
labels only; the best model on the validation split separates the test clips, scored beside
the unprocessed mixture and the ideal binary mask.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

import tracking.observers  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Keys that shape the networks or their features: a checkpoint only fits a config that agrees on them.
ARCHITECTURE_KEYS = {
    "adversarial": ("expected_sr", "num_fft", "num_hop", "architecture", "architecture_options", "num_layers",
                    "num_frames", "base_filters", "critic_base_filters", "critic_max_filters", "critic_dense_units",
                    "source_names"),
    "weak_label": ("expected_sr", "num_fft", "num_hop", "stft_window", "num_mels", "mel_fmin", "mel_fmax",
                   "front_end", "mask_setting", "mask_channels", "mask_kernel_size", "mask_dropout", "mask_blocks",
                   "mask_activation", "classifier", "gwrp_decay", "classifier_options", "weak_label_recipe",
                   "data_root", "recipe_options"),
}
METHODS = tuple(ARCHITECTURE_KEYS)

SETTINGS.CAPTURE_MODE = "sys"  # capturing file descriptors breaks under pytest and some terminals
ex = Experiment("separation_training")
ex.captured_out_filter = apply_backspaces_and_linefeeds  # keep progress bars readable in cout.txt


@ex.config
def config():
    method = "adversarial"  # "adversarial" (Stoller et al. 2018) or "weak_label" (Kong et al. 2018)

    # ---- data of the adversarial method
    use_demo_data = True  # generate the built-in demo data set (Datasets/demo.py) and train on it
    descriptors = []  # XML descriptor files (see dataset_xml/), used with or instead of the demo data
    dataset_root = None  # a folder holding one sub-folder per data set, named like its databaseName
    dataset_roots = {}  # per data set root, e.g. {"DSD100": "/data/DSD100"}; wins over dataset_root
    split = "paper"  # "paper" or "by_tag" (Datasets/partitions.py)
    dataset_loader = None  # "module:function" returning the partitions directly (replaces the above)
    skip_missing_files = False  # leave out tracks with missing, empty, damaged or unreadable audio (a warning each)
    cache_dir = ".cache"  # dataset.pkl, derived audio, spectrogram cache and demo data
    num_workers = 4  # threads that decode, resample and transform audio into the spectrogram cache

    # ---- features (both methods)
    expected_sr = 8192  # Hz; audio is downmixed to mono and resampled to this rate
    num_fft = 512  # STFT window and FFT length
    num_hop = 256  # STFT hop

    # ---- the adversarial method's networks, losses and schedule
    # the sources to separate, from the stems vocals (or voice), drums, bass, other and accompaniment
    source_names = ["accompaniment", "voice"]
    architecture = "unet"  # separator network, by its name in Models/registry.py
    architecture_options = {}  # further arguments of the architecture (the U-Net's are the next two keys)
    num_layers = 4  # U-Net depth
    base_filters = 16  # separator filters at full resolution; doubled per level
    num_frames = 64  # frames the separator predicts per training example (rounded up by the U-Net)
    critic_base_filters = 32  # critic filters of its first layer; doubled per layer
    critic_max_filters = 256  # cap on the critic's filters
    critic_dense_units = 32  # units of the critic's hidden dense layer

    alpha = 0.001  # weight of the adversarial loss
    beta = 0.001  # weight of the additivity loss (estimates should add up to the mixture)
    lam = 10.0  # weight of the one-sided gradient penalty

    batch_size = 64  # examples per step, paired and unpaired alike
    init_sup_sep_lr = 5e-5  # separator learning rate in the supervised phase
    init_unsup_sep_lr = 5e-5  # separator learning rate in the semi-supervised phase
    init_disc_lr = 5e-5  # critic learning rate
    num_disc = 5  # critic iterations per separator step
    epoch_it = 1000  # separator steps per epoch
    max_epochs = 100  # per phase
    patience = 5  # epochs without validation improvement before a phase stops
    phases = ["supervised", "semi_supervised"]  # which phases to run, in order
    semi_supervised_init = "scratch"  # "scratch" (paper: same random start) or "supervised" (fine-tune)
    jit_compile = True  # XLA-compile the training steps (faster on CPU and GPU; False eases debugging)
    mixed_precision = False  # float16 compute with loss scaling: for GPUs with tensor cores only
    validation_window_frames = 2048  # output frames per separator call on whole songs

    # ---- the weak-label method (Models/weak_label_model.py, Datasets/weak_label)
    weak_label_recipe = "demo"  # "demo", "generic", "tut", "dcase2013", or "folder" (data_root holds labels.csv)
    data_root = None  # the recipe's source data (generic: events/<class>/ and backgrounds/), or a prepared folder
    recipe_options = {}  # recipe parameters, e.g. {"clip_seconds": 4, "ebr_db": [-6, 6]} (Datasets/weak_label)
    stft_window = "hann"  # STFT window of the weak-label features ("hamming" in the papers)
    num_mels = 64  # mel bands of the features and masks
    mel_fmin = 0.0  # Hz
    mel_fmax = 8000.0  # Hz; None for half the sample rate
    front_end = "logmel"  # "logmel" (standardised log mel), "pcen" (fixed PCEN) or "trainable_pcen"
    standardise_per_band = True  # log-mel mean and deviation per band (True) or over all bands
    mask_setting = "thesis"  # "thesis" (3 blocks of 5x5 convs) or "kong" (4 double 3x3 blocks)
    mask_channels = None  # override the setting's feature maps per conv layer
    mask_kernel_size = None  # override the setting's kernel size
    mask_dropout = None  # override the setting's dropout rate
    mask_blocks = None  # override the setting's number of blocks
    mask_activation = "sigmoid"  # "sigmoid" per class, or "softmax" over the classes plus background
    classifier = "gwrp"  # mask -> clip probability: gwrp, max, average, dense, depthwise_cnn or gru
    gwrp_decay = 0.999  # d of global weighted rank pooling (1: average pooling, 0: max pooling)
    classifier_options = {}  # further options of the classifier (Models/pooling.py)
    sparsity_weight = 0.0  # w in (1 - w) BCE + w mean|mask| over absent classes (Kong: 0.3)
    learning_rate = 1e-3  # Adam
    lr_decay_epochs = 50  # the learning rate is multiplied by lr_decay_factor every this many epochs
    lr_decay_factor = 0.5
    selection_metric = "loss"  # validation metric that picks the best model: "loss" or "weighted_auc"
    detection_threshold = "validation_eer"  # when a class counts as present and is separated: a clip
    # probability, or "validation_eer": per class, the equal-error point on the validation split
    mask_exponent = 1.0  # separation uses mask ** mask_exponent (> 1 sharpens soft masks: less interference)

    # ---- output, tracking and resuming (both methods)
    model_base_dir = "checkpoints"  # a run's checkpoints go to <model_base_dir>/<run name>
    log_dir = "logs"  # TensorBoard events go to <log_dir>/<run name>
    run_dir = "runs"  # Sacred file observer folder; None for none
    mongo_url = None  # e.g. "mongodb://127.0.0.1:27017/sacred" to record runs in MongoDB as well
    mongo_fallback_to_files = False  # an unreachable mongo_url or -m server: warn and keep the file observer, not fail
    summary_every = 10  # steps between TensorBoard scalar summaries
    save_best_artifact = True  # attach the best checkpoint to the Sacred run
    resume = None  # a run's checkpoint folder to continue from


for _path in sorted(os.listdir(CONFIG_DIR)):
    if _path.endswith(".json"):
        ex.add_named_config(_path[:-len(".json")], os.path.join(CONFIG_DIR, _path))


def check_before_run(config: dict, command: str) -> None:
    """Everything that can be checked before Sacred opens a run, so that a mistyped setting
    leaves no failed run behind in runs/ or MongoDB."""
    from Datasets.atomic import check_folder_creatable

    if command != "main":
        return
    check_config(config)
    for key in ("model_base_dir", "log_dir", "cache_dir", "run_dir"):
        if config[key]:
            check_folder_creatable(config[key], key)
    if config["resume"]:
        check_resumable(config["resume"], config)


tracking.observers.install(ex, commands=("main",), check_config=check_before_run)


def check_config(config: dict) -> None:
    """Rejects settings that cannot work, before any data is touched."""
    from Datasets.conversions import check_source_names
    from Datasets.partitions import SPLITS
    from Models.registry import architecture
    from Models.solver import PHASES

    if config["method"] not in METHODS:
        raise ValueError(f"Config key `method` must be one of {METHODS}, got {config['method']!r}.")
    for key in ("alpha", "beta", "lam", "init_sup_sep_lr", "init_unsup_sep_lr", "init_disc_lr", "learning_rate",
                "sparsity_weight", "lr_decay_factor", "gwrp_decay"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"Config key `{key}` must be a non-negative number, got {value!r}.")
    for key in ("batch_size", "num_disc", "epoch_it", "max_epochs", "patience", "num_layers", "num_frames",
                "base_filters", "summary_every", "num_workers", "num_mels", "lr_decay_epochs"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Config key `{key}` must be a positive integer, got {value!r}.")
    if config["method"] == "adversarial":
        check_source_names(config["source_names"])
        architecture(config["architecture"])  # an unknown name is refused with the registered ones
        if config["architecture"] == "unet":
            check_unet_config(config)
    unknown_phases = set(config["phases"]) - set(PHASES)
    if unknown_phases or not config["phases"]:
        raise ValueError(f"Config key `phases` must list some of {PHASES}, got {config['phases']!r}.")
    if config["semi_supervised_init"] not in ("scratch", "supervised"):
        raise ValueError("Config key `semi_supervised_init` must be 'scratch' or 'supervised'.")
    if config["split"] not in SPLITS:
        raise ValueError(f"Config key `split` must be one of {SPLITS}, got {config['split']!r}.")
    if config["method"] == "weak_label":
        check_weak_label_config(config)


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


def check_weak_label_config(config: dict) -> None:
    from Datasets.weak_label import RECIPES
    from Models.pooling import CLASSIFIERS
    from Models.weak_label_solver import SELECTION_METRICS

    choices = {"weak_label_recipe": (*RECIPES, "folder"), "front_end": ("logmel", "pcen", "trainable_pcen"),
               "mask_setting": ("thesis", "kong"), "mask_activation": ("sigmoid", "softmax"),
               "classifier": CLASSIFIERS, "selection_metric": tuple(SELECTION_METRICS)}
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise ValueError(f"Config key `{key}` must be one of {tuple(allowed)}, got {config[key]!r}.")
    if isinstance(config["mask_exponent"], bool) or not isinstance(config["mask_exponent"], (int, float)) \
            or not config["mask_exponent"] > 0:
        raise ValueError(f"Config key `mask_exponent` must be a positive number, got {config['mask_exponent']!r}.")
    for key in ("sparsity_weight", "gwrp_decay"):
        if not 0 <= config[key] <= 1:
            raise ValueError(f"Config key `{key}` must lie in [0, 1], got {config[key]!r}.")
    threshold = config["detection_threshold"]
    if threshold != "validation_eer" and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                          or not 0 <= threshold <= 1):
        raise ValueError(f"Config key `detection_threshold` must be a probability or 'validation_eer', "
                         f"got {threshold!r}.")
    if config["weak_label_recipe"] not in ("demo",) and not config["data_root"]:
        raise ValueError(f"weak_label_recipe={config['weak_label_recipe']!r} needs `data_root`: the folder of its "
                         "source data (or, for 'folder', the prepared folder with labels.csv and classes.txt).")
    if config["data_root"] and not os.path.isdir(config["data_root"]):
        raise FileNotFoundError(f"Config key `data_root`: '{config['data_root']}' is not a folder.")


def check_resumable(run_folder: str, config: dict) -> None:
    saved_config = os.path.join(run_folder, "config.json")
    if not os.path.isfile(saved_config):
        raise FileNotFoundError(f"`resume={run_folder}` is not a run's checkpoint folder: {saved_config} is "
                                "missing. Pass a folder under model_base_dir written by an earlier run.")
    with open(saved_config) as handle:
        saved = json.load(handle)
    keys = ("method", *ARCHITECTURE_KEYS[config["method"]])
    different = [f"{key}: {saved.get(key)!r} there, {config[key]!r} here" for key in keys
                 if saved.get(key) != config[key]]
    if different:
        raise ValueError(f"Cannot resume {run_folder}: its config differs in {'; '.join(different)}. "
                         "Resume with the same settings, or start a new run.")


def _save_config(config: dict, checkpoint_dir: str) -> None:
    os.makedirs(checkpoint_dir, exist_ok=True)
    with open(os.path.join(checkpoint_dir, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)


def train_adversarial(config, _run, _log, seed, run_name, checkpoint_dir):
    import numpy as np
    import tensorflow as tf

    from Datasets import load_dataset_for
    from Datasets.excerpts import PairedExcerpts, SpectrogramCache, UnpairedExcerpts
    from Datasets.features import SpectrogramSettings
    from Datasets.audio import read
    from Models.adversarial import AdversarialSeparator
    from Models.checkpoint import separator_description
    from Models.registry import SeparatorSpec
    from Models.separation import Separator
    from Models.solver import AudioExample, Solver, ValidationSong

    partitions = load_dataset_for(config)
    _log.info("Partitions:\n%s", partitions.summary())
    unpaired_sources = partitions.train_unsup
    if "semi_supervised" in config["phases"] and not (
            unpaired_sources.mixtures and all(unpaired_sources.sources.values())):
        counts = " / ".join(f"{len(samples)} {name}" for name, samples in unpaired_sources.sources.items())
        raise ValueError(f"The semi-supervised phase needs unpaired mixtures and recordings of every source, but "
                         f"train_unsup has {len(unpaired_sources.mixtures)} mixtures / {counts}. Add data sets "
                         "without databaseSplit tags, or set phases=['supervised'].")

    tf.keras.utils.set_random_seed(seed)
    settings = SpectrogramSettings(config["expected_sr"], config["num_fft"], config["num_hop"])
    spec = SeparatorSpec.from_config(config, settings.num_bins)
    model = AdversarialSeparator(
        spec, num_frames=config["num_frames"], critic_base_filters=config["critic_base_filters"],
        critic_max_filters=config["critic_max_filters"], critic_dense_units=config["critic_dense_units"],
        supervised_lr=config["init_sup_sep_lr"], semi_supervised_lr=config["init_unsup_sep_lr"],
        critic_lr=config["init_disc_lr"], alpha=config["alpha"], beta=config["beta"], lam=config["lam"],
        num_disc=config["num_disc"], seed=seed, jit_compile=config["jit_compile"],
        mixed_precision=config["mixed_precision"])
    cache = SpectrogramCache(os.path.join(config["cache_dir"], "spectrograms"), settings)
    tracks = partitions.train_sup + partitions.valid + partitions.test
    cache.prepare([s for t in tracks for s in (t.mixture, *t.sources.values())] + unpaired_sources.mixtures
                  + [s for samples in unpaired_sources.sources.values() for s in samples], config["num_workers"])
    paired = PairedExcerpts([(t.mixture, *t.sources.values()) for t in partitions.train_sup], model.shapes,
                            config["batch_size"], cache, seed)
    unpaired = None
    if "semi_supervised" in config["phases"]:
        unpaired = UnpairedExcerpts(unpaired_sources.mixtures, unpaired_sources.sources, model.shapes,
                                    config["batch_size"], cache, seed + 1)

    def songs(partition):
        return [ValidationSong(t.name, cache.load(t.mixture), np.stack([cache.load(s) for s in t.sources.values()]))
                for t in partition]

    def log_epoch(phase, epoch, metrics):
        for name, value in metrics.items():
            _run.log_scalar(f"{phase}.{name}", float(value), epoch)

    _save_config(config, checkpoint_dir)
    tensorboard_dir = os.path.join(config["log_dir"], run_name)
    example = None
    if partitions.valid:  # ten seconds of the first validation song, shown in TensorBoard
        track, num_samples = partitions.valid[0], 10 * settings.sample_rate
        frames = num_samples // settings.hop + 1
        example = AudioExample(
            read(track.mixture, num_frames=10 * track.mixture.sample_rate, sample_rate=settings.sample_rate,
                 mono=True)[:num_samples],
            np.stack([cache.load(source)[:, :frames] for source in track.sources.values()]))
    separation = Separator(model.separator, settings, spec.geometry(), model.source_names)
    solver = Solver(model, separation, separator_description(spec, settings, config), paired, unpaired,
                    songs(partitions.valid), checkpoint_dir, tensorboard_dir,
                    config["epoch_it"], config["max_epochs"], config["patience"], config["summary_every"],
                    config["validation_window_frames"], config["semi_supervised_init"], example,
                    on_epoch_end=log_epoch)
    _run.info.update({"checkpoint_dir": os.path.abspath(checkpoint_dir),
                      "tensorboard_dir": os.path.abspath(tensorboard_dir)})
    if config["resume"]:
        solver.restore(solver.checkpoint_path("last"))
        _log.info("Resuming %s at %s epoch %d", checkpoint_dir, solver.progress.stage, solver.progress.epoch)

    from Models.scoring import evaluate_tracks, median_text, summarise
    from Models.checkpoint import load_separator

    test_songs = songs(partitions.test)
    results = {}
    for phase in config["phases"]:
        solver.train((phase,))
        # Score the saved best model of the phase, in a separate network: a resumed run may still
        # be training a later phase in `model`.
        best = solver.checkpoint_path(f"best_{phase}")
        separator = load_separator(best)
        scores = evaluate_tracks(separator, partitions.test, config["validation_window_frames"])
        results[phase] = {"validation_loss": float(solver.best_validation_loss(phase)),
                          "test_loss": float(solver.supervised_loss(test_songs, separator)),
                          "test": summarise(scores, model.source_names), "test_tracks": scores,
                          "checkpoint": os.path.abspath(best)}
        medians = "; ".join(f"{name} {median_text(summary)}, {median_text(summary, 'NSDR')}"
                            for name, summary in results[phase]["test"].items())
        _log.info("%s: best validation loss %.5f, test loss %.5f; test medians: %s", phase,
                  results[phase]["validation_loss"], results[phase]["test_loss"], medians)
        if config["save_best_artifact"]:
            _run.add_artifact(best, f"best_{phase}.pkl")
    _run.info["results"] = results
    return {phase: {"test_loss": result["test_loss"],
                    **{f"{name}_{key}": value for name, summary in result["test"].items()
                       for key, value in summary.items() if key.startswith(("median_", "count_")) or key == "failed"}}
            for phase, result in results.items()}


def weak_label_model_spec(config: dict, num_classes: int, num_frames: int) -> dict:
    """The arguments of `build_weak_label_model`; saved in every checkpoint to rebuild the model."""
    classifier_options = dict(config["classifier_options"])
    if config["classifier"] == "gwrp":
        classifier_options.setdefault("decay", config["gwrp_decay"])
    if config["classifier"] == "dense":
        classifier_options.setdefault("num_frames", num_frames)
    pcen_options = {"logmel": None, "pcen": {"trainable": False}, "trainable_pcen": {"trainable": True}}
    return {"num_mels": config["num_mels"], "num_classes": num_classes,
            "mask_options": {"setting": config["mask_setting"], "last_activation": config["mask_activation"],
                             "channels": config["mask_channels"], "kernel_size": config["mask_kernel_size"],
                             "dropout": config["mask_dropout"], "num_blocks": config["mask_blocks"]},
            "classifier_kind": config["classifier"], "classifier_options": classifier_options,
            "pcen_options": pcen_options[config["front_end"]]}


def prepare_weak_label_data(config: dict) -> str:
    """The folder of clips, labels.csv and classes.txt the config names, generated if need be."""
    from Datasets.weak_label import cache_folder, prepare

    if config["weak_label_recipe"] == "folder":
        return config["data_root"]
    arguments = dict(recipe=config["weak_label_recipe"], data_root=config["data_root"],
                     **{"sample_rate": config["expected_sr"], **config["recipe_options"]})
    return prepare(out_dir=cache_folder(config["cache_dir"], **arguments), **arguments)


def train_weak_label(config, _run, _log, seed, run_name, checkpoint_dir):
    import collections
    from dataclasses import asdict

    import numpy as np
    import tensorflow as tf

    from Datasets.features import MelSettings, log_mel, LOG_MEL_FLOOR
    from Datasets.mel_cache import clip_mels, fit_frames
    from Datasets.weak_label import load_clips
    from Models.checkpoint import load_event_separator
    from Models.event_separation import is_event_result, mel_power, score_clips
    from Models.weak_label_model import Standardisation, build_weak_label_model
    from Models.weak_label_solver import JointModel, LabelledFeatures, WeakLabelSolver

    clips = load_clips(prepare_weak_label_data(config))
    splits = {name: clips.split(name) for name in ("train", "valid", "test")}
    empty = [name for name, members in splits.items() if not members]
    if empty:
        raise ValueError(f"{os.path.join(clips.folder, 'labels.csv')} has no clips in split(s) {empty}: every "
                         "split (train, valid, test) needs clips.")
    _log.info("Weak-label data in %s: %s; classes %s", clips.folder,
              ", ".join(f"{len(members)} {name}" for name, members in splits.items()), ", ".join(clips.classes))
    settings = MelSettings(config["expected_sr"], config["num_fft"], config["num_hop"], config["num_mels"],
                           config["mel_fmin"], config["mel_fmax"], config["stft_window"])
    mels = {name: clip_mels([clip.mixture_path for clip in members], settings,
                            os.path.join(config["cache_dir"], "mels"), config["num_workers"],
                            mel_power(config["front_end"]))
            for name, members in splits.items()}
    # Clips of a recipe all have one length; a user's clips are cropped or padded to the most common.
    num_frames = collections.Counter(len(mel) for mel in mels["train"]).most_common(1)[0][0]
    if config["front_end"] == "logmel":
        inputs = {name: fit_frames([log_mel(mel) for mel in values], num_frames, float(np.log(LOG_MEL_FLOOR)))
                  for name, values in mels.items()}
        standardisation = Standardisation.fit(inputs["train"], config["standardise_per_band"])
        inputs = {name: standardisation(values) for name, values in inputs.items()}
    else:  # PCEN normalises the mel energies inside the model
        inputs = {name: fit_frames(values, num_frames, 0.0) for name, values in mels.items()}
        standardisation = Standardisation(np.zeros(config["num_mels"], np.float32),
                                          np.ones(config["num_mels"], np.float32))
    labelled = {name: LabelledFeatures(inputs[name], np.stack([clip.labels for clip in splits[name]]))
                for name in splits}

    tf.keras.utils.set_random_seed(seed)
    model_spec = weak_label_model_spec(config, len(clips.classes), num_frames)
    steps_per_epoch = -(-len(splits["train"]) // config["batch_size"])
    joint = JointModel(build_weak_label_model(**model_spec), config["learning_rate"],
                       config["lr_decay_epochs"] * steps_per_epoch, config["lr_decay_factor"],
                       config["sparsity_weight"], config["jit_compile"])
    _save_config(config, checkpoint_dir)
    tensorboard_dir = os.path.join(config["log_dir"], run_name)
    data = {"data_folder": os.path.abspath(clips.folder), "mel_settings": asdict(settings),
            "standardisation": {"mean": standardisation.mean, "std": standardisation.std},
            "front_end": config["front_end"], "detection_threshold": config["detection_threshold"],
            "mask_exponent": config["mask_exponent"]}

    def log_epoch(stage, epoch, metrics):
        for name, value in metrics.items():
            _run.log_scalar(f"valid.{name}", float(value), epoch)

    solver = WeakLabelSolver(joint, labelled["train"], labelled["valid"], clips.classes, checkpoint_dir,
                             tensorboard_dir, model_spec, data, config["batch_size"], config["max_epochs"],
                             config["patience"], config["selection_metric"], config["summary_every"], seed,
                             on_epoch_end=log_epoch)
    _run.info.update({"checkpoint_dir": os.path.abspath(checkpoint_dir),
                      "tensorboard_dir": os.path.abspath(tensorboard_dir), "data_folder": data["data_folder"]})
    if config["resume"]:
        solver.restore(solver.checkpoint_path("last"))
        _log.info("Resuming %s at epoch %d", checkpoint_dir, solver.progress.epoch)
    solver.train(("train",))

    best = solver.checkpoint_path("best")
    separator = load_event_separator(best)
    events, test_tagging, summary = score_clips(separator, splits["test"])
    _run.info["results"] = {"test_tagging": test_tagging, "test_events": summary, "test_clips": events,
                            "checkpoint": os.path.abspath(best)}
    overall = summary["all"]
    _log.info("Test: weighted AUC %.4f, mAP %.4f, EER %.4f; event SDR median %.2f dB (mixture %.2f, ideal binary "
              "mask %.2f), %d of %d events missed", test_tagging.get("weighted_auc", np.nan),
              test_tagging.get("mean_average_precision", np.nan), test_tagging.get("mean_eer", np.nan),
              overall.get("separated_median_SDR", np.nan), overall.get("mixture_median_SDR", np.nan),
              overall.get("oracle_ibm_median_SDR", np.nan), overall["missed"], overall["events"])
    if config["save_best_artifact"]:
        _run.add_artifact(best, "best.pkl")
    return {"weak_label": {**{f"test_{key}": test_tagging[key] for key in
                              ("weighted_auc", "mean_average_precision", "mean_eer") if key in test_tagging},
                           **{f"event_{key}": value for key, value in overall.items() if is_event_result(key)}}}


@ex.main
def main(_config, _run, _log, seed, dataset_roots, recipe_options, classifier_options):
    # The dict-valued keys are named as arguments so that Sacred accepts entries added to them
    # (`with dataset_roots.DSD100=...`); everything is read from `_config`. The config was
    # checked by `check_before_run`.
    config = dict(_config)
    run_name = config["resume"] and os.path.basename(os.path.normpath(config["resume"])) or \
        f"{time.strftime('%Y%m%d-%H%M%S')}_{_run._id or 'unobserved'}"
    checkpoint_dir = config["resume"] or os.path.join(config["model_base_dir"], run_name)
    train = train_weak_label if config["method"] == "weak_label" else train_adversarial
    return train(config, _run, _log, seed, run_name, checkpoint_dir)


def resume_command(argv: list[str], run_folder: str) -> str:
    """The command line that continues an interrupted run: this one, with resume=<run folder>."""
    arguments = [argument for argument in argv[1:] if not argument.startswith("resume=")]
    if "with" not in arguments:
        arguments.append("with")
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    return shlex.join([python, argv[0], *arguments, f"resume={run_folder}"])


if __name__ == "__main__":
    try:
        ex.run_commandline()
    except KeyboardInterrupt as interruption:  # Models.training_loop.TrainingInterrupted names its checkpoint
        checkpoint = getattr(interruption, "checkpoint", None)
        print(f"\nInterrupted; saved {checkpoint}. Continue with: "
              f"{resume_command(sys.argv, os.path.dirname(checkpoint))}" if checkpoint else
              "\nInterrupted before the first checkpoint: nothing to resume.", file=sys.stderr)
        sys.exit(130)
