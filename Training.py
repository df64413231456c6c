"""The Sacred training experiment of both methods: every config key, the named configs in
configs/, the checks before a run, and the dispatch to the method's package.

    python Training.py print_config                  # every knob, with its default
    python Training.py with demo alpha=0.1           # built-in demo data, small shapes; any key can be set
    python Training.py with paper dataset_root=/data # the published settings on your copy of the data
    python Training.py with resume=checkpoints/<run> # continue an interrupted run

method="adversarial" (Stoller et al. 2018, Models/adversarial/): a separator, then one critic per
source. method="weak_label" (Kong et al. 2018, Models/weak_label/): masks from clip labels only.
"""
from __future__ import annotations

import importlib
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

import tracking.observers  # noqa: E402
from Models.distribution import is_chief  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Each method's package: RESUME_KEYS, check_config(config), train(config, run, log, seed, run_name, checkpoint_dir).
METHODS = {"adversarial": "Models.adversarial.training", "weak_label": "Models.weak_label.training"}

SETTINGS.CAPTURE_MODE = "sys"  # capturing file descriptors breaks under pytest and some terminals
ex = Experiment("separation_training")
ex.captured_out_filter = apply_backspaces_and_linefeeds  # keep progress bars readable in cout.txt


@ex.config
def config():
    method = "adversarial"  # "adversarial" (Stoller et al. 2018) or "weak_label" (Kong et al. 2018)

    # ---- data of the adversarial method
    use_demo_data = True  # generate the built-in demo data set (Datasets/demo.py) and train on it
    demo_options = {}  # demo generator settings, e.g. {"training_tracks": 24} (Datasets/demo.py, DemoSettings)
    paired_tracks = None  # keep only the first N paired training songs paired; the others become unpaired
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
    source_names = ["accompaniment", "voice"]  # from the stems vocals (voice), drums, bass, other, accompaniment
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
    validation_window_frames = None  # output frames per separator window on whole songs; None: the engine's choice
    postfilter = "none"  # of the test scores: "none" (the paper's), "softmask" or "wiener" (Models/postfilter.py)
    softmask_power = 1.0  # postfilter=softmask: each source gets |est|^p / sum_k |est_k|^p of the mixture
    wiener_iterations = 1  # postfilter=wiener: EM rounds over the channels

    # ---- the weak-label method (Models/weak_label/model.py, Datasets/weak_label)
    weak_label_recipe = "demo"  # "demo", "generic", "tut", "dcase2013", or "folder" (data_root holds labels.csv)
    data_root = None  # the recipe's source data (generic: events/<class>/ and backgrounds/), or a prepared folder
    recipe_options = {}  # recipe parameters (Datasets/weak_label/options.py), e.g. {"ebr_db": [-6, 6], "seed": 0}
    stft_window = "hann"  # STFT window of the weak-label features ("hamming" in the papers)
    num_mels = 64  # mel bands of the features and masks
    mel_fmin = 0.0  # Hz
    mel_fmax = 8000.0  # Hz; None for half the sample rate
    front_end = "logmel"  # "logmel" (standardised), "pcen", "trainable_pcen", "relative_db" (dB above band medians),
    #                       "pcen_relative_db" (both, as two input maps of the mask model)
    standardise_per_band = True  # log-mel mean and deviation per band (True) or over all bands
    mask_setting = "thesis"  # "thesis" (3 blocks of 5x5 convs) or "kong" (4 double 3x3 blocks)
    mask_channels = None  # override the setting's feature maps per conv layer
    mask_kernel_size = None  # override the setting's kernel size
    mask_dropout = None  # override the setting's dropout rate
    mask_blocks = None  # override the setting's number of blocks
    mask_frequency_dilations = None  # dilation over mel bands per hidden block, e.g. [1, 3, 9] (null: 1 each)
    mask_activation = "sigmoid"  # "sigmoid" per class, or "softmax" over the classes plus background
    synchronized_batch_norm = True  # batch statistics over all replicas' clips, as on one device
    # mask -> clip probability: gwrp, gwrp_affine (GWRP with a learnt scale and offset of its logit per
    # class), linear_softmax, max, average, dense, depthwise_cnn or gru
    classifier = "gwrp"
    gwrp_decay = 0.999  # d of global weighted rank pooling, also of gwrp_affine (1: average pooling, 0: max)
    classifier_options = {}  # further options of the classifier (Models/weak_label/pooling.py)
    sparsity_weight = 0.0  # w in (1 - w) BCE + w mean|mask| over absent classes (Kong: 0.3)
    sparsity_masks = "absent"  # the masks the sparsity term covers: "absent" classes' (Kong) or "all"
    output_bias = "prior"  # "prior": the class bias starts where clip probabilities match the training
    #                       labels' class frequencies (Models/weak_label/prior_bias.py); "zero": the papers'
    augment_gain_db = 0.0  # training clips louder or quieter by up to this many dB (Models/weak_label/augmentation.py)
    augment_time_shift = 0.0  # seconds: training clips rolled along time by up to this
    augment_mix_probability = 0.0  # chance that a training clip is summed with another, labels joined
    learning_rate = 1e-3  # Adam
    ema_epochs = 0.0  # validation, the best model and separation use the weights' exponential moving average
    #                   over training steps with this time constant in epochs (0: the weights as trained)
    lr_decay_epochs = 50  # the learning rate is multiplied by lr_decay_factor every this many epochs
    lr_decay_factor = 0.5
    selection_metric = "loss"  # validation metric that picks the best model: "loss" or "weighted_auc"
    detection_threshold = "validation_eer"  # clip probability from which a class is present and separated
    # (one for all classes), or per class "validation_eer" (the equal-error point on the validation split) or
    # "validation_false_alarms" (halfway above the highest validation clip without the class that must stay
    # undetected for at most detection_false_alarm_rate of them to be: recall for a known share of false alarms)
    detection_false_alarm_rate = 0.1  # share of validation clips without a class that "validation_false_alarms" detects
    clip_statistics_weight = 0.0  # weight w of the clip statistics in the clip probabilities (0: masks alone)
    # logit p = (1 - w) logit p_masks + w logit p_statistics, p_statistics from the linear floor's model
    # (pooled log-mel statistics) fitted on the training clips after training; "validation": the best of
    # 0, 0.125, ..., 0.5 by the validation split's weighted AUC, "validation_per_class": each class's best by its
    # own validation AUC (Models/weak_label/clip_statistics.py)
    mask_exponent = 1.0  # separation uses mask ** mask_exponent (> 1 sharpens soft masks: less interference)
    mask_dilation = [1, 1]  # separation first takes each mask value's maximum over a window of [frames, mel
    #                         bands] around it (odd sizes; [1, 1]: none): rank-pooled masks light few bins
    background_gate_db = 0.0  # separation keeps ((dB above each band's median over the clip) / this)^2,
    #                           clipped to [0, 1], of every mask value: the background's bins drop out; 0: no gate

    # ---- devices and speed (both methods)
    distribution = "none"  # "none", "mirrored" (local GPUs or `devices`) or "multi_worker": Models/distribution.py
    devices = []  # for "mirrored": the devices of the replicas, e.g. ["/gpu:0", "/gpu:1"]
    collective_timeout = 300.0  # seconds a worker waits for the others before it stops with an error
    jit_compile = True  # XLA-compile the supervised step (and the weak-label step); False eases debugging
    jit_compile_semi_supervised = False  # XLA for the critic and separator steps: slower critics on the CPUs measured
    mixed_precision = False  # float16 compute with loss scaling: for GPUs with tensor cores only

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


def method_package(config: dict):
    """The package of the config's method (see METHODS)."""
    if config["method"] not in METHODS:
        raise ValueError(f"Config key `method` must be one of {tuple(METHODS)}, got {config['method']!r}.")
    return importlib.import_module(METHODS[config["method"]])


def check_before_run(config: dict, command: str) -> None:
    """All that can be checked before Sacred opens a run: a mistyped setting leaves no failed run."""
    from Datasets.atomic import check_folder_creatable
    from Models.checkpoint import check_resumable

    if command != "main":
        return
    method = method_package(config)
    method.check_config(config)
    for key in ("model_base_dir", "log_dir", "cache_dir", "run_dir"):
        if config[key]:
            check_folder_creatable(config[key], key)
    if config["resume"]:
        check_resumable(config["resume"], config, ("method", *method.RESUME_KEYS))


tracking.observers.install(ex, commands=("main",), check_config=check_before_run,
                           records=lambda config: is_chief(config["distribution"]))


@ex.main
def main(_config, _run, _log, seed, dataset_roots, demo_options, recipe_options, classifier_options,
         architecture_options):
    # The dict-valued keys are named so that Sacred accepts entries added to them (`with
    # dataset_roots.DSD100=...`); all is read from `_config`, checked by `check_before_run`.
    config = dict(_config)
    run_name = config["resume"] and os.path.basename(os.path.normpath(config["resume"])) or \
        f"{time.strftime('%Y%m%d-%H%M%S')}_{_run._id or 'unobserved'}"
    checkpoint_dir = config["resume"] or os.path.join(config["model_base_dir"], run_name)
    return method_package(config).train(config, _run, _log, seed, run_name, checkpoint_dir)


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
