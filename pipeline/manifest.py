"""Dataset manifests: a CSV of cases plus a JSON sidecar declaring the classes.

``M.csv`` has the columns ``case_id,image,label,split[,group]``; paths are relative to the CSV's folder; ``label``
may be empty (inference-only sets); ``split`` is ``train``, ``val`` or ``test``; ``group`` (e.g. the patient)
keeps related cases in one fold. Several co-registered modalities go in ``image_0,image_1,...`` instead of ``image``.

``M.json`` (same name, ``.json``) declares the classes as a :class:`LabelSpec`::

    {"classes": ["vessel"], "values": [1], "encoding": "index"}
    {"classes": ["large_bowel", "small_bowel", "stomach"], "values": [1, 2, 4], "encoding": "bitmask"}

``index``: each voxel holds one label; value ``values[k]`` means class ``k``, 0 background; other values are errors.
``bitmask``: classes may overlap (the Kaggle organs do); a voxel holds the sum of the bits of the classes present.
Without a sidecar, an index encoding is inferred from the nonzero values found in the label files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.outputs import safe_name

__all__ = [
    "LabelSpec", "read_manifest", "write_manifest", "read_label_spec", "write_label_spec", "sidecar_path",
    "label_spec_or_infer", "assign_splits", "check_manifest", "label_value_problem", "geometry_problem",
    "label_on_image_grid",
    "SPLITS", "COLUMNS",
]

COLUMNS = ("case_id", "image", "label", "split", "group")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Class names and how a label volume encodes them (see the module docstring)."""

    classes: tuple[str, ...]
    values: tuple[int, ...]
    encoding: str = "index"

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "values", tuple(int(v) for v in self.values))
        if self.encoding not in ("index", "bitmask"):
            raise ValueError(f"encoding must be 'index' or 'bitmask', got {self.encoding!r}")
        if len(self.classes) != len(self.values) or not self.classes:
            raise ValueError("classes and values must be non-empty and of equal length")
        if len(set(self.classes)) != len(self.classes) or len(set(self.values)) != len(self.values):
            raise ValueError("class names and values must be unique")
        if any(v <= 0 for v in self.values):
            raise ValueError("class values must be positive (0 is background)")
        if self.encoding == "bitmask" and any(v & (v - 1) for v in self.values):
            raise ValueError(f"bitmask values must be powers of two, got {self.values}")

    @property
    def multilabel(self) -> bool:
        return self.encoding == "bitmask"

    def masks(self, label: np.ndarray) -> np.ndarray:
        """Boolean masks ``(K, *label.shape)``, one per class."""
        label = np.asarray(label)
        if self.multilabel:
            return np.stack([(label.astype(np.int64) & v) != 0 for v in self.values])
        return np.stack([label == v for v in self.values])

    def encode(self, masks: np.ndarray) -> np.ndarray:
        """Integer label volume from masks ``(K, ...)``. For ``index`` a later class wins where masks overlap."""
        masks = np.asarray(masks, dtype=bool)
        dtype = np.uint8 if max(self.values) < 256 else np.int32
        out = np.zeros(masks.shape[1:], dtype=dtype)
        for m, v in zip(masks, self.values):
            if self.multilabel:
                out[m] |= v
            else:
                out[m] = v
        return out

    def invalid_values(self, label: np.ndarray) -> list[int]:
        """Values in ``label`` that this spec does not declare."""
        present = np.unique(np.asarray(label))
        if self.multilabel:
            allowed = sum(self.values)
            return [int(v) for v in present if v < 0 or (int(v) & ~allowed)]
        return [int(v) for v in present if v != 0 and int(v) not in self.values]

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "values": list(self.values), "encoding": self.encoding}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpec":
        return cls(tuple(data["classes"]), tuple(data["values"]), data.get("encoding", "index"))

    @classmethod
    def infer(cls, values: Iterable[int]) -> "LabelSpec":
        """An index spec naming each nonzero value ``class_<v>`` (``foreground`` for a binary 0/1 set)."""
        values = sorted(int(v) for v in set(values) if v != 0 and float(v).is_integer()) or [1]
        names = ["foreground"] if values == [1] else [f"class_{v}" for v in values]
        return cls(tuple(names), tuple(values), "index")


def sidecar_path(manifest: str | os.PathLike) -> Path:
    manifest = Path(manifest)
    return manifest.with_suffix(".json")


def label_spec_from_pairs(items) -> LabelSpec:
    """Index classes given as ``NAME=VALUE`` pairs (``--classes liver=1 tumour=2``)."""
    try:
        names, values = zip(*(item.split("=", 1) for item in items))
        return LabelSpec(names, tuple(int(v) for v in values))
    except ValueError as err:
        raise InputError("--classes", f"takes NAME=VALUE pairs with integer values ({err})") from None


def read_label_spec(manifest: str | os.PathLike) -> LabelSpec | None:
    """The manifest's class declaration, or None when it has no sidecar."""
    path = sidecar_path(manifest)
    if not path.exists():
        return None
    try:
        return LabelSpec.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"invalid class declaration ({err})") from None


def write_label_spec(manifest: str | os.PathLike, spec: LabelSpec) -> Path:
    path = sidecar_path(manifest)
    write_json(path, spec.to_dict())
    return path


def label_spec_or_infer(manifest: str | os.PathLike, frame: pd.DataFrame | None = None) -> LabelSpec:
    """The manifest's class declaration, or an index encoding inferred from the nonzero values of its label
    files (``frame``: the rows to look at, default all); unreadable labels are skipped (reported elsewhere)."""
    spec = read_label_spec(manifest)
    if spec is not None:
        return spec
    from seg25d.pipeline.io import read_volume

    frame = read_manifest(manifest) if frame is None else frame
    values: set[int] = set()
    for path in frame["label"].dropna():
        try:
            array = read_volume(path).array
        except InputError:
            continue
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise InputError(path, "label volume holds non-integer values; cannot infer the classes")
        values.update(int(v) for v in np.unique(array) if v != 0)
    if not values:
        raise InputError(manifest, f"no class sidecar {sidecar_path(manifest).name} and no nonzero label values "
                                   "to infer the classes from")
    spec = LabelSpec.infer(values)
    logging.getLogger(__name__).info(
        "%s: no class sidecar %s; inferred an index encoding from the labels' values: %s", manifest,
        sidecar_path(manifest).name, ", ".join(f"{c}={v}" for c, v in zip(spec.classes, spec.values)))
    return spec


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Load and validate a manifest; paths come back absolute, missing labels as None.

    Raises InputError (naming the CSV and the row) for missing columns, no rows, empty, duplicate or unsafe case
    ids (case ids become file names: see :func:`seg25d.pipeline.outputs.safe_name`), unknown splits and empty
    image paths. File contents are checked by ``seg25d manifest check``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise InputError(path, f"cannot parse CSV ({err})") from None
    channels = _channel_columns(frame.columns)
    if channels and "image" not in frame.columns:
        frame["image"] = frame[channels[0]]
    missing = [c for c in ("case_id", "image") if c not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    unknown = [c for c in frame.columns if c not in COLUMNS and c not in channels]
    if unknown or (channels and channels != [f"image_{k}" for k in range(len(channels))]):
        raise InputError(path, f"unknown column(s) {', '.join(unknown or channels)}; expected {','.join(COLUMNS)} "
                               "(several modalities: image_0,image_1,... instead of image)")
    if frame.empty:
        raise InputError(path, "no cases (the CSV has a header only)")
    frame = frame.reindex(columns=list(COLUMNS) + channels, fill_value="")
    frame = frame.apply(lambda col: col.str.strip())
    for row, (case, image, split) in enumerate(zip(frame.case_id, frame.image, frame.split), start=2):
        if not case:
            raise InputError(path, f"line {row}: empty case_id")
        safe_name(case, path, f"line {row}: case_id")
        if not image:
            raise InputError(path, f"line {row} ({case}): empty image path")
        if split and split not in SPLITS:
            raise InputError(path, f"line {row} ({case}): split {split!r} is not one of {', '.join(SPLITS)}")
    dup = frame.case_id[frame.case_id.duplicated()].unique()
    if len(dup):
        raise InputError(path, f"duplicate case_id {', '.join(dup[:5])}")
    base = path.resolve().parent
    for col in ["image", *channels]:
        frame[col] = [str((base / p).resolve()) if p else "" for p in frame[col]]
    for row, values in enumerate(zip(*(frame[c] for c in channels)), start=2):
        if not all(values):
            raise InputError(path, f"line {row} ({frame.case_id.iloc[row - 2]}): empty path in {', '.join(channels)}")
    frame["label"] = pd.Series([str((base / p).resolve()) if p else None for p in frame.label],
                               index=frame.index, dtype=object)
    frame["group"] = [g or c for g, c in zip(frame.group, frame.case_id)]
    return frame


def write_manifest(path: str | os.PathLike, rows: pd.DataFrame | Sequence[dict]) -> Path:
    """Write a manifest atomically with paths relative to its folder."""
    path = Path(path)
    frame = pd.DataFrame(rows).copy()
    base = path.resolve().parent
    channels = _channel_columns(frame.columns)
    for col in ("image", "label", *channels):
        if col in frame:
            frame[col] = [_relative(p, base) for p in frame[col]]
    columns = [c for c in COLUMNS if c in frame.columns and not (c == "image" and channels)]
    columns[1:1] = channels
    write_csv(path, frame[columns])
    return path


def _channel_columns(columns) -> list[str]:
    return sorted((c for c in columns if re.fullmatch(r"image_\d+", c)), key=lambda c: int(c[6:]))


def _relative(p, base: Path) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)) or p == "":
        return ""
    return os.path.relpath(Path(p).resolve(), base)


def label_value_problem(values: np.ndarray, spec: LabelSpec) -> str | None:
    """What ``spec`` cannot decode in a label's values, in one phrase: its non-integer values (alone: they
    name no class), else the values no class declares; None when every value is declared."""
    values = np.unique(np.asarray(values))
    if values.dtype.kind == "f":
        fractional = values[values != np.round(values)]
        if fractional.size:
            shown = ", ".join(f"{v:g}" for v in fractional[:5]) + (", ..." if fractional.size > 5 else "")
            return f"label volume holds non-integer values {shown}"
    bad = spec.invalid_values(values)
    if bad:
        return (f"label values {bad[:10]} outside the declared classes {dict(zip(spec.classes, spec.values))} "
                f"({spec.encoding})")
    return None


def geometry_problem(label, image) -> str | None:
    """How a label's grid (VolumeMeta) differs from its image's, in one phrase; None when they match."""
    from seg25d.pipeline.io import same_geometry

    if tuple(label.shape) != tuple(image.shape):
        return f"label shape {tuple(label.shape)} differs from image shape {tuple(image.shape)}"
    if not same_geometry(label, image):
        return "label geometry (spacing/origin/direction) differs from the image's"
    return None


def label_on_image_grid(label, image_meta, resample: bool = False) -> np.ndarray:
    """A label Volume's array on its image's grid: the array itself when the grids match; else InputError
    naming the label with ``manifest check``'s message or, with ``resample``, the label resampled onto the
    image's grid (nearest neighbour in world coordinates, background outside the label)."""
    from scipy import ndimage

    problem = geometry_problem(label.meta, image_meta)
    if problem is None:
        return label.array
    if not resample:
        raise InputError(label.meta.path, f"{problem} (data.resample_labels = true resamples labels onto their "
                                          "images)")
    index_to_index = np.linalg.inv(np.asarray(label.meta.affine, float)) @ np.asarray(image_meta.affine, float)
    return ndimage.affine_transform(label.array, index_to_index, output_shape=tuple(image_meta.shape),
                                    output=label.array.dtype, order=0, mode="constant", cval=0)


def check_manifest(path: str | os.PathLike, spec: LabelSpec | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Open every file of a manifest and validate it.

    Returns a table (one row per case: shape, spacing, classes present, status) and the problems, one line
    each naming the file and what is wrong: unreadable or corrupt files, non-3D data, NaN/Inf voxels, labels
    whose size or geometry differs from the image, label values outside the declared classes.
    """
    from seg25d.pipeline.images import declared_channels, image_paths, read_image
    from seg25d.pipeline.io import read_volume

    frame = read_manifest(path)
    channels = declared_channels(path)
    spec = spec or read_label_spec(path)
    rows, problems = [], []
    labels = {}
    for case in frame.itertuples():
        row = {"case_id": case.case_id, "split": case.split, "shape": "", "spacing_mm": "", "classes": "", "status": "ok"}
        case_problems = []
        try:
            image = read_image(image_paths(case))
            if image.array.shape[0] != len(channels):
                raise InputError(case.image, f"{image.array.shape[0]} channels (a 4D image or image_k columns); the "
                                             f"sidecar declares {len(channels)} ({', '.join(channels)})")
            row["shape"] = "x".join(map(str, image.meta.shape))
            row["spacing_mm"] = "x".join(f"{s:.3g}" for s in image.meta.spacing)
        except InputError as err:
            case_problems.append(str(err))
            image = None
        if case.label:
            try:
                label = read_volume(case.label)
                problem = None if image is None else geometry_problem(label.meta, image.meta)
                if problem:
                    case_problems.append(f"{case.label}: {problem}")
                labels[case.case_id] = (case.label, np.unique(label.array))
            except InputError as err:
                case_problems.append(str(err))
        if case_problems:
            row["status"] = "problem"
        problems += case_problems
        rows.append(row)
    if spec is None and labels:
        spec = LabelSpec.infer(np.unique(np.concatenate([v for _, v in labels.values()])))
    table = pd.DataFrame(rows)
    for i, row in table.iterrows():
        if row.case_id in labels:
            label_path, values = labels[row.case_id]
            problem = label_value_problem(values, spec)
            if problem:
                problems.append(f"{label_path}: {problem}")
                table.loc[i, "status"] = "problem"
            present = [c for c, m in zip(spec.classes, spec.masks(values)) if m.any()]
            table.loc[i, "classes"] = (",".join(present) if len(present) <= 4 else f"{len(present)} classes") or "-"
    return table, problems


def assign_splits(manifest: str | os.PathLike, out: str | os.PathLike, val: float = 0.15, test: float = 0.25,
                  seed: int = 0) -> pd.DataFrame:
    """Write a copy of a manifest with train/val/test splits drawn by group (a group never straddles splits).

    Groups are shuffled with ``seed``; the first ``test`` share of the cases goes to test, the next ``val``
    share to val (at least one group each when the share is positive), the rest to train. The class
    sidecar is copied along. Returns the new table.
    """
    manifest, out = Path(manifest), Path(out)
    frame = read_manifest(manifest)
    groups = frame.group.drop_duplicates().sample(frac=1.0, random_state=seed).tolist()
    if len(groups) < 1 + (val > 0) + (test > 0):
        raise InputError(manifest, f"{len(groups)} group(s) cannot fill the requested splits")
    sizes = frame.group.value_counts()
    split, seen = {}, 0
    for group in groups:
        share = seen / len(frame)
        if share < test or (test > 0 and "test" not in split.values()):
            split[group] = "test"
        elif share < test + val or (val > 0 and "val" not in split.values()):
            split[group] = "val"
        else:
            split[group] = "train"
        seen += int(sizes[group])
    if "train" not in split.values():
        raise InputError(manifest, "no group left for training; lower --val/--test")
    frame = frame.assign(split=frame.group.map(split))
    if read_label_spec(manifest) is not None:  # validated; copied whole (it may name the channels too)
        write_json(sidecar_path(out), json.loads(sidecar_path(manifest).read_text()))
    write_manifest(out, frame)
    return frame
