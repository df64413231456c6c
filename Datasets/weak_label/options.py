"""The options of each recipe, their defaults and their checks.

Every option of `prepare(recipe, ..., **options)`, besides `seed` (all: which recordings go to
train, valid and test, and every draw of the mixtures; 0 by default):
- sample_rate (all): Hz of the written clips; sources are downmixed to mono and resampled.
- clip_seconds (all): length of every clip.
- events_per_clip (generic, demo, dcase2013): (min, max) events in a clip that has events,
  each of a different class.
- ebr_db (generic, demo, tut): (low, high) event-to-background ratio in dB, drawn uniformly per
  event: RMS of the event over its own samples against RMS of the background over the same
  samples. TUT keeps Kong et al.'s 0 dB by default.
- snr_db (dcase2013): white noise level below the events: RMS of the events over the samples
  where one sounds against RMS of the noise over the same samples.
- overlap (generic, demo, dcase2013): whether events may overlap; by default they follow each
  other with random gaps.
- empty_clip_probability (generic, demo): chance that a clip has no event (its label is all zero).
- clips_per_split (generic, demo, dcase2013): {"train": n, "valid": n, "test": n}.
- short_background (generic, demo, tut): a background recording shorter than a clip is
  "loop"ed (with a warning naming it) or an "error".
- solo_clips (tut): as in Kong et al.'s code, each mixture's event alone and background alone are
  clips too, and the class `background` labels every clip with background in it.
- solo_training_clips (generic, demo): each training mixture's events alone (labelled with their
  classes) and its background alone (no labels) are training clips too, three clips per mixture;
  validation and test keep mixtures only, so their scores stay those of mixtures.
- training_event_semitones (generic, demo): None, or (low, high): each training event plays
  faster or slower, its pitch shifted by a number of semitones drawn uniformly from the pair
  and its length scaled to match (a smaller or larger drum). Validation and test stay as recorded.
- training_event_seconds (generic, demo): None, or (low, high) seconds > 0: each training event
  is cut to a length drawn log-uniformly from the pair and faded out (a choked cymbal); events
  already shorter stay whole. Validation and test stay as recorded.
- balanced_training_groups (generic, demo): training events are drawn by the subfolders of each
  class (events/<class>/<group>/) about equally often, then by the files of the drawn subfolder,
  instead of by files alone: a drum kit with one take weighs as much as one with sixteen.
  Validation and test stay drawn by files.
- valid_fraction (tut): share of the devtrain recordings held out for validation.
- event_files_per_class, background_files, background_seconds (demo): how much raw audio the
  demo synthesises before mixing it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from Datasets.weak_label.folder import SPLITS
from Datasets.weak_label.mixing import SHORT_BACKGROUND_CHOICES


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise ValueError(f"Option '{name}' {problem}.")


def _pair(value, name: str, kind: type) -> tuple:
    _check(isinstance(value, (list, tuple)) and len(value) == 2, name, f"must be a pair (low, high), not {value!r}")
    low, high = (kind(item) for item in value)
    _check(low <= high, name, f"must have low <= high, not {value!r}")
    return low, high


@dataclass
class _ClipOptions:
    sample_rate: int = 16000
    clip_seconds: float = 4.0

    def __post_init__(self) -> None:
        self.sample_rate, self.clip_seconds = int(self.sample_rate), float(self.clip_seconds)
        _check(self.sample_rate >= 8000, "sample_rate", f"must be at least 8000 Hz, not {self.sample_rate}")
        _check(self.clip_seconds > 0, "clip_seconds", f"must be positive, not {self.clip_seconds}")


def _clips_per_split(value) -> dict[str, int]:
    _check(isinstance(value, dict) and set(value) == set(SPLITS), "clips_per_split",
           f"must give a number for each of {', '.join(SPLITS)}, not {value!r}")
    counts = {split: int(value[split]) for split in SPLITS}
    _check(min(counts.values()) >= 0 and counts["train"] > 0, "clips_per_split",
           f"needs training clips and no negative count, not {value!r}")
    return counts


def _events_per_clip(value) -> tuple[int, int]:
    low, high = _pair(value, "events_per_clip", int)
    _check(low >= 1, "events_per_clip", f"must start at 1 or more, not {value!r} (use empty_clip_probability "
           "for clips without events)")
    return low, high


def _short_background(value) -> str:
    _check(value in SHORT_BACKGROUND_CHOICES, "short_background",
           f"must be one of {', '.join(map(repr, SHORT_BACKGROUND_CHOICES))}, not {value!r}")
    return value


@dataclass
class GenericOptions(_ClipOptions):
    events_per_clip: tuple[int, int] = (1, 3)
    ebr_db: tuple[float, float] = (-6.0, 6.0)
    overlap: bool = False
    empty_clip_probability: float = 0.0
    clips_per_split: dict[str, int] = field(default_factory=lambda: {"train": 1000, "valid": 200, "test": 200})
    short_background: str = "loop"
    solo_training_clips: bool = False
    training_event_semitones: tuple[float, float] | None = None
    training_event_seconds: tuple[float, float] | None = None
    balanced_training_groups: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.solo_training_clips = bool(self.solo_training_clips)
        self.balanced_training_groups = bool(self.balanced_training_groups)
        if self.training_event_semitones is not None:
            self.training_event_semitones = _pair(self.training_event_semitones, "training_event_semitones", float)
        if self.training_event_seconds is not None:
            self.training_event_seconds = _pair(self.training_event_seconds, "training_event_seconds", float)
            _check(self.training_event_seconds[0] > 0, "training_event_seconds",
                   f"must be positive seconds, not {self.training_event_seconds!r}")
        self.events_per_clip = _events_per_clip(self.events_per_clip)
        self.ebr_db = _pair(self.ebr_db, "ebr_db", float)
        self.overlap = bool(self.overlap)
        self.empty_clip_probability = float(self.empty_clip_probability)
        _check(0 <= self.empty_clip_probability < 1, "empty_clip_probability",
               f"must be in [0, 1), not {self.empty_clip_probability}")
        self.clips_per_split = _clips_per_split(self.clips_per_split)
        self.short_background = _short_background(self.short_background)


@dataclass
class DemoOptions(GenericOptions):
    """Small enough to train on two CPU cores: 5 classes, 4 s clips, 300 + 80 + 80 clips."""

    empty_clip_probability: float = 0.05
    clips_per_split: dict[str, int] = field(default_factory=lambda: {"train": 300, "valid": 80, "test": 80})
    event_files_per_class: int = 40
    background_files: int = 12
    background_seconds: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.event_files_per_class, self.background_files = int(self.event_files_per_class), int(self.background_files)
        self.background_seconds = float(self.background_seconds)
        _check(self.event_files_per_class >= 3, "event_files_per_class", "must be at least 3 (one per split)")
        _check(self.background_files >= 3, "background_files", "must be at least 3 (one per split)")
        _check(self.background_seconds > 0, "background_seconds", "must be positive")

    def generic(self) -> GenericOptions:
        """The options of the generic recipe that mixes the synthesised files."""
        return GenericOptions(**{option.name: getattr(self, option.name) for option in fields(GenericOptions)})


@dataclass
class TutOptions(_ClipOptions):
    ebr_db: tuple[float, float] = (0.0, 0.0)
    solo_clips: bool = True
    valid_fraction: float = 0.1
    short_background: str = "loop"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ebr_db = _pair(self.ebr_db, "ebr_db", float)
        self.solo_clips = bool(self.solo_clips)
        self.valid_fraction = float(self.valid_fraction)
        _check(0 < self.valid_fraction < 1, "valid_fraction", f"must be in (0, 1), not {self.valid_fraction}")
        self.short_background = _short_background(self.short_background)


@dataclass
class Dcase2013Options(_ClipOptions):
    clip_seconds: float = 10.0
    events_per_clip: tuple[int, int] = (1, 4)
    snr_db: float = 10.0
    overlap: bool = False
    clips_per_split: dict[str, int] = field(default_factory=lambda: {"train": 1000, "valid": 200, "test": 200})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.events_per_clip = _events_per_clip(self.events_per_clip)
        self.snr_db = float(self.snr_db)
        self.overlap = bool(self.overlap)
        self.clips_per_split = _clips_per_split(self.clips_per_split)


def make_options(recipe: str, kind: type, options: dict):
    """`kind(**options)`, with a clear error for an option the recipe does not have."""
    known = [option.name for option in fields(kind)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"Unknown option '{unknown[0]}' for the {recipe} recipe; its options are "
                         f"{', '.join(known)} (see Datasets/weak_label/options.py).")
    return kind(**options)
