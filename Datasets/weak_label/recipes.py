"""`prepare`: runs a recipe into a cache folder unless the folder already holds its result.

The recipe name, its data root, seed and options (defaults filled in) are written last to
recipe.json, so a folder with a matching recipe.json is complete and reused, and an
interrupted one is cleared and made again. Only the names a recipe writes are ever removed, and
a folder holding anything else is refused: nothing a user put there is overwritten. Runs that
ask for the same folder at once (two benchmark processes, a grid of trainings) make it one after
the other, not into each other.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict

from Datasets.atomic import atomic_open
from Datasets.weak_label import dcase2013, generic, synthetic, tut
from Datasets.weak_label.folder import (BACKGROUNDS_FILE, CLASSES_FILE, EVENTS_FILE, LABELS_FILE, MIXTURES_FOLDER,
                                       SOURCES_FOLDER)
from Datasets.weak_label.options import DemoOptions, Dcase2013Options, GenericOptions, TutOptions, make_options

FORMAT_VERSION = 3  # bump when a recipe's output changes, so cached folders are made again
MANIFEST_FILE = "recipe.json"
LOCK_FILE = ".recipe.lock"  # hidden, so _clear leaves it
RECIPES = {"demo": (DemoOptions, synthetic.build), "generic": (GenericOptions, generic.build),
           "tut": (TutOptions, tut.build), "dcase2013": (Dcase2013Options, dcase2013.build)}
_WRITTEN_NAMES = (MANIFEST_FILE, CLASSES_FILE, LABELS_FILE, EVENTS_FILE, BACKGROUNDS_FILE, MIXTURES_FOLDER,
                  SOURCES_FOLDER, synthetic.RAW_FOLDER)


def _manifest(recipe: str, data_root: str | None, seed: int, options: dict) -> dict:
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe '{recipe}'; the recipes are {', '.join(RECIPES)}.")
    kind, _ = RECIPES[recipe]
    if recipe == "demo" and data_root is not None:
        raise ValueError("The demo recipe synthesises its data: leave data_root unset.")
    if recipe != "demo" and data_root is None:
        raise ValueError(f"The {recipe} recipe needs data_root (see Datasets/weak_label/{recipe}.py for the layout).")
    resolved = asdict(make_options(recipe, kind, options))
    manifest = {"format_version": FORMAT_VERSION, "recipe": recipe, "seed": int(seed),
                "data_root": None if data_root is None else os.path.abspath(data_root), "options": resolved}
    return json.loads(json.dumps(manifest))  # tuples as lists, as read back from recipe.json


def cache_folder(cache_dir: str, recipe: str, data_root: str | None = None, seed: int = 0, **options) -> str:
    """`<cache_dir>/weak_label/<recipe>-<hash of the parameters>`: one folder per parameter set."""
    manifest = _manifest(recipe, data_root, seed, options)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    return os.path.join(cache_dir, "weak_label", f"{recipe}-{digest}")


def _holds(folder: str, manifest: dict) -> bool:
    try:
        with open(os.path.join(folder, MANIFEST_FILE), encoding="utf-8") as file:
            return json.load(file) == manifest
    except (OSError, ValueError):
        return False


def is_complete(folder: str, recipe: str, data_root: str | None = None, seed: int = 0, **options) -> bool:
    """Whether `folder` holds the finished result of this recipe with these parameters."""
    return _holds(folder, _manifest(recipe, data_root, seed, options))


def _clear(folder: str) -> None:
    """Removes an earlier or interrupted result, recipe.json first; refuses a folder with other things in it."""
    foreign = sorted(name for name in os.listdir(folder) if name not in _WRITTEN_NAMES and not name.startswith("."))
    if foreign:
        raise ValueError(f"'{folder}' holds files that no recipe writes ({', '.join(foreign[:5])}); prepare() will "
                         "not overwrite them: choose an empty folder or a cache folder (see cache_folder()).")
    for name in _WRITTEN_NAMES:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


@contextmanager
def _exclusive(folder: str):
    """Holds `folder`'s lock, waiting while another process (or thread) holds it: one that found
    the folder unmade would otherwise clear the files another is writing, or read them half-made."""
    with open(os.path.join(folder, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def prepare(recipe: str, out_dir: str, data_root: str | None = None, seed: int = 0, **options) -> str:
    """Writes the weak-label folder of `recipe` into `out_dir` unless it already holds it with
    these parameters; returns the folder. Recipes: "demo", "generic", "tut", "dcase2013"; their
    options are documented in Datasets/weak_label/options.py."""
    manifest = _manifest(recipe, data_root, seed, options)
    out_dir = os.path.abspath(out_dir)
    if _holds(out_dir, manifest):
        return out_dir
    if data_root is not None and not os.path.isdir(data_root):
        raise FileNotFoundError(f"data_root '{data_root}' is not a folder.")
    os.makedirs(out_dir, exist_ok=True)
    with _exclusive(out_dir):
        if _holds(out_dir, manifest):  # made by another run while this one waited
            return out_dir
        _clear(out_dir)
        kind, build = RECIPES[recipe]
        build(out_dir, manifest["data_root"], manifest["seed"], kind(**manifest["options"]))
        with atomic_open(os.path.join(out_dir, MANIFEST_FILE), "w", encoding="utf-8") as file:
            json.dump(manifest, file, indent=2, sort_keys=True)
    return out_dir
