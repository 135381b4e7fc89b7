"""Atomic file writes: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from seg25d.pipeline.errors import InputError


def full_suffix(path: str | os.PathLike) -> str:
    """The extension including compound ones: ``a.nii.gz`` -> ``.nii.gz``, ``b.nrrd`` -> ``.nrrd``."""
    name = Path(path).name
    for compound in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(compound):
            return name[-len(compound):]
    return Path(name).suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same extension; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a reader
    never sees a half-written file. Parent folders are created. A folder at ``path``, or a file where a
    parent folder should be, is an InputError.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "output name exists as a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(path, "cannot be written: a file stands where its folder should be") from None
    tmp = _create_temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _create_temp_sibling(path: Path) -> Path:
    """Create an empty hidden ``.<stem>.<random>.tmp<suffix>`` beside ``path``.

    Unlike ``tempfile.mkstemp`` (always mode 0600) the file gets the usual ``0666 & ~umask`` permissions,
    so the renamed result is as readable as any other file the user writes.
    """
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    for _ in range(100):
        tmp = path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer of ``path`` left beside it (``.<stem>.<8 hex>.tmp<suffix>`` files
    of :func:`atomic_path`, ``.<name>.<random>.tmp`` folders of detached-header writes); returns them.

    Call it when a job starts on ``path``, not while another process may be writing it.
    """
    path = Path(path)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    patterns = (re.compile(rf"\.{re.escape(stem)}\.[0-9a-f]{{8}}\.tmp{re.escape(suffix)}"),
                re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp"))
    if not path.parent.is_dir():
        return []
    removed = []
    for item in path.parent.iterdir():
        if not any(p.fullmatch(item.name) for p in patterns):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``null``)."""
    write_text(path, json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Atomically write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _nan_to_none(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
