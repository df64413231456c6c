"""The training loop: epochs, validation, early stopping, checkpoints, resume, logging.

It knows nothing of how batches are made (Datasets/excerpts.py) or what the networks are
(Models/). A phase ("supervised" or "semi_supervised") runs epochs of `epoch_it` separator
steps; after each epoch the supervised loss on whole validation songs decides whether the
model improved. The best weights of a phase are kept; `patience` epochs without improvement
end it. Checkpoints are written atomically (temporary file, then rename) after every epoch
and on Ctrl-C, and hold everything needed to continue bit for bit: weights, optimiser
states, step counters, the excerpt generators' random states and the critics' noise state.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from Datasets import features
from Datasets.atomic import atomic_open
from Models.adversarial import AdversarialSeparator
from Models.separation import Separator

log = logging.getLogger(__name__)

PHASES = ("supervised", "semi_supervised")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during an epoch, after the checkpoint `checkpoint` was saved."""

    def __init__(self, checkpoint: str):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


def write_scalars(writer, scalars: dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)


@contextlib.contextmanager
def epoch_progress(total: int, done: int, description: str, save_last):
    """A progress bar over an epoch's steps; Ctrl-C inside it saves a checkpoint through
    `save_last()` (which returns its path) and goes on as TrainingInterrupted, naming it."""
    bar = tqdm(total=total, initial=done, desc=description, unit="step", dynamic_ncols=True)
    try:
        yield bar
    except KeyboardInterrupt:
        raise TrainingInterrupted(save_last()) from None
    finally:
        bar.close()


def check_finite(losses: dict[str, float], where: str, checkpoint: str, remedy: str) -> None:
    """Raises TrainingDiverged naming the losses that are NaN or infinite, where (step and
    epoch), the last good checkpoint and what to change before resuming from it."""
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise TrainingDiverged(f"{', '.join(bad)} became {losses[bad[0]]} at {where}; the last good checkpoint is "
                               f"{checkpoint}. {remedy} and resume from it.")


@dataclass
class Progress:
    """Counters that say where training stands; saved in every checkpoint."""

    phase: str = PHASES[0]
    epoch: int = 0
    global_step: int = 0  # separator steps over all phases: the x axis of every curve
    best_validation_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    completed_phases: list = field(default_factory=list)


@dataclass
class ValidationSong:
    name: str
    log_mixture: np.ndarray  # (bins, frames)
    log_sources: np.ndarray  # (num_sources, bins, frames)


@dataclass
class AudioExample:
    """A short validation excerpt whose separation is shown in TensorBoard after every epoch."""

    mixture: np.ndarray  # mono waveform at the model's rate
    log_sources: np.ndarray  # (num_sources, bins, frames) targets


def keras_variable_value(value) -> float:
    """A learning rate may be a float, a variable or a schedule's current value."""
    return value.numpy() if hasattr(value, "numpy") else value


def _write_atomically(path: str, payload) -> None:
    with atomic_open(path) as output:
        pickle.dump(payload, output, protocol=pickle.HIGHEST_PROTOCOL)


class Solver:
    def __init__(self, model: AdversarialSeparator, separation: Separator, description: dict, paired, unpaired,
                 validation: list[ValidationSong], checkpoint_dir: str, log_dir: str, epoch_it: int = 1000,
                 max_epochs: int = 100, patience: int = 5, summary_every: int = 10,
                 validation_window_frames: int = 1024, semi_supervised_init: str = "scratch",
                 example: AudioExample | None = None, on_epoch_end=None):
        """`separation` applies `model.separator` to whole songs for validation and the example;
        `description` (Models.checkpoint.separator_description) goes into every checkpoint."""
        self.model, self.paired, self.unpaired, self.validation = model, paired, unpaired, validation
        self.separation, self.description, self.checkpoint_dir = separation, description, checkpoint_dir
        self.epoch_it, self.max_epochs, self.patience = epoch_it, max_epochs, patience
        self.summary_every, self.validation_window_frames = summary_every, validation_window_frames
        self.semi_supervised_init, self.example = semi_supervised_init, example
        self.on_epoch_end = on_epoch_end or (lambda phase, epoch, metrics: None)
        self.writer = tf.summary.create_file_writer(log_dir)
        self.progress = Progress()
        self.step_in_epoch = 0
        self.initial_separator_weights = model.separator.get_weights()

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.checkpoint_dir, f"{name}.pkl")

    def _state(self) -> dict:
        model = self.model
        return {**self.description, "progress": asdict(self.progress), "step_in_epoch": self.step_in_epoch,
                "separator": model.separator.get_weights(),
                "critics": {name: critic.get_weights() for name, critic in model.critics.items()},
                "optimizers": {name: [v.numpy() for v in opt.variables] for name, opt in model.optimizers.items()},
                "noise_state": model.noise.state.numpy(),
                "paired_state": self.paired.get_state(),
                "unpaired_state": self.unpaired.get_state() if self.unpaired is not None else None,
                "initial_separator": self.initial_separator_weights}

    def save(self, name: str = "last") -> str:
        path = self.checkpoint_path(name)
        _write_atomically(path, self._state())
        return path

    def restore(self, path: str) -> None:
        with open(path, "rb") as handle:
            state = pickle.load(handle)
        model = self.model
        model.separator.set_weights(state["separator"])
        for name, weights in state["critics"].items():
            model.critics[name].set_weights(weights)
        for name, values in state["optimizers"].items():
            for variable, value in zip(model.optimizers[name].variables, values):
                variable.assign(value)
        model.noise.state.assign(state["noise_state"])
        self.paired.set_state(state["paired_state"])
        if self.unpaired is not None and state["unpaired_state"] is not None:
            self.unpaired.set_state(state["unpaired_state"])
        self.progress = Progress(**state["progress"])
        self.step_in_epoch = state["step_in_epoch"]
        self.initial_separator_weights = state["initial_separator"]

    # ---- validation --------------------------------------------------------------------
    def supervised_loss(self, songs: list[ValidationSong], separator: Separator | None = None) -> float:
        """Supervised loss over whole songs (validation or test), frame-weighted; of the model in
        training unless another `separator` is given."""
        squared_error, frames = 0.0, 0
        for song in songs:
            estimates = (separator or self.separation).log_spectrogram(song.log_mixture,
                                                                        self.validation_window_frames)
            for index, name in enumerate(self.model.source_names):
                squared_error += float(np.mean(np.square(estimates[name] - song.log_sources[index]), axis=0).sum())
            frames += song.log_mixture.shape[1]
        return squared_error / max(frames, 1)

    # ---- training ----------------------------------------------------------------------
    def _train_step(self, phase: str) -> dict:
        mixture, sources = self.paired.next_batch()
        if phase == "supervised":
            return self.model.supervised_step(mixture, sources)
        unpaired_batches = [self.unpaired.next_batch() for _ in range(self.model.num_disc + 1)]
        return self.model.semi_supervised_step(mixture, sources, unpaired_batches)

    def _log_epoch_summaries(self, phase: str, validation: float) -> None:
        """Validation loss, learning rates, and the example's spectrograms and audio."""
        step = self.progress.global_step
        learning_rates = {f"learning_rate/{name}": float(keras_variable_value(optimizer.learning_rate))
                          for name, optimizer in self.model.optimizers.items()}
        write_scalars(self.writer, {f"{phase}/validation_loss": validation, **learning_rates}, step)
        if self.example is None:
            return
        example, settings = self.example, self.separation.settings
        mixture = features.stft(example.mixture, settings.n_fft, settings.hop)
        log_mixture = features.log_magnitude(mixture)
        estimates = self.separation.log_spectrogram(log_mixture, self.validation_window_frames)
        waveforms = self.separation.reconstruct(estimates, mixture, len(example.mixture))
        peak = max(float(log_mixture.max()), 1e-6)

        def image(log_magnitude):  # low frequencies at the bottom, as on a spectrogram plot
            return np.clip(log_magnitude[::-1] / peak, 0, 1)[None, :, :, None]

        with self.writer.as_default(step=step):
            tf.summary.image(f"{phase}/spectrogram/mixture", image(log_mixture))
            for index, name in enumerate(self.model.source_names):
                tf.summary.image(f"{phase}/spectrogram/{name}_estimate", image(estimates[name]))
                tf.summary.image(f"{phase}/spectrogram/{name}_target", image(example.log_sources[index]))
                tf.summary.audio(f"{phase}/audio/{name}_estimate", waveforms[name][None, :, None],
                                 settings.sample_rate)
            tf.summary.audio(f"{phase}/audio/mixture", example.mixture[None, :, None], settings.sample_rate)

    def _start_phase(self, phase: str) -> None:
        self.progress = Progress(phase=phase, global_step=self.progress.global_step,
                                 completed_phases=self.progress.completed_phases)
        self.step_in_epoch = 0
        if phase == "semi_supervised":
            if self.semi_supervised_init == "scratch":  # the paper: same random start as phase 1
                self.model.separator.set_weights(self.initial_separator_weights)
            elif os.path.exists(self.checkpoint_path("best_supervised")):
                self.model.separator.set_weights(self._best_weights("supervised"))

    def _best_weights(self, phase: str) -> list:
        with open(self.checkpoint_path(f"best_{phase}"), "rb") as handle:
            return pickle.load(handle)["separator"]

    def best_validation_loss(self, phase: str) -> float:
        with open(self.checkpoint_path(f"best_{phase}"), "rb") as handle:
            return pickle.load(handle)["progress"]["best_validation_loss"]

    def train(self, phases: tuple[str, ...]) -> None:
        """Runs the phases not completed yet, continuing an interrupted one where it stopped."""
        for phase in phases:
            if phase in self.progress.completed_phases:
                continue
            if self.progress.phase != phase or self.progress.epoch == 0 and self.step_in_epoch == 0:
                self._start_phase(phase)
            self._train_phase(phase)

    def _train_phase(self, phase: str) -> None:
        progress = self.progress
        while progress.epoch < self.max_epochs and progress.epochs_without_improvement < self.patience:
            self._train_epoch(phase)
            validation = self.supervised_loss(self.validation)
            improved = validation < progress.best_validation_loss
            if improved:
                progress.best_validation_loss, progress.best_epoch = validation, progress.epoch
                progress.epochs_without_improvement = 0
            else:
                progress.epochs_without_improvement += 1
            progress.epoch += 1
            self.step_in_epoch = 0
            self._log_epoch_summaries(phase, validation)
            self.on_epoch_end(phase, progress.epoch, {"validation_loss": validation})
            log.info("%s epoch %d: validation loss %.5f%s", phase, progress.epoch, validation,
                     " (best)" if improved else f" ({progress.epochs_without_improvement} without improvement)")
            if improved:
                self.save(f"best_{phase}")
            self.save("last")
        self.model.separator.set_weights(self._best_weights(phase))
        progress.completed_phases.append(phase)
        self.save("last")

    def _train_epoch(self, phase: str) -> None:
        progress = self.progress
        with epoch_progress(self.epoch_it, self.step_in_epoch, f"{phase} epoch {progress.epoch + 1}",
                            self.save) as bar:
            while self.step_in_epoch < self.epoch_it:
                metrics = {name: float(value) for name, value in self._train_step(phase).items()}
                check_finite(metrics, f"step {progress.global_step} ({phase} epoch {progress.epoch + 1})",
                             self.checkpoint_path("last"), "Lower the learning rate or alpha/beta")
                self.step_in_epoch += 1
                progress.global_step += 1
                if progress.global_step % self.summary_every == 0:
                    write_scalars(self.writer, {f"{phase}/{name}": value for name, value in metrics.items()},
                                  progress.global_step)
                bar.set_postfix({name: f"{value:.4g}" for name, value in metrics.items()
                                 if "/" not in name}, refresh=False)
                bar.update()
