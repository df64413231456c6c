"""The one training loop of both methods: stages of epochs, validation, patience, checkpoints.

A run is a sequence of stages (the adversarial method's "supervised" and "semi_supervised"
phases; the weak-label method's single "train"). A stage runs epochs of steps with a progress
bar; after each epoch the method's validation gives a score (higher is better), the best
model of the stage is kept as `best_<stage>` and `patience` epochs without improvement end
the stage, whose best weights then stay in the model. Checkpoints are written atomically
(temporary file, then rename) after every epoch and on Ctrl-C (`last`), and hold everything
needed to continue bit for bit. A NaN or infinite loss stops training and keeps the last good
checkpoint. Every step's losses go to TensorBoard every `summary_every` steps, against one
global step across stages.

A method subclasses `TrainingLoop` and says what a step, a validation, its state and its
start of a stage are; the loop does the rest.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import signal
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import tensorflow as tf
from tqdm import tqdm

from Datasets.atomic import atomic_open

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class WorkerLost(RuntimeError):
    """A collective operation failed or timed out (`collective_timeout`): another worker of a
    multi_worker run died or stopped answering."""


# What TensorFlow raises in a collective when a peer is gone (reset, health check) or silent (timeout)
COLLECTIVE_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError)


def _collective_cause(failure: Exception) -> str:
    """The line of a TensorFlow error that says why, without its node trace and RPC details."""
    lines = [line.strip() for line in str(failure).splitlines()]
    causes = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                      "File ", "[[", "Additional GRPC", ":UNKNOWN"))
              and not line.startswith(tuple("/"))]
    return causes[0] if causes else lines[0]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during an epoch, after the checkpoint `checkpoint` was saved."""

    def __init__(self, checkpoint: str):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


def learning_rate(optimizer) -> float:
    """An optimiser's current learning rate, whether a float, a variable or a schedule's value."""
    value = optimizer.learning_rate
    return float(value.numpy() if hasattr(value, "numpy") else value)


def write_scalars(writer, scalars: dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)


@contextlib.contextmanager
def epoch_progress(total: int, done: int, description: str, save_last):
    """A progress bar over an epoch's steps, and a list that Ctrl-C appends to. Ctrl-C is taken
    between steps (an interrupt inside a running TensorFlow step can crash the process): the
    loop raises KeyboardInterrupt when the list is not empty, and a second Ctrl-C interrupts at
    once. Either way a checkpoint is saved through `save_last()` (which returns its path) and
    the interruption goes on as TrainingInterrupted, naming it."""
    bar = tqdm(total=total, initial=done, desc=description, unit="step", dynamic_ncols=True)
    requested: list[bool] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        def request_stop(signum, frame):
            requested.append(True)
            signal.signal(signal.SIGINT, previous)
        previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield bar, requested
    except KeyboardInterrupt:
        raise TrainingInterrupted(save_last()) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
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
    """Where training stands; saved in every checkpoint."""

    stage: str = ""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0  # steps over all stages: the x axis of every curve
    best_score: float = -math.inf  # of the stage's validation; higher is better
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    completed_stages: list = field(default_factory=list)


@dataclass
class Validation:
    score: float  # higher is better
    scalars: dict[str, float]  # to TensorBoard (`log_epoch`) and Sacred (`on_epoch_end`)
    summary: str  # for the log line


class TrainingLoop(ABC):
    """Subclasses define `steps_per_epoch`, `train_step`, `validate`, `model_state`,
    `load_model_state` and `load_best_weights`, and may hook `start_stage`, `start_epoch`,
    `end_epoch`, `improved` and `log_epoch`."""

    remedy = "Lower the learning rate"  # what to change when a loss diverges

    def __init__(self, checkpoint_dir: str, log_dir: str, max_epochs: int, patience: int, summary_every: int,
                 on_epoch_end=None, chief: bool = True):
        """Only the `chief` (of several workers training together) writes checkpoints and
        TensorBoard events; every worker keeps each stage's best state in memory."""
        self.checkpoint_dir, self.max_epochs, self.patience = checkpoint_dir, max_epochs, patience
        self.summary_every, self.chief = summary_every, chief
        self.on_epoch_end = on_epoch_end or (lambda stage, epoch, scalars: None)
        self.writer = tf.summary.create_file_writer(log_dir) if chief else tf.summary.create_noop_writer()
        self.progress = Progress()
        self._best_states: dict[str, dict] = {}

    # ---- what a method defines ---------------------------------------------------------------
    steps_per_epoch: int

    @abstractmethod
    def train_step(self, stage: str) -> dict[str, float]:
        """One optimisation step; its losses as floats."""

    @abstractmethod
    def validate(self, stage: str) -> Validation:
        """The model on the validation data, after an epoch."""

    @abstractmethod
    def model_state(self) -> dict:
        """Weights, optimisers and random states: everything but the loop's progress."""

    @abstractmethod
    def load_model_state(self, state: dict) -> None:
        """The inverse of `model_state`."""

    @abstractmethod
    def load_best_weights(self, state: dict) -> None:
        """Puts the weights of a best checkpoint's `state` into the model, at the end of a stage."""

    def start_stage(self, stage: str) -> None:
        """Called when a stage starts (not when it resumes)."""

    def start_epoch(self) -> None:
        """Called before every epoch, also a resumed one."""

    def end_epoch(self) -> None:
        """Called after every epoch's validation, before its checkpoints are written."""

    def improved(self, stage: str, validation: Validation) -> None:
        """Called when the validation improved, before the best checkpoint is written."""

    def log_epoch(self, stage: str, validation: Validation) -> None:
        """The validation's scalars and any images or audio, at `self.progress.global_step`."""

    def best_name(self, stage: str) -> str:
        return f"best_{stage}"

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.checkpoint_dir, f"{name}.pkl")

    def state(self) -> dict:
        return {**self.model_state(), "progress": asdict(self.progress)}

    def save(self, name: str = "last", state: dict | None = None) -> str:
        """Writes `state` (by default the current one) as checkpoint `name`, on the chief only."""
        path = self.checkpoint_path(name)
        if self.chief:
            with atomic_open(path) as output:
                pickle.dump(state or self.state(), output, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    def restore(self, path: str) -> None:
        with open(path, "rb") as handle:
            state = pickle.load(handle)
        try:
            self.load_model_state(state)
            self.progress = Progress(**state["progress"])
        except (KeyError, TypeError) as error:  # a state laid out by another version of this code
            raise ValueError(f"Cannot resume from {path}: its training state does not match this version of the "
                             f"code ({type(error).__name__}: {error}). Start a new run; its best checkpoint can "
                             "still be evaluated if its model loads.") from error

    def has_best(self, stage: str) -> bool:
        return stage in self._best_states or os.path.exists(self.checkpoint_path(self.best_name(stage)))

    def read_best(self, stage: str) -> dict:
        """The best state of `stage`: kept in memory, or from its checkpoint in a resumed run."""
        if stage in self._best_states:
            return self._best_states[stage]
        with open(self.checkpoint_path(self.best_name(stage)), "rb") as handle:
            return pickle.load(handle)

    # ---- the loop ----------------------------------------------------------------------------
    def train(self, stages: tuple[str, ...]) -> None:
        """Runs the stages not completed yet, continuing an interrupted one where it stopped."""
        for stage in stages:
            if stage in self.progress.completed_stages:
                continue
            progress = self.progress
            if progress.stage != stage or progress.epoch == 0 and progress.step_in_epoch == 0:
                self.progress = Progress(stage=stage, global_step=progress.global_step,
                                         completed_stages=progress.completed_stages)
                self.start_stage(stage)
            try:
                self._run_stage(stage)
            except COLLECTIVE_FAILURES as failure:
                reason = _collective_cause(failure)
                folder = self.checkpoint_dir if self.chief else "<the chief's run folder>"
                raise WorkerLost(f"Another worker of this run died or stopped answering ({type(failure).__name__}: "
                                 f"{reason}). Restart every worker with resume={folder}: training continues from "
                                 "the chief's last checkpoint there.") from None

    def _run_stage(self, stage: str) -> None:
        progress = self.progress
        while progress.epoch < self.max_epochs and progress.epochs_without_improvement < self.patience:
            self._run_epoch(stage)
            validation = self.validate(stage)
            better = validation.score > progress.best_score
            if better:
                progress.best_score, progress.best_epoch, progress.epochs_without_improvement = \
                    validation.score, progress.epoch, 0
                self.improved(stage, validation)
            else:
                progress.epochs_without_improvement += 1
            progress.epoch += 1
            progress.step_in_epoch = 0
            self.end_epoch()
            self.log_epoch(stage, validation)
            self.on_epoch_end(stage, progress.epoch, validation.scalars)
            log.info("%s epoch %d: %s%s", stage, progress.epoch, validation.summary,
                     " (best)" if better else f" ({progress.epochs_without_improvement} without improvement)")
            state = self.state()
            if better:
                self._best_states[stage] = state
                self.save(self.best_name(stage), state)
            self.save("last", state)
        self.load_best_weights(self.read_best(stage))
        progress.completed_stages.append(stage)
        self.save("last")

    def _run_epoch(self, stage: str) -> None:
        progress = self.progress
        self.start_epoch()
        with epoch_progress(self.steps_per_epoch, progress.step_in_epoch, f"{stage} epoch {progress.epoch + 1}",
                            self.save) as (bar, interrupted):
            while progress.step_in_epoch < self.steps_per_epoch:
                if interrupted:
                    raise KeyboardInterrupt
                losses = self.train_step(stage)
                check_finite(losses, f"step {progress.global_step} ({stage} epoch {progress.epoch + 1})",
                             self.checkpoint_path("last"), self.remedy)
                progress.step_in_epoch += 1
                progress.global_step += 1
                if progress.global_step % self.summary_every == 0:
                    write_scalars(self.writer, {f"{stage}/{name}": value for name, value in losses.items()},
                                  progress.global_step)
                bar.set_postfix({name: f"{value:.4g}" for name, value in losses.items() if "/" not in name},
                                refresh=False)
                bar.update()

