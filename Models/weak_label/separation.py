"""Separating sound events with a trained weak-label model, and scoring it against baselines.

A mel-band mask of a class, dilated by `mask_dilation` (each value becomes the maximum of a
window of frames by mel bands around it: rank-pooled masks light a few bins of an event, and
on real recordings often a few frames beside it), raised to `mask_exponent` (weakly trained
masks are soft: a power above 1 trades artifacts for less interference), weighted by the
background gate (`background_gate_db`, below), is spread over the STFT bins
(`features.mel_to_linear_matrix`: every bin's weights sum to one), multiplied with the
mixture's magnitude, given the mixture's phase and inverted. Which classes are separated is decided by the model's
predicted labels, never by the ground truth: its clip probabilities (the masks' pooled, fused with
a read-out of the clip's pooled statistics where the run fitted one, `clip_statistics.py`) against
per-class detection thresholds.

The background gate: rank-pooled masks say where a class is, not how much of a bin is the
event, and dilated they cover the background around it as well. Each band's median mel energy
over the input stands for the background (it is, while the events cover less than half of the
input), and a bin keeps the share ((dB above that median) / background_gate_db)^2, clipped to
[0, 1], of its mask value: nothing at or below the background's level, all of it from
`background_gate_db` above. The square and 20 dB were chosen on the validation split of the
real-recordings development set (`benchmarks/weak_label_dev_set.md`); 0 turns the gate off.

Scoring (per present event of every test clip): BSS Eval v3 of the event's estimate with
references [event, rest of the mixture], so SIR measures what of the other events and the
background leaks in. Two estimates of the same event are scored beside it on the same clips:
the unprocessed mixture (no separation) and the ideal binary mask (oracle: the STFT bins where
the event is louder than the rest). An event whose class the model did not detect has no
estimate: it counts as missed, and is not averaged into the SDR figures. A detected event
whose estimate is silent has failed: it scores FAILED_SCORE_DB and is counted as failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter

from Datasets import audio, features
from Datasets.features import MelSettings
from Models.bss import FAILED_SCORE_DB, evaluate_in_parallel
from Models.config_checks import is_finite_non_negative
from Models.weak_label.clip_statistics import ClipStatisticsReadout
from Models.weak_label.tagging import tagging_metrics
from Models.weak_label.model import Standardisation, WeakLabelPredictor

METRICS = ("SDR", "SIR", "SAR")
ESTIMATORS = ("separated", "mixture", "oracle_ibm")
SILENCE_ENERGY = 1e-10  # mean squared amplitude below which a signal counts as silent


def mel_power(front_end: str) -> float:
    """Log-mel features are of mel magnitudes; the front ends inside the model take mel energies."""
    return 1.0 if front_end == "logmel" else 2.0


@dataclass
class EventSeparator:
    """A trained weak-label model with what it needs to separate audio."""

    predictor: WeakLabelPredictor
    classes: list[str]
    settings: MelSettings
    standardisation: Standardisation
    front_end: str  # "logmel", or "pcen", "relative_db" and the others: the model normalises mel energies
    thresholds: np.ndarray  # per class: the clip probability from which it counts as present
    mask_exponent: float = 1.0  # masks are raised to this power before separating: > 1 sharpens them
    mask_dilation: tuple[int, int] = (1, 1)  # (frames, mel bands) of the max filter on masks; (1, 1): none
    background_gate_db: float = 0.0  # masks kept in full this far above each band's median; 0: no gate
    clip_statistics: ClipStatisticsReadout | None = None  # fused into the clip probabilities where set
    path: str = ""
    data_folder: str = ""  # the clips it was trained on (labels.csv), for test-set evaluation

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def clip_statistics_weight(self) -> float | list[float]:
        """The clip statistics' weight in its clip probabilities, for reports: one number, or one
        per class; 0 where none are fused."""
        return np.asarray(self.clip_statistics.weight if self.clip_statistics else 0.0).tolist()

    def model_input(self, mel: np.ndarray) -> np.ndarray:
        return self.standardisation(features.log_mel(mel)) if self.front_end == "logmel" else mel

    def masks_and_probabilities(self, mixture: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mono waveform at the model's rate -> (mel masks (frames, mels, classes), clip
        probabilities (classes,) that decide detection, those of the masks alone, mixture STFT)."""
        spectrogram = self.settings.spectrogram(mixture)
        masks, mask_probabilities = self.predictor.predict(
            self.model_input(self.settings.mel_of(spectrogram, mel_power(self.front_end)))[None])
        probabilities = mask_probabilities[0]
        if self.clip_statistics is not None:
            # the linear floor's features: log-mel of mel magnitudes, as `linear_floor.clip_log_mels`
            probabilities = self.clip_statistics.fuse(mask_probabilities, [features.log_mel(
                self.settings.mel_of(spectrogram, 1.0))])[0]
        return masks[0], probabilities, mask_probabilities[0], spectrogram

    def detected(self, probabilities: np.ndarray) -> list[int]:
        """The indices of the classes whose clip probability reaches their detection threshold."""
        return [index for index in range(len(self.classes)) if probabilities[index] >= self.thresholds[index]]

    def separate(self, mixture: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """{class: waveform} for the classes predicted present, and all clip probabilities."""
        masks, probabilities, _, spectrogram = self.masks_and_probabilities(mixture)
        return ({self.classes[index]: self.apply_mask(masks[..., index], spectrogram, len(mixture))
                 for index in self.detected(probabilities)}, probabilities)

    def apply_mask(self, mel_mask: np.ndarray, spectrogram: np.ndarray, length: int) -> np.ndarray:
        mel_mask = dilate(mel_mask, self.mask_dilation) ** self.mask_exponent
        if self.background_gate_db:
            mel_mask = mel_mask * background_gate(self.settings.mel_of(spectrogram, 2.0), self.background_gate_db)
        linear_mask = self.settings.mel_to_linear() @ mel_mask.T  # (bins, frames)
        return features.istft(linear_mask * spectrogram, self.settings.hop, length, self.settings.window)


def dilate(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each value of a (frames, mels) mask replaced by the largest within a centred window of
    `size` (frames, mel bands), cut at the clip's edges."""
    if tuple(size) == (1, 1):
        return mask
    return maximum_filter(mask, size=tuple(size), mode="constant", cval=0.0)


def background_gate(mel_energies: np.ndarray, full_db: float) -> np.ndarray:
    """(frames, mels) weights in [0, 1]: ((dB above the band's median over the frames) / full_db)^2,
    clipped: 0 at or below the median, 1 from `full_db` above it."""
    decibels = 10.0 * np.log10(mel_energies + 1e-10)
    above = decibels - np.median(decibels, axis=0, keepdims=True)
    return np.clip(above / full_db, 0.0, 1.0) ** 2


def check_background_gate(value, name: str = "Config key `background_gate_db`") -> None:
    """A gate's full-strength level must be a finite number of dB, 0 or more (0: no gate)."""
    if not is_finite_non_negative(value):
        raise ValueError(f"{name} must be a non-negative number of dB (0: no gate), got {value!r}.")


def ideal_binary_mask_estimate(event: np.ndarray, mixture: np.ndarray, settings: MelSettings) -> np.ndarray:
    """The oracle: the mixture's STFT bins where the event is louder than everything else."""
    event_spectrogram, mixture_spectrogram = settings.spectrogram(event), settings.spectrogram(mixture)
    mask = np.abs(event_spectrogram) > np.abs(mixture_spectrogram - event_spectrogram)
    return features.istft(mask * mixture_spectrogram, settings.hop, len(mixture), settings.window)


def _audible(signal: np.ndarray) -> bool:
    return float(np.mean(np.square(signal))) > SILENCE_ENERGY


def clip_probabilities(separator: EventSeparator, clips) -> tuple[np.ndarray, np.ndarray]:
    """(clips, classes): the clip probabilities of `clips` that decide detection, and those of the masks alone."""
    rate = separator.settings.sample_rate
    outputs = [separator.masks_and_probabilities(audio.read(clip.mixture_path, sample_rate=rate, mono=True))
               for clip in clips]
    return np.stack([output[1] for output in outputs]), np.stack([output[2] for output in outputs])


def evaluate_clips(separator: EventSeparator, clips,
                   workers: int | None = None) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Per-clip results ({"clip", "labels", "probabilities", "false_alarms": [classes detected but
    absent], "events": {class: {estimator: {SDR, SIR, SAR}} or {"missed": True, ...}}}), the clip
    probabilities (clips, classes) and those of the masks alone."""
    rate = separator.settings.sample_rate
    results, jobs, slots, all_probabilities, all_mask_probabilities = [], [], [], [], []
    for clip in clips:
        mixture = audio.read(clip.mixture_path, sample_rate=rate, mono=True)
        masks, probabilities, mask_probabilities, spectrogram = separator.masks_and_probabilities(mixture)
        all_probabilities.append(probabilities)
        all_mask_probabilities.append(mask_probabilities)
        present = [name for name, label in zip(separator.classes, clip.labels) if label > 0.5]
        detected = [separator.classes[index] for index in separator.detected(probabilities)]
        result = {"clip": clip.name, "labels": present,
                  "probabilities": {name: float(p) for name, p in zip(separator.classes, probabilities)},
                  "false_alarms": [name for name in detected if name not in present], "events": {}}
        for name in present:
            if name not in clip.source_paths:
                continue  # no reference to score against (a user's data set without sources/)
            event = audio.read(clip.source_paths[name], sample_rate=rate, mono=True)[:len(mixture)]
            event = np.pad(event, (0, len(mixture) - len(event)))
            if not _audible(event):
                result["events"][name] = {"silent_reference": True}
                continue
            rest = mixture - event
            references = np.stack([event, rest]) if _audible(rest) else event[None]
            index = separator.classes.index(name)
            estimates = {"mixture": mixture, "oracle_ibm": ideal_binary_mask_estimate(event, mixture,
                                                                                      separator.settings)}
            if name in detected:
                estimates["separated"] = separator.apply_mask(masks[..., index], spectrogram, len(mixture))
            event_result = result["events"][name] = {} if name in detected else {"missed": True}
            metrics = METRICS if len(references) > 1 else ("SDR", "SAR")  # no interference without a rest
            silent = [estimator for estimator, estimate in estimates.items() if not _audible(estimate)]
            for estimator in silent:  # a detected event separated into silence: a failure, counted against it
                event_result[estimator] = dict.fromkeys(metrics, FAILED_SCORE_DB)
                event_result.setdefault("failed", []).append(estimator)
                del estimates[estimator]
            if estimates:  # all estimates of the event in one job: they share the references' decomposition
                jobs.append((references, np.stack(list(estimates.values())), [0] * len(estimates)))
                slots.append((event_result, list(estimates), metrics))
        results.append(result)
    for (event_result, estimators, metrics), scores in zip(slots, evaluate_in_parallel(jobs, workers)):
        for column, estimator in enumerate(estimators):
            values = {metric: float(scores[METRICS.index(metric)][column]) for metric in metrics}
            event_result[estimator] = {metric: value for metric, value in values.items() if math.isfinite(value)}
            undefined = [metric for metric, value in values.items() if not math.isfinite(value)]
            if undefined:  # an error energy that vanished to rounding: no finite score exists
                event_result.setdefault("undefined", {})[estimator] = undefined
    shape = (len(clips), len(separator.classes))
    return results, np.array(all_probabilities).reshape(shape), np.array(all_mask_probabilities).reshape(shape)


def score_clips(separator: EventSeparator, clips, workers: int | None = None) -> tuple[list[dict], dict, dict]:
    """The test report of `clips`: per-clip results, tagging metrics (of the clip probabilities
    that decide detection; where they fuse the clip statistics, those of the masks alone too,
    under "masks") and the event summary."""
    results, probabilities, mask_probabilities = evaluate_clips(separator, clips, workers)
    labels = np.stack([clip.labels for clip in clips])
    tagging = tagging_metrics(labels, probabilities, separator.classes)
    if separator.clip_statistics is not None:
        tagging["masks"] = tagging_metrics(labels, mask_probabilities, separator.classes)
    return results, tagging, summarise_events(results, separator.classes)


def is_event_result(key: str) -> bool:
    """Whether a key of `summarise_events` belongs in a run's result: the medians with their
    counts, the failed, missed and total events, and the false alarms."""
    return "_median_" in key or "_count_" in key or key.endswith("_failed") or key in ("events", "missed",
                                                                                         "false_alarms")


def summarise_events(results: list[dict], classes: list[str]) -> dict:
    """Per class and over all events ("all"): event counts, missed events, false alarms (clips
    where the class was detected but is absent: the price of the detection thresholds beside the
    misses), and for each estimator its failed events and the mean, median and count of every
    metric over the events it could be scored on (failed ones included, at FAILED_SCORE_DB)."""

    def summary(events: list[dict], false_alarms: int) -> dict:
        entry = {"events": len(events), "missed": sum(bool(event.get("missed")) for event in events),
                 "false_alarms": false_alarms}
        for estimator in ESTIMATORS:
            entry[f"{estimator}_failed"] = sum(estimator in event.get("failed", ()) for event in events)
            for metric in METRICS:
                values = [event[estimator][metric] for event in events if metric in event.get(estimator, {})]
                if values:
                    entry[f"{estimator}_mean_{metric}"] = float(np.mean(values))
                    entry[f"{estimator}_median_{metric}"] = float(np.median(values))
                    entry[f"{estimator}_count_{metric}"] = len(values)
        return entry

    per_class = {name: [result["events"][name] for result in results if name in result["events"]]
                 for name in classes}
    false_alarms = {name: sum(name in result.get("false_alarms", ()) for result in results) for name in classes}
    return {"all": summary([event for events in per_class.values() for event in events], sum(false_alarms.values())),
            **{name: summary(events, false_alarms[name]) for name, events in per_class.items()}}


def separate_event_paths(separator: EventSeparator, inputs, output_dir: str, overwrite: bool = False,
                         skip_existing: bool = False) -> list[str]:
    """`<output_dir>/<input stem>/<class>.wav` (mono, at the input's rate) for every class of
    each input file: the class's separated events where the model detects it, silence where
    it does not. The clip probabilities of all classes are logged."""
    import logging

    from Models.streaming import output_paths, separate_paths

    def separate_one(path: str) -> list[str]:
        input_rate = audio.info(path).sample_rate
        mixture = audio.read(path, sample_rate=separator.settings.sample_rate, mono=True)
        events, probabilities = separator.separate(mixture)
        logging.getLogger(__name__).info("%s: %s", path, ", ".join(
            f"{name} {probability:.2f}" for name, probability in zip(separator.classes, probabilities)))
        targets = output_paths(separator, path, output_dir)
        for name, target in targets.items():
            waveform = events.get(name, np.zeros_like(mixture))
            audio.write(target, audio.resample(waveform, separator.settings.sample_rate, input_rate), input_rate)
        return list(targets.values())

    return separate_paths(separator, inputs, output_dir, overwrite, skip_existing, separate_one)
