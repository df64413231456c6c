"""Training loop of the weak-label joint separation-classification model (Kong et al. 2018).

The model (Models/weak_label_model.py) maps standardised log-mel frames to one mask per class
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

import logging
import math
import os
import pickle
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from Datasets.atomic import atomic_open
from Models.solver import check_finite, epoch_progress, write_scalars
from Models.tagging import equal_error_thresholds, tagging_metrics
from Models.weak_label_model import WeakLabelPredictor, split_outputs

log = logging.getLogger(__name__)

SELECTION_METRICS = {"loss": -1.0, "weighted_auc": 1.0}  # metric -> sign of "better"


class JointModel:
    """The model with its optimiser and compiled training step.

    Loss: `(1 - w) BCE + w * mean |mask|` over absent (clip, class) pairs, w = sparsity_weight
    (0: plain BCE; Kong used 0.3). The learning rate halves (decay_factor) every
    `decay_steps` steps, the thesis's step decay."""

    def __init__(self, model, learning_rate: float = 1e-3, decay_steps: int | None = None,
                 decay_factor: float = 0.5, sparsity_weight: float = 0.0, jit_compile: bool = True):
        import keras

        self.model = model
        schedule = learning_rate if not decay_steps else keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=decay_steps, decay_rate=decay_factor, staircase=True)
        self.optimizer = keras.optimizers.Adam(schedule)
        self.optimizer.build(model.trainable_variables)
        self.sparsity_weight = float(sparsity_weight)
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile, reduce_retracing=True)
        self.predict = WeakLabelPredictor(model).predict

    def losses(self, labels, masks, probabilities) -> dict:
        bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(labels[..., None], probabilities[..., None]))
        absent = 1.0 - labels
        mask_means = tf.reduce_mean(tf.abs(masks), axis=(1, 2))  # (batch, classes)
        sparsity = tf.reduce_sum(mask_means * absent) / tf.maximum(tf.reduce_sum(absent), 1.0)
        loss = (1.0 - self.sparsity_weight) * bce + self.sparsity_weight * sparsity
        return {"loss": loss, "bce": bce, "sparsity": sparsity}

    def _train_step(self, features, labels):
        with tf.GradientTape() as tape:
            masks, probabilities = split_outputs(self.model(features, training=True))
            losses = self.losses(labels, masks, probabilities)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(losses["loss"], variables), variables))
        return losses

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate.numpy() if hasattr(self.optimizer.learning_rate, "numpy")
                     else self.optimizer.learning_rate)


@dataclass
class Progress:
    epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf  # selection metric times its sign: higher is better
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    step_in_epoch: int = 0
    finished: bool = False


@dataclass
class LabelledFeatures:
    features: np.ndarray  # (clips, frames, mels), standardised
    labels: np.ndarray  # (clips, classes)


class WeakLabelSolver:
    def __init__(self, joint: JointModel, train: LabelledFeatures, valid: LabelledFeatures, classes: list[str],
                 checkpoint_dir: str, log_dir: str, model_spec: dict, data: dict, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, selection_metric: str = "loss", summary_every: int = 10,
                 seed: int = 0, on_epoch_end=None):
        if selection_metric not in SELECTION_METRICS:
            raise ValueError(f"Config key `selection_metric` must be one of {sorted(SELECTION_METRICS)}, "
                             f"got {selection_metric!r}.")
        self.joint, self.train_set, self.valid_set, self.classes = joint, train, valid, list(classes)
        self.checkpoint_dir, self.model_spec, self.data = checkpoint_dir, model_spec, data
        self.batch_size, self.max_epochs, self.patience = batch_size, max_epochs, patience
        self.selection_metric, self.summary_every = selection_metric, summary_every
        self.on_epoch_end = on_epoch_end or (lambda epoch, metrics: None)
        self.writer = tf.summary.create_file_writer(log_dir)
        self.progress = Progress()
        # per-class detection thresholds at the validation equal-error point of the model saved
        self.detection_thresholds = np.full(len(self.classes), 0.5, np.float32)
        self.shuffle = np.random.default_rng(seed)
        self.epoch_shuffle_state = self.shuffle.bit_generator.state

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set.labels) / self.batch_size)

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.checkpoint_dir, f"{name}.pkl")

    def save(self, name: str = "last") -> str:
        """Everything to resume, and (in every checkpoint, best ones too) everything to separate."""
        state = {"method": "weak_label", "model_spec": self.model_spec, "classes": self.classes, **self.data,
                 "weights": self.joint.model.get_weights(), "dropout_states": self._dropout_states(),
                 "optimizer": [variable.numpy() for variable in self.joint.optimizer.variables],
                 "progress": asdict(self.progress), "epoch_shuffle_state": self.epoch_shuffle_state,
                 "detection_thresholds": self.detection_thresholds}
        path = self.checkpoint_path(name)
        with atomic_open(path) as output:
            pickle.dump(state, output, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    def _dropout_state_variables(self) -> list:
        """Dropout's random generators: not weights, but a resumed run must draw the same masks."""
        return [variable for variable in self.joint.model.variables if "seed_generator" in variable.path]

    def _dropout_states(self) -> list[np.ndarray]:
        return [variable.numpy() for variable in self._dropout_state_variables()]

    def restore(self, path: str) -> None:
        with open(path, "rb") as handle:
            state = pickle.load(handle)
        self.joint.model.set_weights(state["weights"])
        for variable, value in zip(self._dropout_state_variables(), state["dropout_states"]):
            variable.assign(value)
        for variable, value in zip(self.joint.optimizer.variables, state["optimizer"]):
            variable.assign(value)
        self.progress = Progress(**state["progress"])
        self.epoch_shuffle_state = state["epoch_shuffle_state"]
        self.detection_thresholds = state["detection_thresholds"]

    # ---- validation --------------------------------------------------------------------
    def evaluate(self, data: LabelledFeatures) -> tuple[dict, np.ndarray, np.ndarray]:
        """Loss terms and tagging metrics on `data`, its masks (for the images) and probabilities."""
        masks, probabilities = self.joint.predict(data.features, self.batch_size)
        losses = {name: float(value) for name, value in
                  self.joint.losses(tf.constant(data.labels), tf.constant(masks), tf.constant(probabilities)).items()}
        return {**losses, "tagging": tagging_metrics(data.labels, probabilities, self.classes)}, masks, probabilities

    def _score(self, metrics: dict) -> float:
        value = metrics["loss"] if self.selection_metric == "loss" else metrics["tagging"].get("weighted_auc", math.nan)
        return SELECTION_METRICS[self.selection_metric] * value

    # ---- training ----------------------------------------------------------------------
    def train(self) -> None:
        progress = self.progress
        while not progress.finished and progress.epoch < self.max_epochs \
                and progress.epochs_without_improvement < self.patience:
            self._train_epoch()
            metrics, masks, probabilities = self.evaluate(self.valid_set)
            score = self._score(metrics)
            improved = score > progress.best_score
            if improved:
                progress.best_score, progress.best_epoch, progress.epochs_without_improvement = score, progress.epoch, 0
                self.detection_thresholds = equal_error_thresholds(self.valid_set.labels, probabilities)
            else:
                progress.epochs_without_improvement += 1
            progress.epoch += 1
            progress.step_in_epoch = 0
            self.epoch_shuffle_state = self.shuffle.bit_generator.state
            scalars = _flat_validation_scalars(metrics)
            self._log_epoch(scalars, masks)
            self.on_epoch_end(progress.epoch, scalars)
            log.info("epoch %d: validation loss %.4f, weighted AUC %.4f, mAP %.4f%s", progress.epoch,
                     metrics["loss"], scalars.get("weighted_auc", math.nan),
                     scalars.get("mean_average_precision", math.nan),
                     " (best)" if improved else f" ({progress.epochs_without_improvement} without improvement)")
            if improved:
                self.save("best")
            self.save("last")
        if not progress.finished:
            with open(self.checkpoint_path("best"), "rb") as handle:
                self.joint.model.set_weights(pickle.load(handle)["weights"])
            progress.finished = True
            self.save("last")

    def _train_epoch(self) -> None:
        progress = self.progress
        # The order of an epoch comes from the generator state at its start, so a resumed epoch
        # replays the same batches and skips those already done.
        self.shuffle.bit_generator.state = self.epoch_shuffle_state
        order = self.shuffle.permutation(len(self.train_set.labels))
        with epoch_progress(self.steps_per_epoch, progress.step_in_epoch, f"epoch {progress.epoch + 1}",
                            self.save) as bar:
            while progress.step_in_epoch < self.steps_per_epoch:
                losses = self._train_batch(
                    order[progress.step_in_epoch * self.batch_size:(progress.step_in_epoch + 1) * self.batch_size])
                check_finite(losses, f"step {progress.global_step} (epoch {progress.epoch + 1})",
                             self.checkpoint_path("last"), "Lower the learning rate")
                progress.step_in_epoch += 1
                progress.global_step += 1
                if progress.global_step % self.summary_every == 0:
                    write_scalars(self.writer, {f"train/{name}": value for name, value in losses.items()},
                                  progress.global_step)
                bar.set_postfix({name: f"{value:.4g}" for name, value in losses.items()}, refresh=False)
                bar.update()

    def _train_batch(self, clips: np.ndarray) -> dict[str, float]:
        losses = self.joint.train_step(tf.constant(self.train_set.features[clips]),
                                       tf.constant(self.train_set.labels[clips]))
        return {name: float(value) for name, value in losses.items()}

    def _log_epoch(self, scalars: dict, masks: np.ndarray) -> None:
        """Validation scalars, the learning rate, and the first validation clip's input and masks."""
        write_scalars(self.writer, {**{f"valid/{name}": value for name, value in scalars.items()},
                                    "learning_rate": self.joint.learning_rate}, self.progress.global_step)
        with self.writer.as_default(step=self.progress.global_step):
            features = self.valid_set.features[0]
            span = max(float(features.max() - features.min()), 1e-6)
            # mel bands upwards, time to the right, as on a spectrogram plot
            tf.summary.image("valid/features", ((features.T[::-1] - features.min()) / span)[None, :, :, None])
            for index, name in enumerate(self.classes):
                tf.summary.image(f"valid/mask/{name}", masks[0, :, :, index].T[::-1][None, :, :, None])


def _flat_validation_scalars(metrics: dict) -> dict[str, float]:
    tagging = metrics["tagging"]
    scalars = {name: metrics[name] for name in ("loss", "bce", "sparsity")}
    scalars.update({name: tagging[name] for name in ("weighted_auc", "mean_average_precision", "mean_eer")
                    if name in tagging})
    for name, values in tagging["per_class"].items():
        scalars.update({f"{key}/{name}": value for key, value in values.items() if key in ("auc", "eer")})
    return scalars
