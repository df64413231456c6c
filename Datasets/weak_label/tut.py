"""TUT Rare Sound Events 2017 (development set) to weakly labelled clips, after Kong et al. 2018.

Layout read, as the dataset's README and TUT's mixture synthesiser describe it; `data_root` is
the dataset folder (holding data/source_data/), or source_data/ itself:

    source_data/cv_setup/events_devtrain.yaml, events_devtest.yaml
        {<class>: [{audio_filename: <file>, segment: [start, end], ...}, ...]}
        the annotated event: seconds [start, end) of source_data/events/<class>/<file>
    source_data/cv_setup/bgs_devtrain.yaml, bgs_devtest.yaml
        [{filepath: <path>, classname: <scene>, ...}, ...]
        a background recording: source_data/bgs/<path> (e.g. audio/a001_0_30.wav)

Each annotated event is cut out, cropped to the clip if longer, placed at a random onset in a
background excerpt (random offset) and scaled to the event-to-background ratio `ebr_db` (0 dB:
RMS over the event's samples against the background's over the same samples); mixture and
sources are then brought to a common peak by one factor. Backgrounds are taken in a shuffled
order, reused when there are more events than backgrounds. devtrain gives train and valid (a
`valid_fraction` of its event recordings, per class, and of its backgrounds, held out whole, so
valid events are never heard in training); devtest gives test.

With `solo_clips` (default, as in Kong's code) each mixture's event alone and background alone
are clips too, in every split, and the class `background` labels every clip with background in
it; its reference is sources/<clip>/background.wav.

Changes to Kong's code: the event is not always centred; the ratio is measured against the
background under the event, not the whole excerpt, and after cropping, not before; solo clips
keep the mixture's scale instead of each being normalised to its own peak; backgrounds are
reused instead of running out; a validation split is held out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import yaml

from Datasets.weak_label.folder import BACKGROUND, FolderWriter, PlacedEvent, check_class_names, clip_scale
from Datasets.weak_label.mixing import background_excerpt, check_backgrounds, crop, gain_for_ratio, read_event
from Datasets.weak_label.options import TutOptions

CV_SETUP_FOLDER = "cv_setup"


@dataclass(frozen=True)
class _Event:
    label: str
    path: str
    recording: str  # the annotated file; events of one recording stay in one split
    start: float  # seconds
    end: float


def _source_data(data_root: str) -> str:
    for candidate in (os.path.join(data_root, "data", "source_data"), os.path.join(data_root, "source_data"),
                      data_root):
        if os.path.isdir(os.path.join(candidate, CV_SETUP_FOLDER)):
            return candidate
    raise FileNotFoundError(f"No {CV_SETUP_FOLDER}/ folder in '{data_root}', its data/source_data/ or source_data/: "
                            "data_root must be the TUT Rare Sound Events 2017 development set.")


def _read_yaml(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}' does not exist: the TUT recipe reads the cross-validation setup there.")
    with open(path, encoding="utf-8") as file:
        try:
            return yaml.safe_load(file)
        except yaml.YAMLError as error:
            raise ValueError(f"'{path}' is not valid YAML: {error}") from error


def _events(source_data: str, subset: str) -> list[_Event]:
    path = os.path.join(source_data, CV_SETUP_FOLDER, f"events_{subset}.yaml")
    content = _read_yaml(path)
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a mapping from class name to a list of events.")
    check_class_names(sorted(content), path)
    if BACKGROUND in content:
        raise ValueError(f"{path}: the class name '{BACKGROUND}' is reserved for the background reference.")
    events = []
    for label in sorted(content):
        entries = content[label]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: class '{label}' needs a list of events.")
        for number, entry in enumerate(entries, start=1):
            where = f"{path}, class '{label}', event {number}"
            try:
                filename = str(entry["audio_filename"])
                start, end = (float(value) for value in entry["segment"])
            except (TypeError, KeyError, ValueError) as error:
                raise ValueError(f"{where}: expected 'audio_filename' and 'segment: [start, end]' in seconds, "
                                 f"found {entry!r}.") from error
            if not 0 <= start < end:
                raise ValueError(f"{where}: the segment [{start:g}, {end:g}] needs 0 <= start < end.")
            event_path = os.path.join(source_data, "events", label, filename)
            if not os.path.isfile(event_path):
                raise FileNotFoundError(f"{where}: the event file '{event_path}' does not exist.")
            events.append(_Event(label=label, path=event_path, recording=os.path.join(label, filename), start=start,
                                 end=end))
    return events


def _backgrounds(source_data: str, subset: str) -> list[str]:
    path = os.path.join(source_data, CV_SETUP_FOLDER, f"bgs_{subset}.yaml")
    content = _read_yaml(path)
    if not isinstance(content, list) or not content:
        raise ValueError(f"{path}: expected a list of background recordings.")
    paths = []
    for number, entry in enumerate(content, start=1):
        if not isinstance(entry, dict) or "filepath" not in entry:
            raise ValueError(f"{path}, background {number}: expected 'filepath', found {entry!r}.")
        background_path = os.path.join(source_data, "bgs", str(entry["filepath"]))
        if not os.path.isfile(background_path):
            raise FileNotFoundError(f"{path}, background {number}: the file '{background_path}' does not exist.")
        paths.append(background_path)
    return paths


def _held_out(keys: list[str], fraction: float, rng: np.random.Generator, what: str) -> set[str]:
    """A random `fraction` (at least one) of the distinct keys, never all of them."""
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        raise ValueError(f"{what} has {len(distinct)} recording(s); at least 2 are needed to hold some out for "
                         "validation.")
    count = min(len(distinct) - 1, max(1, int(round(fraction * len(distinct)))))
    return {distinct[index] for index in rng.permutation(len(distinct))[:count]}


def _splits(source_data: str, seed: int, valid_fraction: float) -> dict[str, tuple[list[_Event], list[str]]]:
    """Events and backgrounds of train, valid and test."""
    devtrain, devtest = _events(source_data, "devtrain"), _events(source_data, "devtest")
    train_classes = sorted({event.label for event in devtrain})
    test_classes = sorted({event.label for event in devtest})
    if train_classes != test_classes:
        raise ValueError(f"The classes of events_devtrain.yaml ({', '.join(train_classes)}) and events_devtest.yaml "
                         f"({', '.join(test_classes)}) in '{os.path.join(source_data, CV_SETUP_FOLDER)}' differ.")
    rng = np.random.default_rng(seed)
    held = set()
    for label in train_classes:
        held |= _held_out([event.recording for event in devtrain if event.label == label], valid_fraction, rng,
                          f"Class '{label}' in events_devtrain.yaml")
    train_backgrounds = _backgrounds(source_data, "devtrain")
    held_backgrounds = _held_out(train_backgrounds, valid_fraction, rng, "bgs_devtrain.yaml")
    return {"train": ([event for event in devtrain if event.recording not in held],
                      [path for path in train_backgrounds if path not in held_backgrounds]),
            "valid": ([event for event in devtrain if event.recording in held], sorted(held_backgrounds)),
            "test": (devtest, _backgrounds(source_data, "devtest"))}


def build(folder: str, data_root: str, seed: int, options: TutOptions) -> None:
    source_data = _source_data(data_root)
    splits = _splits(source_data, seed, options.valid_fraction)
    classes = sorted({event.label for event in splits["test"][0]}) + ([BACKGROUND] if options.solo_clips else [])
    all_backgrounds = sorted({path for _, backgrounds in splits.values() for path in backgrounds})
    headers = {sample.path: sample
               for sample in check_backgrounds(all_backgrounds, options.clip_seconds, options.short_background)}
    writer = FolderWriter(folder, classes, options.sample_rate)
    clip_frames = int(round(options.clip_seconds * options.sample_rate))
    for split_number, (split, (events, backgrounds)) in enumerate(splits.items()):
        background_order = [backgrounds[index] for index in np.random.default_rng([seed, split_number]).permutation(
            len(backgrounds))]
        for number, event in enumerate(events):
            rng = np.random.default_rng([seed, split_number, number])
            background_sample = headers[background_order[number % len(background_order)]]
            background, offset = background_excerpt(background_sample, clip_frames, options.sample_rate, rng)
            background_file = os.path.relpath(background_sample.path, source_data)
            signal = read_event(event.path, options.sample_rate, event.start, event.end)
            signal = crop(signal, clip_frames, options.sample_rate)
            onset = int(rng.integers(0, clip_frames - len(signal) + 1))
            ratio = float(rng.uniform(*options.ebr_db))
            gain = gain_for_ratio(signal, background[onset:onset + len(signal)], ratio,
                                  f"Background '{background_sample.path}'")
            placed = PlacedEvent(label=event.label, onset=onset, signal=gain * signal, ratio_db=ratio,
                                 source_file=os.path.relpath(event.path, source_data))
            scale = clip_scale(background, [placed], always=True)
            name = f"{split}_{number:05d}"
            writer.write_clip(name, split, background, [placed], scale, background_is_labelled=options.solo_clips)
            writer.record_background(name, background_file, offset)
            if options.solo_clips:
                writer.write_clip(f"{name}_event", split, np.zeros(clip_frames), [placed], scale)
                writer.write_clip(f"{name}_{BACKGROUND}", split, background, [], scale, background_is_labelled=True)
                writer.record_background(f"{name}_{BACKGROUND}", background_file, offset)
    writer.finish()
