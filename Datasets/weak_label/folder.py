"""The weak-label data folder: writing it (recipes) and reading and checking it (`load_clips`).

Layout (paths relative to the folder):
- classes.txt: the class names, one a line, in label order;
- labels.csv: header `filename,split,labels`; `filename` names the clip's mixture (e.g.
  `mixtures/train_00012.wav`), `split` is train, valid or test, `labels` the `;`-joined
  classes present in the clip (empty for a clip without events);
- mixtures/<clip>.wav: mono, one sample rate for all clips;
- sources/<clip>/<class>.wav for each class present (its events alone, as placed and scaled in
  the mixture) and sources/<clip>/background.wav (everything else), summing to the mixture;
  optional for data brought by a user, needed only for separation scores;
- events.csv (recipes only): where each event went, `filename,class,onset_seconds,
  offset_seconds,ebr_db,source_file`, with its event-to-background ratio over its own samples;
- backgrounds.csv (recipes that mix over recordings): the recording each clip's background is
  cut from, `filename,source_file,offset_seconds`.

The recipes write 24-bit PCM on the 24-bit grid: such files are byte-identical for a seed
(float WAVs carry a time stamp), and a mixture is exactly the sum of its sources as read back.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field

import numpy as np

from Datasets import audio
from Datasets.atomic import atomic_open
from Datasets.weak_label.mixing import peak_scale

CLASSES_FILE = "classes.txt"
LABELS_FILE = "labels.csv"
EVENTS_FILE = "events.csv"
BACKGROUNDS_FILE = "backgrounds.csv"
MIXTURES_FOLDER = "mixtures"
SOURCES_FOLDER = "sources"
BACKGROUND = "background"  # the reference of everything that is not an event of a class
SPLITS = ("train", "valid", "test")
LABELS_HEADER = ["filename", "split", "labels"]
EVENTS_HEADER = ["filename", "class", "onset_seconds", "offset_seconds", "ebr_db", "source_file"]
BACKGROUNDS_HEADER = ["filename", "source_file", "offset_seconds"]
LABEL_SEPARATOR = ";"
_PCM_24_STEPS = 2 ** 23


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Clip:
    name: str  # the mixture's file name without extension; its sources are in sources/<name>/
    split: str
    mixture_path: str
    labels: np.ndarray  # float32 multi-hot in class order
    source_paths: dict[str, str]  # class -> reference file, for present classes whose file exists
    background_path: str | None


@dataclass(frozen=True)
class WeakLabelSet:
    classes: list[str]
    folder: str
    sample_rate: int
    clips: list[Clip]

    def split(self, name: str) -> list[Clip]:
        if name not in SPLITS:
            raise ValueError(f"Unknown split '{name}'; the splits are {', '.join(SPLITS)}.")
        return [clip for clip in self.clips if clip.split == name]


def _read_classes(folder: str) -> list[str]:
    path = os.path.join(folder, CLASSES_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}' does not exist: a weak-label folder lists its class names there, one a "
                                "line, in label order.")
    with open(path, encoding="utf-8") as file:
        classes = [line.strip() for line in file if line.strip()]
    check_class_names(classes, path)
    return classes


def check_class_names(classes: list[str], where: str) -> None:
    if not classes:
        raise ValueError(f"{where}: no class names.")
    duplicates = sorted({name for name in classes if classes.count(name) > 1})
    if duplicates:
        raise ValueError(f"{where}: class names listed more than once: {', '.join(duplicates)}.")
    bad = [name for name in classes if LABEL_SEPARATOR in name or "," in name or os.sep in name]
    if bad:
        raise ValueError(f"{where}: class names must not contain ';', ',' or '{os.sep}': {', '.join(bad)}.")


def load_clips(folder: str, classes: list[str] | None = None) -> WeakLabelSet:
    """Reads and checks a weak-label folder (see the module docstring).

    `classes` fixes the label order (e.g. a trained model's); by default it comes from
    classes.txt. Every problem is an error that names the file, the line and what is wrong.
    A folder with training clips must have at least one for every class.
    """
    folder = os.path.abspath(folder)
    if classes is None:
        classes = _read_classes(folder)
    else:
        check_class_names(list(classes), "The given classes")
    classes = list(classes)
    index = {name: position for position, name in enumerate(classes)}
    labels_path = os.path.join(folder, LABELS_FILE)
    if not os.path.isfile(labels_path):
        raise FileNotFoundError(f"'{labels_path}' does not exist: a weak-label folder lists its clips there "
                                f"(header {','.join(LABELS_HEADER)}).")
    with open(labels_path, encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    if not rows or [cell.strip() for cell in rows[0]] != LABELS_HEADER:
        raise ValueError(f"{labels_path} line 1: the header must be '{','.join(LABELS_HEADER)}'.")
    clips, seen = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{labels_path} line {line}"
        if len(row) != len(LABELS_HEADER):
            raise ValueError(f"{where}: expected {len(LABELS_HEADER)} columns ({','.join(LABELS_HEADER)}), "
                             f"found {len(row)}.")
        filename, split, label_text = (cell.strip() for cell in row)
        if split not in SPLITS:
            raise ValueError(f"{where}: unknown split '{split}'; the splits are {', '.join(SPLITS)}.")
        name = os.path.splitext(os.path.basename(filename))[0]
        if not name:
            raise ValueError(f"{where}: no file name.")
        if name in seen:
            raise ValueError(f"{where}: duplicate clip '{name}', already on line {seen[name]}; each clip (mixture "
                             "file name) must appear once.")
        seen[name] = line
        present = [label.strip() for label in label_text.split(LABEL_SEPARATOR) if label.strip()]
        unknown = [label for label in present if label not in index]
        if unknown:
            raise ValueError(f"{where}: unknown class '{unknown[0]}'; the known classes are {', '.join(classes)}.")
        if len(set(present)) < len(present):
            raise ValueError(f"{where}: a class is listed twice in '{label_text}'.")
        mixture_path = os.path.join(folder, filename)
        if not os.path.isfile(mixture_path):
            raise FileNotFoundError(f"{where}: the mixture file '{mixture_path}' does not exist.")
        labels = np.zeros(len(classes), np.float32)
        labels[[index[label] for label in present]] = 1.0
        sources = os.path.join(folder, SOURCES_FOLDER, name)
        source_paths = {label: os.path.join(sources, f"{label}.wav") for label in present
                        if os.path.isfile(os.path.join(sources, f"{label}.wav"))}
        background_path = os.path.join(sources, f"{BACKGROUND}.wav")
        clips.append(Clip(name=name, split=split, mixture_path=mixture_path, labels=labels,
                          source_paths=source_paths,
                          background_path=background_path if os.path.isfile(background_path) else None))
    if not clips:
        raise ValueError(f"{labels_path}: no clips listed.")
    training = [clip.labels for clip in clips if clip.split == "train"]
    if training:
        missing = [name for name, count in zip(classes, np.sum(training, axis=0)) if count == 0]
        if missing:
            raise ValueError(f"{labels_path}: class '{missing[0]}' has no training examples (no train clip is "
                             f"labelled with it): add examples or drop the class from {CLASSES_FILE}.")
    return WeakLabelSet(classes=classes, folder=folder, sample_rate=_common_sample_rate(clips, labels_path, seen),
                        clips=clips)


def _common_sample_rate(clips: list[Clip], labels_path: str, lines: dict[str, int]) -> int:
    first = audio.info(clips[0].mixture_path).sample_rate
    for clip in clips[1:]:
        rate = audio.info(clip.mixture_path).sample_rate
        if rate != first:
            raise ValueError(f"{labels_path} line {lines[clip.name]}: '{clip.mixture_path}' is at {rate} Hz but "
                             f"'{clips[0].mixture_path}' at {first} Hz; all mixtures need one sample rate.")
    return first


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class PlacedEvent:
    label: str
    onset: int  # frames into the clip
    signal: np.ndarray  # as it sounds in the clip before the clip's common scale
    ratio_db: float  # to the background over the event's own samples
    source_file: str


def _class_tracks(frames: int, events: list[PlacedEvent]) -> dict[str, np.ndarray]:
    tracks: dict[str, np.ndarray] = {}
    for event in events:
        track = tracks.setdefault(event.label, np.zeros(frames))
        track[event.onset:event.onset + len(event.signal)] += event.signal
    return tracks


def clip_scale(background: np.ndarray, events: list[PlacedEvent], always: bool) -> float:
    """`peak_scale` of the mixture these make and its sources."""
    tracks = list(_class_tracks(len(background), events).values())
    return peak_scale([background + sum(tracks), background, *tracks], always)


def _on_24_bit_grid(signal: np.ndarray) -> np.ndarray:
    """float32 values that 24-bit PCM stores exactly; sums of a few of them are exact too."""
    return (np.round(signal * _PCM_24_STEPS) / _PCM_24_STEPS).astype(np.float32)


@dataclass
class FolderWriter:
    """Writes clips into a weak-label folder, then its class list and tables (`finish`)."""

    folder: str
    classes: list[str]
    sample_rate: int
    _label_rows: list[list[str]] = field(default_factory=list)
    _event_rows: list[list[str]] = field(default_factory=list)
    _background_rows: list[list[str]] = field(default_factory=list)

    def write_clip(self, name: str, split: str, background: np.ndarray, events: list[PlacedEvent], scale: float,
                   background_is_labelled: bool = False) -> None:
        """Writes the mixture of `background` and `events` and its sources, all times `scale`.
        `background_is_labelled` adds the class `background` to the clip's labels."""
        background = _on_24_bit_grid(scale * background)
        sources = {label: _on_24_bit_grid(scale * track)
                   for label, track in _class_tracks(len(background), events).items()}
        mixture = (background.astype(np.float64) + sum(track.astype(np.float64) for track in sources.values()))
        filename = f"{MIXTURES_FOLDER}/{name}.wav"
        self._write(filename, mixture.astype(np.float32))
        for label, track in sources.items():
            self._write(f"{SOURCES_FOLDER}/{name}/{label}.wav", track)
        self._write(f"{SOURCES_FOLDER}/{name}/{BACKGROUND}.wav", background)
        labels = [label for label in self.classes
                  if label in sources or (label == BACKGROUND and background_is_labelled)]
        self._label_rows.append([filename, split, LABEL_SEPARATOR.join(labels)])
        for event in sorted(events, key=lambda event: event.onset):
            self._event_rows.append([filename, event.label, f"{event.onset / self.sample_rate:.6f}",
                                     f"{(event.onset + len(event.signal)) / self.sample_rate:.6f}",
                                     f"{event.ratio_db:.3f}", event.source_file])

    def record_background(self, name: str, source_file: str, offset_seconds: float) -> None:
        """Notes in backgrounds.csv which recording clip `name`'s background was cut from."""
        self._background_rows.append([f"{MIXTURES_FOLDER}/{name}.wav", source_file, f"{offset_seconds:.6f}"])

    def _write(self, relative_path: str, signal: np.ndarray) -> None:
        audio.write(os.path.join(self.folder, relative_path), signal, self.sample_rate, subtype="PCM_24")

    def finish(self) -> None:
        with atomic_open(os.path.join(self.folder, CLASSES_FILE), "w", encoding="utf-8") as file:
            file.write("".join(f"{name}\n" for name in self.classes))
        self._write_table(LABELS_FILE, LABELS_HEADER, self._label_rows)
        self._write_table(EVENTS_FILE, EVENTS_HEADER, self._event_rows)
        if self._background_rows:
            self._write_table(BACKGROUNDS_FILE, BACKGROUNDS_HEADER, self._background_rows)

    def _write_table(self, name: str, header: list[str], rows: list[list[str]]) -> None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        with atomic_open(os.path.join(self.folder, name), "w", encoding="utf-8") as file:
            file.write(text.getvalue())
