"""Preprocess once, to disk: every case resampled and normalised into memory-mapped ``.npy`` files.

Layout: ``CACHE/<plan>/`` holds, per case, ``<id>.image.npy`` (float32 ``(C, D, H, W)``), ``<id>.masks.npy``
(bool ``(K, D, H, W)``, absent for unlabelled cases) and ``<id>.json`` (shapes, geometry, and the fingerprint of
its source files). ``<plan>`` hashes what the arrays depend on: the :class:`Preprocessing` (its fitted statistics
included) and the label declaration, so a changed plan writes a new folder. A case whose source files changed
(path, size or modification time), or whose files are missing, truncated or of the wrong shape, is rebuilt with a
warning. Arrays are written before the index, each through a temporary file renamed into place, so a killed
run leaves no entry half-written.

Why ``.npy``: numpy maps it with no dependency, a slice lies at a known offset (one read, no decoding), and the
format is stable and documented; chunked stores (zarr, HDF5) would add a dependency and compression (CPU in the
loader) for volumes that are read whole or a slice at a time.

:class:`CachedCase` stands in for :class:`~seg25d.pipeline.data.Case`: its ``image`` and ``masks`` open the
files memory-mapped on each access, so a process holds only the pages of the batch it is making, and resident
memory does not grow with the number of cases. Batches read instead (:meth:`CachedCase.slices`,
:meth:`CachedCase.arrays`): a read costs less than mapping a file for a slice, and less than faulting in a mapped
volume one page at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from seg25d.pipeline.atomic import atomic_path, write_json
from seg25d.pipeline.data import Task, load_cases, split_manifest, task_for
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import VolumeMeta
from seg25d.pipeline.preprocess import Preprocessing

__all__ = ["CachedCase", "read_slices", "cache_cases", "cache_folder", "plan_key", "native_spacings", "prepare_data",
           "default_cache_dir", "resolve_cache_dir", "CacheStats"]

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the arrays' meaning changes


def default_cache_dir() -> Path:
    """``$SEG25D_CACHE``, else ``$XDG_CACHE_HOME/seg25d``, else ``~/.cache/seg25d``."""
    if os.environ.get("SEG25D_CACHE"):
        return Path(os.environ["SEG25D_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seg25d"


def resolve_cache_dir(setting: str) -> Path | None:
    """``data.cache``: ``""`` the default folder, ``"off"`` no cache (None), anything else a folder."""
    if setting == "off":
        return None
    return Path(setting).expanduser() if setting else default_cache_dir()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _plan(preprocessing: Preprocessing, task: Task, load_options: dict) -> dict:
    return {"format": FORMAT, "preprocessing": preprocessing.to_dict(), "labels": task.spec.to_dict(),
            "loading": load_options}


def plan_key(preprocessing: Preprocessing, task: Task, load_options: dict | None = None) -> str:
    """The hash naming a plan's folder: everything the cached arrays depend on except the source files."""
    return _digest(_plan(preprocessing, task, load_options or {}))


def cache_folder(root: str | os.PathLike, preprocessing: Preprocessing, task: Task,
                 load_options: dict | None = None) -> Path:
    return Path(root) / plan_key(preprocessing, task, load_options)


def _fingerprint(row) -> list:
    """Every existing file a manifest row names (a folder: the files in it), with size and modification time."""
    out = []
    for field, value in row._asdict().items():
        if field == "Index" or not isinstance(value, str) or not os.path.isabs(value) or not os.path.exists(value):
            continue
        files = [Path(value)] if os.path.isfile(value) else sorted(p for p in Path(value).rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            out.append([field, str(p), st.st_size, st.st_mtime_ns])
    return out


def _stem(case_id: str, sources: list) -> str:
    """A file-name-safe case id, with a hash of the source paths so that two datasets' ``case000`` differ."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)[:80]
    return f"{safe}-{_digest([case_id, [s[:2] for s in sources]])[:8]}"


@dataclasses.dataclass
class CachedCase:
    """A cached case: ``image`` and ``masks`` are opened memory-mapped (copy-on-write: in-place changes stay in
    the process, the file is never written) on every access; the rest is kept in memory."""

    case_id: str
    group: str
    meta: VolumeMeta
    image_path: Path
    masks_path: Path | None

    @property
    def image(self) -> np.ndarray:
        return np.load(self.image_path, mmap_mode="c")

    @property
    def masks(self) -> np.ndarray | None:
        return None if self.masks_path is None else np.load(self.masks_path, mmap_mode="c")

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``image`` and ``masks`` read whole, one read per file."""
        return np.load(self.image_path), None if self.masks_path is None else np.load(self.masks_path)

    def slices(self, index: list[int], label: int) -> tuple[np.ndarray, np.ndarray]:
        """``image[:, index]`` and ``masks[:, label]``, each slice read at its offset."""
        return read_slices(self.image_path, index), read_slices(self.masks_path, [label])[:, 0]


@functools.lru_cache(maxsize=None)
def _npy_layout(path: Path) -> tuple[tuple, np.dtype, int]:
    """Shape, dtype and data offset of a C-ordered ``.npy`` file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        if fortran:
            raise InputError(path, "a Fortran-ordered array; the cache writes C order")
        return shape, dtype, handle.tell()


def read_slices(path: Path, index: list[int]) -> np.ndarray:
    """``array[:, index]`` of a ``(C, D, ...)`` ``.npy`` file, each slice read at its offset."""
    shape, dtype, offset = _npy_layout(path)
    channels, depth, size = shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64)) * dtype.itemsize
    out = np.empty((channels, len(index), *shape[2:]), dtype)
    with open(path, "rb", buffering=0) as handle:
        for c in range(channels):
            for j, d in enumerate(index):
                handle.seek(offset + (c * depth + int(d)) * size)
                if handle.readinto(memoryview(out[c, j]).cast("B")) != size:
                    raise InputError(path, "cache file cut short")
    return out


@dataclasses.dataclass
class CacheStats:
    """What :func:`cache_cases` did: cases written (new or rebuilt), cases reused, and their seconds."""

    built: int = 0
    reused: int = 0
    seconds: float = 0.0


def _meta_json(meta: VolumeMeta) -> dict:
    return {"shape": [int(s) for s in meta.shape], "affine": np.asarray(meta.affine, float).tolist(),
            "format": meta.format, "path": str(meta.path), "extension": meta.extension}


def _meta_from_json(data: dict) -> VolumeMeta:
    """The geometry back (the format-specific ``header`` is not cached: writers fall back to the affine)."""
    return VolumeMeta(tuple(data["shape"]), np.asarray(data["affine"], float), data["format"], data["path"],
                      data["extension"])


def _array_ok(path: Path, spec: dict) -> bool:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return list(array.shape) == spec["shape"] and str(array.dtype) == spec["dtype"]


def _entry(folder: Path, stem: str, sources: list) -> tuple[dict | None, str]:
    """The case's index when its files are present and match it and its sources; else None and why not."""
    index = folder / f"{stem}.json"
    if not index.exists():
        return None, ""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "unreadable index"
    if data.get("format") != FORMAT or data.get("sources") != sources:
        return None, "source files changed"
    for name in ("image", "masks"):
        spec = data.get(name)
        if spec is not None and not _array_ok(folder / f"{stem}.{name}.npy", spec):
            return None, f"{name} file missing, truncated or of the wrong shape"
    return data, ""


def _write_entry(folder: Path, stem: str, case, sources: list) -> dict:
    """Write the case's arrays, then its index (the index last: an entry without one does not exist)."""
    data = {"format": FORMAT, "case_id": case.case_id, "sources": sources, "meta": _meta_json(case.meta),
            "image": None, "masks": None}
    for name, array in (("image", np.ascontiguousarray(case.image, np.float32)),
                        ("masks", None if case.masks is None else np.ascontiguousarray(case.masks, bool))):
        if array is None:
            continue
        with atomic_path(folder / f"{stem}.{name}.npy") as tmp:
            np.save(tmp, array)
        data[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    write_json(folder / f"{stem}.json", data)
    return data


def cache_cases(rows: pd.DataFrame, task: Task, preprocessing: Preprocessing, root: str | os.PathLike,
                progress: bool = True, stats: CacheStats | None = None,
                load_options: dict | None = None) -> list[CachedCase]:
    """The cases of ``rows`` from the cache under ``root``, preprocessed and written there first where needed.

    Reading and preprocessing go through :func:`~seg25d.pipeline.data.load_cases` (with ``load_options``), one
    case at a time, so the cached arrays are exactly what it returns and only one case is in memory at once.
    """
    load_options = load_options or {}
    folder = cache_folder(root, preprocessing, task, load_options)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "plan.json").exists():
        write_json(folder / "plan.json", _plan(preprocessing, task, load_options))
    stats = stats if stats is not None else CacheStats()
    start = time.perf_counter()
    cases = []
    for i, row in enumerate(tqdm(list(rows.itertuples()), desc="preprocessing", unit="case", disable=not progress,
                                 leave=False)):
        sources = _fingerprint(row)
        stem = _stem(row.case_id, sources)
        data, why = _entry(folder, stem, sources)
        if data is None:
            if why:
                log.warning("%s: cached case %s is stale (%s); rebuilding it", folder, row.case_id, why)
            case = load_cases(rows.iloc[i:i + 1], task, preprocessing, progress=False, **load_options)[0]
            data = _write_entry(folder, stem, case, sources)
            stats.built += 1
        else:
            stats.reused += 1
        masks = folder / f"{stem}.masks.npy" if data["masks"] is not None else None
        cases.append(CachedCase(row.case_id, row.group, _meta_from_json(data["meta"]),
                                folder / f"{stem}.image.npy", masks))
    stats.seconds += time.perf_counter() - start
    return cases


def native_spacings(rows: pd.DataFrame, root: str | os.PathLike) -> list[list[float]]:
    """Each row's image spacing as stored (mm), read once and kept under ``root`` keyed by the rows' files."""
    from seg25d.pipeline.images import image_paths, read_image

    sources = [_fingerprint(row) for row in rows.itertuples()]
    path = Path(root) / f"spacings-{_digest({'format': FORMAT, 'sources': sources})}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["spacings"]
    except (OSError, ValueError, KeyError):
        pass
    spacings = [[float(s) for s in read_image(image_paths(row)).meta.spacing] for row in rows.itertuples()]
    Path(root).mkdir(parents=True, exist_ok=True)
    write_json(path, {"spacings": spacings})
    return spacings


def prepare_data(config: dict, root: str | os.PathLike, progress: bool = True,
                 stats: CacheStats | None = None) -> tuple[Task, Preprocessing, list[CachedCase], list[CachedCase]]:
    """The training run's data through the cache: its task, fitted preprocessing, training and validation cases
    (the same arrays as reading them into memory; see :func:`~seg25d.pipeline.planning.prepare_training_data`)."""
    from seg25d.pipeline.planning import prepare_training_data

    data = config["data"]
    manifest = data["manifest"]
    if not manifest:
        raise InputError("data.manifest", "no manifest given; e.g. --set data.manifest=DIR/manifest.csv")
    task = task_for(manifest)
    train_rows, val_rows = split_manifest(manifest, data, seed=int(config["train"]["seed"]))
    stats = stats if stats is not None else CacheStats()
    prep, _, train_cases, val_cases = prepare_training_data(config, task, train_rows, val_rows, progress,
                                                            cache=Path(root), stats=stats)
    return task, prep, train_cases, val_cases
