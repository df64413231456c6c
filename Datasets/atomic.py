"""Writing outputs safely: atomic files with ordinary permissions, in folders that can exist.

Readers see the old file or the complete new one, never half of it. A finished file gets the
permissions any new file would (0666 less the umask), not the 0600 of a private temporary file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any worker thread
    # exists, because two threads doing this at once could create files with the wrong mask.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def temporary_file(folder: str, prefix: str = ".", suffix: str = ".tmp") -> str:
    """A new empty file in `folder` (created if need be) with the permissions of an ordinary new
    file, to be renamed over its destination once complete."""
    os.makedirs(folder, exist_ok=True)
    handle, path = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(handle, 0o666 & ~_UMASK)
    os.close(handle)
    return path


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_arguments) -> Iterator[IO]:
    """A temporary file beside `path` (its folder is created), renamed to `path` when the block
    ends without error and removed otherwise."""
    temporary = temporary_file(os.path.dirname(os.path.abspath(path)))
    try:
        with open(temporary, mode, **open_arguments) as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def check_folder_creatable(path: str | os.PathLike, key: str) -> None:
    """Raises NotADirectoryError naming config key `key`, the folder and the part of its path
    that is a file, when the folder cannot be created for that reason."""
    folder = os.path.abspath(os.fspath(path))
    part = folder
    while not os.path.exists(part):
        part = os.path.dirname(part)
    if not os.path.isdir(part):
        raise NotADirectoryError(f"Config key `{key}`: cannot use folder '{path}', because '{part}' is a file, "
                                 f"not a folder. Choose another {key}, or move that file away.")
