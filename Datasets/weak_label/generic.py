"""The generic recipe: a folder of labelled event recordings plus background recordings to
weakly labelled mixtures.

    data_root/events/<class>/*.wav           isolated events of each class (any rate, any channels)
    data_root/events/<class>/<group>/*.wav   events that share a split (takes of one source: one
                                             drum kit, one voice)
    data_root/backgrounds/*.wav              recordings without events of those classes
    data_root/backgrounds/<group>/*.wav      backgrounds that share a split (pieces of one recording)

The event files of each class and the background files are split into train, valid and test,
each subfolder whole (so test events and backgrounds, and the sources they were recorded from,
are never heard in training). A clip is a background excerpt at
a random offset with `events_per_clip` events of different classes (classes and files used about
equally often), each cropped to the room it has, placed at a random onset and scaled to an
event-to-background ratio drawn from `ebr_db`. A clip that would clip is scaled down as a whole.

With `solo_training_clips` every training mixture with events is followed by two more clips at
its scale: `<clip>_events`, its events alone (labelled with their classes), and
`<clip>_background`, its background alone (no labels). The labels stay weak, but they now tell
the model what each class sounds like without a background and what a background sounds like
without events, as the solo clips of Kong et al.'s TUT set do.

`training_event_semitones` and `training_event_seconds` vary the training events
(`mixing.EventVariation`): drums of other sizes, choked cymbals, cut voices, so that a kit or a
voice never heard in training is less of a surprise. Validation and test events stay as recorded.

`balanced_training_groups` draws each class's training events by subfolder first: a kit with
one take of a crash is heard as often as one with six, so training hears more kinds of each
class rather than more takes of a few. Validation and test clips stay those without it.
"""
from __future__ import annotations

import os

import numpy as np

from Datasets.weak_label.folder import BACKGROUND, SPLITS, FolderWriter, PlacedEvent, check_class_names, clip_scale
from Datasets.weak_label.mixing import (BalancedDraw, EventVariation, GroupedDraw, background_excerpt,
                                        check_backgrounds, draw_events, gain_for_ratio, split_files, wav_files)
from Datasets.weak_label.options import GenericOptions
from Sample import Sample

EVENTS_FOLDER = "events"
BACKGROUNDS_FOLDER = "backgrounds"


def _scan(data_root: str) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[str]]]:
    """The split units (`_split_units`) of each class's events and of the backgrounds under `data_root`."""
    events_folder, backgrounds_folder = (os.path.join(data_root, name) for name in (EVENTS_FOLDER, BACKGROUNDS_FOLDER))
    for folder in (events_folder, backgrounds_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"'{folder}' does not exist: the generic recipe reads "
                                    f"{EVENTS_FOLDER}/<class>/*.wav and {BACKGROUNDS_FOLDER}/*.wav under data_root.")
    classes = sorted(name for name in os.listdir(events_folder)
                     if os.path.isdir(os.path.join(events_folder, name)) and not name.startswith("."))
    if not classes:
        raise ValueError(f"'{events_folder}' has no class folders: put each class's files in {EVENTS_FOLDER}/<class>/.")
    if BACKGROUND in classes:
        raise ValueError(f"'{os.path.join(events_folder, BACKGROUND)}': the class name '{BACKGROUND}' is reserved for "
                         f"the background reference; put background recordings in '{backgrounds_folder}'.")
    check_class_names(classes, f"The class folders in '{events_folder}'")
    event_units = {name: _split_units(os.path.join(events_folder, name)) for name in classes}
    return event_units, _split_units(backgrounds_folder)


def _split_units(folder: str) -> dict[str, list[str]]:
    """The .wav files of `folder` by what the split keeps together, named by the file or the
    subfolder: each file directly in `folder` alone, the files of each subfolder as one unit
    (takes of one drum or one voice sound alike, so one of them in training would give away
    the others in the test)."""
    units = {path: [path] for path in wav_files(folder)}
    for name in sorted(os.listdir(folder)):
        subfolder = os.path.join(folder, name)
        files = wav_files(subfolder) if os.path.isdir(subfolder) and not name.startswith(".") else []
        if files:
            units[subfolder] = files
    return units


def _split(units: dict[str, list[str]], seed: int, what: str) -> dict[str, dict[str, list[str]]]:
    """`split_files` over the units (with only files, the split of the files themselves): the
    units of each split with their files."""
    if any(os.path.isdir(unit) for unit in units):
        what += ", counting each subfolder as one file,"
    by_split = split_files(list(units), seed, what)
    return {split: {unit: units[unit] for unit in chosen} for split, chosen in by_split.items()}


def _files(units: dict[str, list[str]]) -> list[str]:
    return sorted(path for files in units.values() for path in files)


def build(folder: str, data_root: str, seed: int, options: GenericOptions) -> None:
    event_units, background_units = _scan(data_root)
    events_folder = os.path.join(data_root, EVENTS_FOLDER)
    classes = sorted(event_units)
    if options.events_per_clip[1] > len(classes):
        raise ValueError(f"Option 'events_per_clip' asks for up to {options.events_per_clip[1]} events of different "
                         f"classes in a clip, but '{data_root}' has {len(classes)} classes.")
    events_by_split = {name: _split(units, seed, f"Class '{name}' ({os.path.join(events_folder, name)})")
                       for name, units in event_units.items()}
    backgrounds_by_split = _split(background_units, seed,
                                  f"The background folder '{os.path.join(data_root, BACKGROUNDS_FOLDER)}'")
    background_files = sorted(path for files in background_units.values() for path in files)
    backgrounds = check_backgrounds(background_files, options.clip_seconds, options.short_background)
    headers = {sample.path: sample for sample in backgrounds}
    writer = FolderWriter(folder, classes, options.sample_rate)
    for split in SPLITS:
        write_split(writer, split, {name: units[split] for name, units in events_by_split.items()},
                    [headers[path] for path in _files(backgrounds_by_split[split])], data_root, seed, options)
    writer.finish()


def write_split(writer: FolderWriter, split: str, event_units: dict[str, dict[str, list[str]]],
                backgrounds: list[Sample], data_root: str, seed: int, options: GenericOptions) -> None:
    """Writes the split's clips: one generator spreads classes, event files (or, for training
    with `balanced_training_groups`, each class's subfolders and then their files) and
    backgrounds evenly over them, each clip's own generator draws the rest (offsets, onsets,
    ratios)."""
    split_number = SPLITS.index(split)
    planner = np.random.default_rng([seed, split_number])
    class_draw = BalancedDraw(sorted(event_units), planner)
    if split == "train" and options.balanced_training_groups:
        file_draws = {name: GroupedDraw(units, planner) for name, units in event_units.items()}
    else:
        file_draws = {name: BalancedDraw(_files(units), planner) for name, units in event_units.items()}
    background_draw = BalancedDraw(backgrounds, planner)
    clip_frames = int(round(options.clip_seconds * options.sample_rate))
    # unset options draw nothing, so the clips are those of a recipe without them
    variation = (EventVariation(options.training_event_semitones, options.training_event_seconds)
                 if split == "train" else None)
    for number in range(options.clips_per_split[split]):
        rng = np.random.default_rng([seed, split_number, number])
        background_sample = background_draw.draw(1)[0]
        background, offset = background_excerpt(background_sample, clip_frames, options.sample_rate, rng)
        background_file = os.path.relpath(background_sample.path, data_root)
        events = []
        if rng.random() >= options.empty_clip_probability:
            count = int(rng.integers(options.events_per_clip[0], options.events_per_clip[1] + 1))
            for label, path, signal, onset in draw_events(class_draw, file_draws, count, clip_frames,
                                                          options.sample_rate, options.overlap, rng, variation):
                ratio = float(rng.uniform(*options.ebr_db))
                gain = gain_for_ratio(signal, background[onset:onset + len(signal)], ratio,
                                      f"Background '{background_sample.path}'")
                events.append(PlacedEvent(label=label, onset=onset, signal=gain * signal, ratio_db=ratio,
                                          source_file=os.path.relpath(path, data_root)))
        name, scale = f"{split}_{number:05d}", clip_scale(background, events, always=False)
        writer.write_clip(name, split, background, events, scale)
        writer.record_background(name, background_file, offset)
        if options.solo_training_clips and split == "train" and events:
            writer.write_clip(f"{name}_events", split, np.zeros_like(background), events, scale)
            writer.write_clip(f"{name}_background", split, background, [], scale)
            writer.record_background(f"{name}_background", background_file, offset)
