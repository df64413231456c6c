"""Small checks of Training.py config values, shared by the methods' `check_config`."""
from __future__ import annotations

import math
from collections.abc import Iterable


def require_non_negative_numbers(config: dict, keys: Iterable[str]) -> None:
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"Config key `{key}` must be a non-negative number, got {value!r}.")


def require_positive_integers(config: dict, keys: Iterable[str]) -> None:
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Config key `{key}` must be a positive integer, got {value!r}.")


def require_choices(config: dict, choices: dict[str, Iterable]) -> None:
    for key, allowed in choices.items():
        if config[key] not in tuple(allowed):
            raise ValueError(f"Config key `{key}` must be one of {tuple(allowed)}, got {config[key]!r}.")


def is_finite_non_negative(value) -> bool:
    """Whether `value` is a number (not a bool) in [0, infinity)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf


def is_share(value) -> bool:
    """Whether `value` is a number (not a bool) in [0, 1]: a probability, a rate or a weight."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def is_odd_window(value, axes: int) -> bool:
    """Whether `value` is a list of `axes` positive odd integers: the sizes of a centred window."""
    return isinstance(value, (list, tuple)) and len(value) == axes and all(
        not isinstance(size, bool) and isinstance(size, int) and size >= 1 and size % 2 == 1 for size in value)


def require_odd_window(config: dict, key: str, axes: str) -> None:
    """A list of positive odd integers, one per axis named in `axes` ("frames, mel bands")."""
    value = config[key]
    if not is_odd_window(value, len(axes.split(", "))):
        raise ValueError(f"Config key `{key}` must be [{axes}]: positive odd integers, the sizes of a centred "
                         f"window (1: none), got {value!r}.")
