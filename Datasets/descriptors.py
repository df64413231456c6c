"""XML data set descriptors in the original project's format (SPEC section 4).

A descriptor lists the tracks of one data set and, per track, its audio files
("instruments") relative to a root folder. The root stored in the file is usually another
person's path, so callers pass their own root. `scan_folder` writes descriptors for data sets
on disk in the DSD100, MUSDB18-HQ or iKala layout, so users can describe their own data.

    python -m Datasets.descriptors DSD100 /data/DSD100 my_dsd.xml
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, replace

from lxml import etree

from Datasets.audio import info

FORMATS = ("DSD100", "MUSDB18HQ", "CCMixter", "MedleyDB", "iKala")


class DescriptorError(ValueError):
    """A descriptor file is malformed or lacks a required element."""


@dataclass(frozen=True)
class Instrument:
    relative_path: str
    name: str  # Mix, Voice, Instrumental, Bass, Drums, Other
    sample_rate: int
    channels: int
    length: float | None = None  # seconds; some descriptors omit it
    audio_format: str = "wav"
    instrument_channel: int = 3
    has_effects: bool = False
    multiple_voices: bool = False
    activations: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Track:
    title: str
    artist: str
    instruments: tuple[Instrument, ...]
    performer: str = ""
    split: str | None = None  # the optional databaseSplit: Training, Test, ...

    @property
    def name(self) -> str:
        return f"{self.artist} - {self.title}"

    def instruments_named(self, name: str) -> list[Instrument]:
        return [instrument for instrument in self.instruments if instrument.name == name]


@dataclass(frozen=True)
class Database:
    name: str
    root: str
    tracks: tuple[Track, ...]
    format: str = ""  # how tracks supply their mixture and stems (Datasets/conversions.py); defaults to the name
    source_file: str | None = None

    def __post_init__(self):
        if not self.format:
            object.__setattr__(self, "format", self.name)

    def with_root(self, root: str) -> "Database":
        return replace(self, root=root)


def _text(element, tag: str, path: str, required: bool = True) -> str | None:
    child = element.find(tag)
    if child is None or child.text is None:
        if required:
            raise DescriptorError(f"{path}, line {element.sourceline}: <{element.tag}> lacks <{tag}>")
        return None
    return child.text.strip()


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _parse_instrument(element, path: str) -> Instrument:
    length = _text(element, "length", path, required=False)
    try:
        activations = tuple((float(_text(entry, "s", path)), float(_text(entry, "e", path)))
                            for entry in element.findall("activations/entry"))
        return Instrument(
            relative_path=_text(element, "relativeFilepath", path),
            name=_text(element, "instrumentName", path),
            sample_rate=int(_text(element, "sampleRate", path)),
            channels=int(_text(element, "numChannels", path)),
            length=float(length) if length else None,
            audio_format=_text(element, "audioFormat", path, required=False) or "wav",
            instrument_channel=int(_text(element, "instrumentChannel", path, required=False) or 3),
            has_effects=_bool(_text(element, "hasEffects", path, required=False)),
            multiple_voices=_bool(_text(element, "multipleVoices", path, required=False)),
            activations=activations)
    except ValueError as error:
        if isinstance(error, DescriptorError):
            raise
        raise DescriptorError(f"{path}, line {element.sourceline}: bad number in <instrument>: {error}") from error


def parse_descriptor(path: str | os.PathLike, root: str | None = None) -> Database:
    """Reads a descriptor; `root` replaces the file's databaseFolderPath."""
    path = os.fspath(path)
    try:
        document = etree.parse(path)
    except OSError as error:
        raise DescriptorError(f"Cannot read descriptor '{path}': {error}") from error
    except etree.XMLSyntaxError as error:
        raise DescriptorError(f"{path}, line {error.lineno}: malformed XML: {error.msg}") from error
    database = document.getroot()
    if database.tag != "database":
        raise DescriptorError(f"{path}, line {database.sourceline}: root element is <{database.tag}>, "
                              "expected <database>")
    tracks = []
    for element in database.iterfind("trackList/track"):
        instruments = tuple(_parse_instrument(item, path) for item in element.iterfind("instrumentList/instrument"))
        if not instruments:
            raise DescriptorError(f"{path}, line {element.sourceline}: track has no <instrument>")
        tracks.append(Track(title=_text(element, "title", path), artist=_text(element, "artist", path) or "",
                            performer=_text(element, "performer", path, required=False) or "",
                            split=_text(element, "databaseSplit", path, required=False),
                            instruments=instruments))
    name = _text(database, "databaseName", path)
    return Database(name=name, root=root if root is not None else _text(database, "databaseFolderPath", path),
                    tracks=tuple(tracks), format=_text(database, "databaseFormat", path, required=False) or name,
                    source_file=path)


def _add(parent, tag: str, value) -> None:
    etree.SubElement(parent, tag).text = str(value).lower() if isinstance(value, bool) else str(value)


def write_descriptor(database: Database, path: str | os.PathLike) -> None:
    """Writes `database` in the descriptor format; refuses to replace an existing file."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"Descriptor '{path}' exists; choose another path or remove it first.")
    root = etree.Element("database")
    _add(root, "databaseName", database.name)
    if database.format != database.name:
        _add(root, "databaseFormat", database.format)
    _add(root, "databaseFolderPath", database.root)
    track_list = etree.SubElement(root, "trackList")
    for track in database.tracks:
        element = etree.SubElement(track_list, "track")
        _add(element, "title", track.title)
        _add(element, "artist", track.artist)
        _add(element, "performer", track.performer or track.artist)
        if track.split:
            _add(element, "databaseSplit", track.split)
        instrument_list = etree.SubElement(element, "instrumentList")
        for instrument in track.instruments:
            item = etree.SubElement(instrument_list, "instrument")
            _add(item, "relativeFilepath", instrument.relative_path)
            _add(item, "audioFormat", instrument.audio_format)
            _add(item, "sampleRate", instrument.sample_rate)
            if instrument.length is not None:
                _add(item, "length", f"{instrument.length:.6f}")
            _add(item, "numChannels", instrument.channels)
            _add(item, "instrumentChannel", instrument.instrument_channel)
            _add(item, "instrumentName", instrument.name)
            _add(item, "hasEffects", instrument.has_effects)
            _add(item, "multipleVoices", instrument.multiple_voices)
            if instrument.activations:
                activations = etree.SubElement(item, "activations")
                for start, end in instrument.activations:
                    entry = etree.SubElement(activations, "entry")
                    _add(entry, "s", start)
                    _add(entry, "e", end)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    etree.ElementTree(root).write(path, pretty_print=True, xml_declaration=False, encoding="utf-8")


_STEM_NAMES = {"mixture": "Mix", "vocals": "Voice", "bass": "Bass", "drums": "Drums", "other": "Other"}
_SPLIT_FOLDERS = {"DSD100": {"Dev": "Training", "Test": "Test"},
                  "MUSDB18HQ": {"train": "Training", "test": "Test"}}


def _instrument(root: str, relative_path: str, name: str) -> Instrument:
    sample = info(os.path.join(root, relative_path))
    return Instrument(relative_path=relative_path, name=name, sample_rate=sample.sample_rate,
                      channels=sample.channels, length=sample.duration,
                      audio_format=os.path.splitext(relative_path)[1].lstrip(".").lower())


def _artist_and_title(folder: str) -> tuple[str, str]:
    """'051 - AM Contra - Heart Peripheral' or 'AM Contra - Heart Peripheral' -> (artist, title)."""
    parts = [part.strip() for part in folder.split(" - ")]
    if len(parts) > 1 and re.fullmatch(r"\d+", parts[0]):
        parts = parts[1:]
    return (parts[0], " - ".join(parts[1:])) if len(parts) > 1 else ("", parts[0])


def _scan_stem_folders(root: str, layout: str) -> list[Track]:
    tracks = []
    for split_folder, split in _SPLIT_FOLDERS[layout].items():
        mixture_base = os.path.join("Mixtures", split_folder) if layout == "DSD100" else split_folder
        stems_base = os.path.join("Sources", split_folder) if layout == "DSD100" else split_folder
        if not os.path.isdir(os.path.join(root, mixture_base)):
            continue
        for folder in sorted(os.listdir(os.path.join(root, mixture_base))):
            instruments = []
            for stem, name in _STEM_NAMES.items():
                base = mixture_base if stem == "mixture" else stems_base
                relative = os.path.join(base, folder, f"{stem}.wav")
                if os.path.exists(os.path.join(root, relative)):
                    instruments.append(_instrument(root, relative, name))
            names = {instrument.name for instrument in instruments}
            if not {"Mix", "Voice"} <= names:
                raise DescriptorError(f"Track folder '{folder}' under '{root}' needs mixture.wav and vocals.wav")
            artist, title = _artist_and_title(folder)
            tracks.append(Track(title=title, artist=artist, performer=artist, split=split,
                                instruments=tuple(instruments)))
    return tracks


def _scan_ikala(root: str) -> list[Track]:
    folder = "Wavfile"
    files = sorted(name for name in os.listdir(os.path.join(root, folder)) if name.lower().endswith(".wav"))
    return [Track(title=os.path.splitext(name)[0], artist="iKala", performer="iKala",
                  instruments=(_instrument(root, os.path.join(folder, name), "Mix"),)) for name in files]


def scan_folder(root: str, layout: str, name: str | None = None) -> Database:
    """Describes a data set folder in the DSD100, MUSDB18HQ or iKala layout."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Data set folder '{root}' does not exist.")
    if layout in _SPLIT_FOLDERS:
        tracks = _scan_stem_folders(root, layout)
    elif layout == "iKala":
        tracks = _scan_ikala(root)
    else:
        raise ValueError(f"Cannot scan layout '{layout}'; scannable layouts: DSD100, MUSDB18HQ, iKala")
    if not tracks:
        raise DescriptorError(f"No tracks found under '{root}' in the {layout} layout.")
    return Database(name=name or layout, root=os.path.abspath(root), tracks=tuple(tracks), format=layout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write an XML descriptor for a data set folder.")
    parser.add_argument("layout", choices=["DSD100", "MUSDB18HQ", "iKala"])
    parser.add_argument("root", help="the data set's root folder")
    parser.add_argument("output", help="descriptor file to write (never overwritten)")
    parser.add_argument("--name", help="databaseName to record (default: the layout)")
    arguments = parser.parse_args(argv)
    database = scan_folder(arguments.root, arguments.layout, arguments.name)
    write_descriptor(database, arguments.output)
    print(f"Wrote {len(database.tracks)} tracks of {database.name} to {arguments.output}")


if __name__ == "__main__":
    main()
