"""The adversarial method's training: the shared loop (Models/training_loop.py) over two phases.

A phase ("supervised" or "semi_supervised") runs epochs of `epoch_it` separator steps; after
each epoch the supervised loss on whole validation songs decides whether the model improved.
It knows nothing of how batches are made (Datasets/excerpts.py) or what the networks are.
Checkpoints hold, besides the loop's progress, what continues training bit for bit (weights,
optimiser states, the excerpt generators' random states, the critics' noise state) and what
rebuilds the separator (`description`, Models/checkpoint.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from Datasets import features
from Models.adversarial.model import AdversarialSeparator
from Models.separation import Separator
from Models.training_loop import TrainingLoop, Validation, learning_rate, write_scalars

PHASES = ("supervised", "semi_supervised")


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


class Solver(TrainingLoop):
    remedy = "Lower the learning rate or alpha/beta"

    def __init__(self, model: AdversarialSeparator, separation: Separator, description: dict, paired, unpaired,
                 validation: list[ValidationSong], checkpoint_dir: str, log_dir: str, epoch_it: int = 1000,
                 max_epochs: int = 100, patience: int = 5, summary_every: int = 10,
                 validation_window_frames: int | None = None, semi_supervised_init: str = "scratch",
                 example: AudioExample | None = None, on_epoch_end=None, chief: bool = True, held_back=None):
        """`separation` applies `model.separator` to whole songs for validation and the example;
        `description` (Models.checkpoint.separator_description) goes into every checkpoint;
        `held_back`, unpaired batches of songs never trained on (validation songs), feeds the
        semi-supervised phase's diagnostics every `summary_every` steps."""
        super().__init__(checkpoint_dir, log_dir, max_epochs, patience, summary_every, on_epoch_end, chief)
        self.model, self.paired, self.unpaired, self.validation = model, paired, unpaired, validation
        self.separation, self.description = separation, description
        self.steps_per_epoch, self.validation_window_frames = epoch_it, validation_window_frames
        self.semi_supervised_init, self.example, self.held_back = semi_supervised_init, example, held_back
        self.initial_separator_weights = model.separator.get_weights()

    # ---- state -------------------------------------------------------------------------
    def model_state(self) -> dict:
        model = self.model
        return {**self.description, "separator": model.separator.get_weights(),
                "critics": {name: critic.get_weights() for name, critic in model.critics.items()},
                "optimizers": {name: [v.numpy() for v in opt.variables] for name, opt in model.optimizers.items()},
                "noise_state": model.noise.bit_generator.state,
                "paired_state": self.paired.get_state(),
                "unpaired_state": self.unpaired.get_state() if self.unpaired is not None else None,
                "initial_separator": self.initial_separator_weights}

    def load_model_state(self, state: dict) -> None:
        model = self.model
        model.separator.set_weights(state["separator"])
        for name, weights in state["critics"].items():
            model.critics[name].set_weights(weights)
        for name, values in state["optimizers"].items():
            for variable, value in zip(model.optimizers[name].variables, values):
                variable.assign(value)
        model.noise.bit_generator.state = state["noise_state"]
        self.paired.set_state(state["paired_state"])
        if self.unpaired is not None and state["unpaired_state"] is not None:
            self.unpaired.set_state(state["unpaired_state"])
        self.initial_separator_weights = state["initial_separator"]

    def load_best_weights(self, state: dict) -> None:
        self.model.separator.set_weights(state["separator"])

    def best_validation_loss(self, phase: str) -> float:
        return -self.read_best(phase)["progress"]["best_score"]

    # ---- training ----------------------------------------------------------------------
    def start_stage(self, phase: str) -> None:
        if phase == "semi_supervised":
            if self.semi_supervised_init == "scratch":  # the paper: same random start as phase 1
                self.model.separator.set_weights(self.initial_separator_weights)
            elif self.has_best("supervised"):
                self.load_best_weights(self.read_best("supervised"))

    def train_step(self, phase: str) -> dict[str, float]:
        mixture, sources = self.paired.next_batch()
        if phase == "supervised":
            metrics = self.model.supervised_step(mixture, sources)
            return {name: float(value) for name, value in metrics.items()}
        unpaired_batches = [self.unpaired.next_batch() for _ in range(self.model.num_disc + 1)]
        diagnostics = {}
        if self.held_back is not None and (self.progress.global_step + 1) % self.summary_every == 0:
            # on the weights the step starts from, with its own batches: what each term asks of it
            diagnostics = self.diagnostics(mixture, sources, unpaired_batches[-1][0])
        metrics = self.model.semi_supervised_step(mixture, sources, unpaired_batches)
        return {**{name: float(value) for name, value in metrics.items()}, **diagnostics}

    def diagnostics(self, mixture, sources, unpaired_mixture) -> dict[str, float]:
        """The model's diagnostics (AdversarialSeparator.diagnostics) on a held-back batch, and
        each term's gradient norm as a share of the supervised term's."""
        metrics = {name: float(value) for name, value in
                   self.model.diagnostics(mixture, sources, unpaired_mixture, *self.held_back.next_batch()).items()}
        supervised = max(metrics["diagnostics/gradient_norm/supervised"], 1e-30)
        for term in ("adversarial", "additivity"):
            metrics[f"diagnostics/gradient_ratio/{term}"] = metrics[f"diagnostics/gradient_norm/{term}"] / supervised
        return metrics

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

    def validate(self, phase: str) -> Validation:
        loss = self.supervised_loss(self.validation)
        return Validation(-loss, {"validation_loss": loss}, f"validation loss {loss:.5f}")

    def log_epoch(self, phase: str, validation: Validation) -> None:
        """Validation loss, learning rates, and the example's spectrograms and audio."""
        step = self.progress.global_step
        learning_rates = {f"learning_rate/{name}": learning_rate(optimizer)
                          for name, optimizer in self.model.optimizers.items()}
        write_scalars(self.writer, {**{f"{phase}/{name}": value for name, value in validation.scalars.items()},
                                    **learning_rates}, step)
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
