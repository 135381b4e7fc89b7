"""What every dataset layout becomes, and the checked, atomic write of the manifest it imports to.

Written next to ``out`` (``M.csv``):

- ``M.csv``: ``case_id, image (or image_0, image_1...), label, split, group``; training cases get ``train``
  except fold 0 of the cross-validation, which gets ``val``; unlabelled cases (``imagesTs``) get ``test``.
- ``M.json``: the class sidecar (:class:`~seg25d.pipeline.manifest.LabelSpec`) plus ``channels`` (the modality
  of each image channel, e.g. ``["CT"]`` or ``["T2", "ADC"]``: planning normalises CT differently).
- ``M_folds.json``: the seeded case-level folds (``{"seed", "folds": [{"train": [...], "val": [...]}]}``),
  grouped by patient when ``group_pattern`` finds one; ``data.folds = 5`` with ``train.seed`` = the import
  seed trains on exactly these folds.
- ``M_labels/``: only for region-based classes (overlapping, nnU-Net's ``[1, 2, 3]`` label lists): the labels
  re-encoded as bitmasks (bit k set where the voxel belongs to class k), same geometry as the source labels.

Every file is opened and checked before anything is written; the first problem is one InputError line
naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from seg25d.pipeline.atomic import write_json
from seg25d.pipeline.data import group_folds
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import read_image
from seg25d.pipeline.io import read_volume, same_geometry, write_mask
from seg25d.pipeline.manifest import LabelSpec, sidecar_path, write_manifest

__all__ = ["SourceCase", "Layout", "write_import", "folds_path"]


@dataclasses.dataclass(frozen=True)
class SourceCase:
    case_id: str
    images: tuple[Path, ...]  # one file per channel, or one 4D NIfTI
    label: Path | None  # None: unlabelled (test) case


@dataclasses.dataclass(frozen=True)
class Layout:
    """A dataset as read from its layout.

    ``regions``: for region-based classes, the source label values making up each class (in ``spec`` order);
    the labels are then re-encoded as the bitmask ``spec``. None: the label files already hold ``spec``.
    """

    source: Path
    cases: tuple[SourceCase, ...]
    spec: LabelSpec
    channels: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...] | None = None


def folds_path(manifest: str | os.PathLike) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}_folds.json")


def _labels_dir(manifest: Path) -> Path:
    return manifest.with_name(f"{manifest.stem}_labels")


def _group(case_id: str, pattern: str | None) -> str:
    if not pattern:
        return case_id
    match = re.search(pattern, case_id)
    if not match:
        raise InputError("--group-pattern", f"{pattern!r} does not match case id {case_id!r}")
    return match.group(1) if match.groups() else match.group(0)


def _check_case(case: SourceCase, layout: Layout) -> np.ndarray | None:
    """Open a case's channels and label and check them; returns the label array (None without a label)."""
    image = read_image(case.images)
    if image.array.shape[0] != len(layout.channels):
        raise InputError(case.images[0], f"has {image.array.shape[0]} channel(s); the dataset declares "
                                         f"{len(layout.channels)} ({', '.join(layout.channels)})")
    if case.label is None:
        return None
    label = read_volume(case.label)
    if tuple(label.meta.shape) != tuple(image.meta.shape):
        raise InputError(case.label, f"label shape {label.meta.shape} differs from image shape {image.meta.shape}")
    if not same_geometry(label.meta, image.meta):
        raise InputError(case.label, "label geometry (spacing/origin/direction) differs from the image's")
    array = label.array
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError(case.label, "label volume holds non-integer values")
    if layout.regions is None:
        bad = layout.spec.invalid_values(array)
    else:
        declared = set().union(*layout.regions)
        bad = [int(v) for v in np.unique(array) if v != 0 and int(v) not in declared]
    if bad:
        declared = (dict(zip(layout.spec.classes, layout.spec.values)) if layout.regions is None
                    else dict(zip(layout.spec.classes, layout.regions)))
        raise InputError(case.label, f"label values {bad} are not declared (classes {declared})")
    return array


def _bitmask(label: np.ndarray, layout: Layout) -> np.ndarray:
    masks = np.stack([np.isin(label, list(region)) for region in layout.regions])
    return layout.spec.encode(masks)


def write_import(layout: Layout, out: str | os.PathLike, folds: int = 5, seed: int = 0,
                 group_pattern: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Check every case of ``layout``, then write the manifest ``out`` with its sidecar and folds (see the module
    docstring). Returns the manifest table."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(out, "the manifest must be a .csv file")
    if not layout.cases:
        raise InputError(layout.source, "no cases found")
    labelled = [c for c in layout.cases if c.label is not None]
    if not labelled:
        raise InputError(layout.source, "no labelled (training) cases found")
    for case in tqdm(layout.cases, desc="checking", unit="case", disable=not progress, leave=False):
        _check_case(case, layout)
    groups = {c.case_id: _group(c.case_id, group_pattern) for c in layout.cases}
    k = min(folds, len({groups[c.case_id] for c in labelled}))
    assign = group_folds([groups[c.case_id] for c in labelled], k, seed) if k > 1 else {}
    fold_of = {c.case_id: assign.get(groups[c.case_id]) for c in labelled}
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = {c.case_id: c.label for c in labelled}
    staging = None
    if layout.regions is not None:  # re-encode region labels in a staging folder, moved in place at the end
        staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}_labels.", suffix=".tmp", dir=out.parent))
        target = _labels_dir(out)
        try:
            for case in tqdm(labelled, desc="bitmask labels", unit="case", disable=not progress, leave=False):
                label = read_volume(case.label)
                write_mask(staging / f"{case.case_id}{label.meta.extension}", _bitmask(label.array, layout),
                           label.meta)
                labels[case.case_id] = target / f"{case.case_id}{label.meta.extension}"
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    channels = len(layout.cases[0].images)
    rows = []
    for case in layout.cases:
        row = {"case_id": case.case_id}
        if channels == 1:
            row["image"] = str(case.images[0])
        else:
            row.update({f"image_{i}": str(p) for i, p in enumerate(case.images)})
        fold = fold_of.get(case.case_id)
        row.update(label=str(labels[case.case_id]) if case.case_id in labels else "",
                   split="test" if case.label is None else ("val" if fold == 0 else "train"),
                   group=groups[case.case_id])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if staging is not None:
        target = _labels_dir(out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    write_json(folds_path(out), {"seed": seed, "folds": [
        {"train": sorted(c for c, f in fold_of.items() if f != i), "val": sorted(c for c, f in fold_of.items() if f == i)}
        for i in range(k)] if k > 1 else []})
    sidecar = layout.spec.to_dict()
    sidecar["channels"] = list(layout.channels)
    if layout.regions is not None:
        sidecar["regions"] = {name: list(region) for name, region in zip(layout.spec.classes, layout.regions)}
    write_json(sidecar_path(out), sidecar)
    write_manifest(out, frame)
    return frame


def region_spec(names, regions) -> tuple[LabelSpec, tuple[tuple[int, ...], ...] | None]:
    """Classes from ``(name, value-or-values)`` declarations: plain values are an index encoding; when any
    class lists several values (classes overlap) all become regions of a bitmask encoding."""
    regions = [tuple(int(v) for v in (r if isinstance(r, (list, tuple)) else [r])) for r in regions]
    if all(len(r) == 1 for r in regions):
        return LabelSpec(tuple(names), tuple(r[0] for r in regions), "index"), None
    return LabelSpec(tuple(names), tuple(1 << i for i in range(len(names))), "bitmask"), tuple(regions)
