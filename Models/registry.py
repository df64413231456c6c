"""Separator architectures by name. Adding one is a module plus one line in `ARCHITECTURES`:

    # Models/my_separator.py
    def build(num_bins, source_names, **arguments) -> keras.Model: ...   # (input_bins, frames, 1) -> {source: ...}
    def geometry(num_bins, **arguments): ...   # .grid and .windows(frames) -> Datasets.windows.WindowShapes

    # here
    ARCHITECTURES = {..., "my_separator": Architecture(my_separator.build, my_separator.geometry)}

then `python Training.py with architecture=my_separator 'architecture_options={"depth": 3}'`
(`config_keys` names Training.py keys that are arguments too, as num_layers is the U-Net's).
A network maps log1p mixture magnitudes to one log1p magnitude per source over the centre
of its input window; `geometry` says how large the input window must be for a number of
output frames, and by how many frames windows may shift (`grid`) without changing the result.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import keras

from Models import separator as unet


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., keras.Model]  # build(num_bins=, source_names=, **arguments)
    geometry: Callable[..., object]  # geometry(num_bins=, **arguments): .grid, .windows(frames)
    config_keys: tuple[str, ...] = ()  # Training.py keys that are arguments; the rest come from architecture_options


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(unet.build_separator, unet.geometry, ("num_layers", "base_filters")),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown separator architecture {name!r} (config key `architecture`); registered: "
                         f"{', '.join(sorted(ARCHITECTURES))}. A new one is a module plus a line in "
                         "Models/registry.py (README, 'Add a model').")
    return ARCHITECTURES[name]


@dataclass(frozen=True)
class SeparatorSpec:
    """Everything that rebuilds a separator network: stored in every checkpoint."""

    architecture: str
    num_bins: int
    source_names: tuple[str, ...]
    arguments: dict = field(default_factory=dict)

    def build(self) -> keras.Model:
        return architecture(self.architecture).build(num_bins=self.num_bins, source_names=self.source_names,
                                                     **self.arguments)

    def geometry(self):
        return architecture(self.architecture).geometry(num_bins=self.num_bins, **self.arguments)

    def as_dict(self) -> dict:
        return {**asdict(self), "source_names": list(self.source_names)}

    @classmethod
    def from_config(cls, config: dict, num_bins: int) -> "SeparatorSpec":
        """The separator a Training.py config asks for."""
        name = config["architecture"]
        arguments = {key: config[key] for key in architecture(name).config_keys}
        return cls(name, num_bins, tuple(config["source_names"]), {**arguments, **config["architecture_options"]})

    @classmethod
    def from_dict(cls, description: dict) -> "SeparatorSpec":
        return cls(description["architecture"], description["num_bins"], tuple(description["source_names"]),
                   dict(description.get("arguments", {})))
