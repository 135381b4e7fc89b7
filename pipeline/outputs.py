"""Where outputs go: file names made from ids, paths kept inside their output folder, folders checked up front.

Ids read from files (case ids of a manifest, case ids of a metrics table) become file names. ``safe_name``
accepts only a plain file name: no path separators, no ``.``/``..``, no control characters, at most 200 bytes,
so an id can never point outside the folder it is written to; ``inside`` checks that again where each file
is written. ``check_out_dir`` finds an unusable ``--out`` before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from seg25d.pipeline.errors import InputError

__all__ = ["name_problem", "safe_name", "inside", "check_out_dir", "make_out_dir"]

# file systems hold names of 255 bytes; the rest is room for extensions, class names and temporary-file parts
MAX_NAME_BYTES = 200


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a plain file name, or None when it can."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "holds a path separator (/ or \\)"
    if name in (".", ".."):
        return "is '.' or '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def safe_name(name: str, where: str | os.PathLike | None, what: str = "case_id") -> str:
    """``name`` when it can be a plain file name; else InputError naming ``where`` (file and row)."""
    problem = name_problem(str(name))
    if problem:
        raise InputError(where, f"{what} {str(name)!r} {problem}; ids become file names, so they must be plain "
                                "names")
    return str(name)


def inside(folder: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``folder / name``, or InputError when ``name`` leads out of the (resolved) ``folder``: ``..``, absolute
    paths, links to other folders on the way. A link as the last part is fine: atomic writes replace it."""
    folder = Path(folder)
    path = folder / name
    root = folder.resolve()
    within = Path(os.path.normpath(root / name))
    if within == root or not within.parent.resolve().is_relative_to(root):
        raise InputError(path, f"is not inside the folder {folder}")
    return path


def check_out_dir(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Raise InputError when ``folder`` cannot become an output folder (a file, under a file, not writable);
    creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, f"{option} is a file, not a folder")
    parent = folder
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(folder, f"{option} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(folder, f"{option} cannot be created or written: no write permission in {parent}")
    return folder


def make_out_dir(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Create an output folder (and its parents); InputError instead of an OSError traceback."""
    folder = check_out_dir(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(folder, f"{option} cannot be created ({err.strerror or err})") from None
    return folder
