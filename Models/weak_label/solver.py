"""Training of the weak-label joint separation-classification model (Kong et al. 2018) on the
shared loop (Models/training_loop.py).

The model (Models/weak_label/model.py) maps standardised log-mel frames to one mask per class
and pools each mask into a clip probability; binary cross-entropy on the clip labels trains
both, optionally with a sparsity term that pushes the masks of absent classes to zero.
An epoch is one shuffled pass over the training clips; after each, the validation split
(never the test split) gives the tagging metrics and decides, through `selection_metric`,
whether the model improved. `patience` epochs without improvement end training; the best
weights are kept. Checkpoints are written atomically after every epoch and on Ctrl-C and hold
what is needed to continue bit for bit, plus what separation needs later: the model's
architecture, the class names, the feature settings and the standardisation statistics.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from Models.distribution import replicated_step, split_among_replicas
from Models.training_loop import TrainingLoop, Validation, learning_rate, write_scalars
from Models.weak_label.augmentation import Augmentation
from Models.weak_label.tagging import equal_error_thresholds, tagging_metrics
from Models.weak_label.model import WeakLabelPredictor, build_weak_label_model, split_outputs

SELECTION_METRICS = {"loss": -1.0, "weighted_auc": 1.0}  # metric -> sign of "better"


class JointModel:
    """The model with its optimiser and compiled training step, built in the scope of `strategy`
    (tf.distribute; by default the one device there is) from `model_spec`, the arguments of
    `build_weak_label_model`.

    Loss: `(1 - w) BCE + w * mean |mask|` over absent (clip, class) pairs, w = sparsity_weight
    (0: plain BCE; Kong used 0.3), or with `sparsity_masks="all"` over every pair: the masks of
    present classes are then pushed to zero wherever the pooled probability does not need them.
    The learning rate halves (decay_factor) every `decay_steps` steps, the thesis's step decay.
    With `ema_momentum` > 0 the optimiser keeps an exponential moving average of the trainable
    weights over the steps (Keras's `use_ema`), which `averaged_weights` puts in the model.
    Under a strategy each replica trains on its slice of the global batch, and every term is its
    share of the global batch's value."""

    def __init__(self, model_spec: dict, learning_rate: float = 1e-3, decay_steps: int | None = None,
                 decay_factor: float = 0.5, sparsity_weight: float = 0.0, jit_compile: bool = True,
                 strategy: tf.distribute.Strategy | None = None, sparsity_masks: str = "absent",
                 ema_momentum: float = 0.0):
        import keras

        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.model = build_weak_label_model(**model_spec)
            schedule = learning_rate if not decay_steps else keras.optimizers.schedules.ExponentialDecay(
                learning_rate, decay_steps=decay_steps, decay_rate=decay_factor, staircase=True)
            self.optimizer = keras.optimizers.Adam(schedule, use_ema=ema_momentum > 0,
                                                   ema_momentum=ema_momentum or 0.99)
            self.optimizer.build(self.model.trainable_variables)
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_on_present = {"absent": 0.0, "all": 1.0}[sparsity_masks]
        self._step = replicated_step(self.strategy, self._replica_step, jit_compile)
        self.predict = WeakLabelPredictor(self.model).predict

    @contextlib.contextmanager
    def averaged_weights(self):
        """Inside the block the model's trainable weights are their moving average (without one,
        the block changes nothing); afterwards training continues from its own weights."""
        if not self.optimizer.use_ema:
            yield
            return
        variables = self.model.trainable_variables
        training = [variable.numpy() for variable in variables]
        self.optimizer.finalize_variable_values(variables)
        try:
            yield
        finally:
            for variable, value in zip(variables, training):
                variable.assign(value)

    def losses(self, labels, masks, probabilities, global_batch: int | None = None, covered_total=None) -> dict:
        """The loss terms of a batch, or, given the global batch size and its number of (clip,
        class) pairs the sparsity term covers, this batch's share of the global batch's terms."""
        global_batch = global_batch or tf.shape(labels)[0]
        covered = self._sparsity_pairs(labels)
        covered_total = tf.reduce_sum(covered) if covered_total is None else covered_total
        bce = tf.nn.compute_average_loss(
            tf.reduce_mean(tf.keras.losses.binary_crossentropy(labels[..., None], probabilities[..., None]), axis=1),
            global_batch_size=global_batch)
        mask_means = tf.reduce_mean(tf.abs(masks), axis=(1, 2))  # (batch, classes)
        sparsity = tf.reduce_sum(mask_means * covered) / tf.maximum(covered_total, 1.0)
        loss = (1.0 - self.sparsity_weight) * bce + self.sparsity_weight * sparsity
        return {"loss": loss, "bce": bce, "sparsity": sparsity}

    def _sparsity_pairs(self, labels):
        """1 for the (clip, class) pairs the sparsity term covers, else 0."""
        return 1.0 - labels * (1.0 - self.sparsity_on_present)

    def _replica_step(self, batch, global_batch: int):
        features, labels = batch
        # the sparsity term normalises by the pairs it covers in the whole global batch
        covered_total = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.reduce_sum(self._sparsity_pairs(labels)))
        with tf.GradientTape() as tape:
            masks, probabilities = split_outputs(self.model(features, training=True))
            losses = self.losses(labels, masks, probabilities, global_batch, covered_total)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(losses["loss"], variables), variables))
        return losses

    def train_step(self, features: np.ndarray, labels: np.ndarray) -> dict:
        """One step on a global batch, each replica on its slice; the global batch's loss terms."""
        return self._step(*split_among_replicas(self.strategy, (features, labels)))

@dataclass
class LabelledFeatures:
    features: np.ndarray  # (clips, frames, mels), standardised
    labels: np.ndarray  # (clips, classes)


class WeakLabelSolver(TrainingLoop):
    """The shared loop (Models/training_loop.py) with one stage, "train"; its best model is `best`."""

    def __init__(self, joint: JointModel, train: LabelledFeatures, valid: LabelledFeatures, classes: list[str],
                 checkpoint_dir: str, log_dir: str, model_spec: dict, data: dict, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, selection_metric: str = "loss", summary_every: int = 10,
                 seed: int = 0, on_epoch_end=None, chief: bool = True, augmentation: Augmentation | None = None,
                 thresholds_of=equal_error_thresholds):
        if selection_metric not in SELECTION_METRICS:
            raise ValueError(f"Config key `selection_metric` must be one of {sorted(SELECTION_METRICS)}, "
                             f"got {selection_metric!r}.")
        super().__init__(checkpoint_dir, log_dir, max_epochs, patience, summary_every, on_epoch_end, chief)
        self.joint, self.train_set, self.valid_set, self.classes = joint, train, valid, list(classes)
        self.model_spec, self.data = model_spec, data
        self.batch_size, self.selection_metric = batch_size, selection_metric
        # per-class detection thresholds of the model saved: thresholds_of(validation labels, probabilities)
        self.thresholds_of = thresholds_of
        self.detection_thresholds = np.full(len(self.classes), 0.5)
        self.seed, self.augmentation = seed, augmentation or Augmentation()
        self.shuffle = np.random.default_rng(seed)
        self.epoch_shuffle_state = self.shuffle.bit_generator.state
        self.order = np.arange(len(train.labels))
        self._validation_masks = self._validation_probabilities = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set.labels) / self.batch_size)

    def best_name(self, stage: str) -> str:
        return "best"

    # ---- state -------------------------------------------------------------------------
    def model_state(self) -> dict:
        """Everything to resume, and (in every checkpoint, best ones too) everything to separate:
        "weights" are those validated and separated with (the moving average where there is one),
        "training_weights" those training continues from."""
        with self.joint.averaged_weights():
            weights = self.joint.model.get_weights()
        return {"method": "weak_label", "model_spec": self.model_spec, "classes": self.classes, **self.data,
                "weights": weights, "training_weights": self.joint.model.get_weights(),
                "dropout_states": self._dropout_states(),
                "optimizer": [variable.numpy() for variable in self.joint.optimizer.variables],
                "epoch_shuffle_state": self.epoch_shuffle_state, "detection_thresholds": self.detection_thresholds}

    def _dropout_state_variables(self) -> list:
        """Dropout's random generators: not weights, but a resumed run must draw the same masks."""
        return [variable for variable in self.joint.model.variables if "seed_generator" in variable.path]

    def _dropout_states(self) -> list[np.ndarray]:
        return [variable.numpy() for variable in self._dropout_state_variables()]

    def load_model_state(self, state: dict) -> None:
        self.joint.model.set_weights(state.get("training_weights", state["weights"]))
        for variable, value in zip(self._dropout_state_variables(), state["dropout_states"]):
            variable.assign(value)
        self._load_optimizer_state(state)
        self.epoch_shuffle_state = state["epoch_shuffle_state"]
        self.detection_thresholds = state["detection_thresholds"]

    def load_best_weights(self, state: dict) -> None:
        self.joint.model.set_weights(state["weights"])
        # and the best state's optimiser, whose moving average is then the best weights: every later
        # checkpoint of the finished run describes the best model, not the last epoch's average
        self._load_optimizer_state(state)

    def _load_optimizer_state(self, state: dict) -> None:
        for variable, value in zip(self.joint.optimizer.variables, state["optimizer"]):
            variable.assign(value)

    # ---- training ----------------------------------------------------------------------
    def start_epoch(self) -> None:
        # The order of an epoch comes from the generator state at its start, so a resumed epoch
        # replays the same batches and skips those already done.
        self.shuffle.bit_generator.state = self.epoch_shuffle_state
        self.order = self.shuffle.permutation(len(self.train_set.labels))

    def end_epoch(self) -> None:
        self.epoch_shuffle_state = self.shuffle.bit_generator.state

    def train_step(self, stage: str) -> dict[str, float]:
        step = self.progress.step_in_epoch
        clips = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        # An epoch's last batch may not divide among the replicas: it is cut to a multiple.
        replicas = self.joint.strategy.num_replicas_in_sync
        if len(clips) < replicas:
            raise ValueError(f"A batch of {len(clips)} clips cannot feed {replicas} replicas.")
        return self._train_batch(clips[:len(clips) - len(clips) % replicas])

    def _train_batch(self, clips: np.ndarray) -> dict[str, float]:
        features, labels = self.augmentation(self.train_set.features[clips], self.train_set.labels[clips],
                                             (self.seed, self.progress.epoch, self.progress.step_in_epoch))
        losses = self.joint.train_step(features, labels)
        return {name: float(value) for name, value in losses.items()}

    # ---- validation --------------------------------------------------------------------
    def evaluate(self, data: LabelledFeatures) -> tuple[dict, np.ndarray, np.ndarray]:
        """Loss terms and tagging metrics on `data`, its masks (for the images) and probabilities."""
        masks, probabilities = self.joint.predict(data.features, self.batch_size)
        losses = {name: float(value) for name, value in
                  self.joint.losses(tf.constant(data.labels), tf.constant(masks), tf.constant(probabilities)).items()}
        return {**losses, "tagging": tagging_metrics(data.labels, probabilities, self.classes)}, masks, probabilities

    def validate(self, stage: str) -> Validation:
        with self.joint.averaged_weights():
            metrics, self._validation_masks, self._validation_probabilities = self.evaluate(self.valid_set)
        value = metrics["loss"] if self.selection_metric == "loss" else metrics["tagging"].get("weighted_auc", math.nan)
        scalars = _flat_validation_scalars(metrics)
        return Validation(SELECTION_METRICS[self.selection_metric] * value, scalars,
                          f"validation loss {metrics['loss']:.4f}, weighted AUC "
                          f"{scalars.get('weighted_auc', math.nan):.4f}, mAP "
                          f"{scalars.get('mean_average_precision', math.nan):.4f}")

    def improved(self, stage: str, validation: Validation) -> None:
        self.detection_thresholds = self.thresholds_of(self.valid_set.labels, self._validation_probabilities)

    def log_epoch(self, stage: str, validation: Validation) -> None:
        """Validation scalars, the learning rate, and the first validation clip's input and masks."""
        write_scalars(self.writer, {**{f"valid/{name}": value for name, value in validation.scalars.items()},
                                    "learning_rate": learning_rate(self.joint.optimizer)}, self.progress.global_step)
        with self.writer.as_default(step=self.progress.global_step):
            features = self.valid_set.features[0]
            span = max(float(features.max() - features.min()), 1e-6)
            # mel bands upwards, time to the right, as on a spectrogram plot
            tf.summary.image("valid/features", ((features.T[::-1] - features.min()) / span)[None, :, :, None])
            for index, name in enumerate(self.classes):
                tf.summary.image(f"valid/mask/{name}", self._validation_masks[0, :, :, index].T[::-1][None, :, :, None])


def _flat_validation_scalars(metrics: dict) -> dict[str, float]:
    tagging = metrics["tagging"]
    scalars = {name: metrics[name] for name in ("loss", "bce", "sparsity")}
    scalars.update({name: tagging[name] for name in ("weighted_auc", "mean_average_precision", "mean_eer")
                    if name in tagging})
    for name, values in tagging["per_class"].items():
        scalars.update({f"{key}/{name}": value for key, value in values.items() if key in ("auc", "eer")})
    return scalars
