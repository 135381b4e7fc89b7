"""A case's image: one or more co-registered volumes (modalities) read together as ``(C, D, H, W)``.

A case names its channels as separate files (nnU-Net's ``case_0000.nii.gz``, ``case_0001.nii.gz``; a manifest's
``image_0``, ``image_1``... columns) or as one 4D NIfTI whose last axis holds them (Medical Segmentation
Decathlon). Every channel must have the first one's shape and geometry.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from seg25d.pipeline.atomic import full_suffix
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import Volume, read_volume, same_geometry
from seg25d.pipeline.io.base import REVERSE, VolumeMeta

__all__ = ["read_image", "declared_channels", "image_paths", "image_columns", "group_channels", "stem", "CHANNEL_SUFFIX"]

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def stem(path: str | os.PathLike) -> str:
    """File name without its (compound) extension: ``a/ct_001.nii.gz`` -> ``ct_001``."""
    name = Path(path).name
    suffix = full_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def image_columns(columns: Sequence[str]) -> list[str]:
    """The manifest's channel columns in order: ``image_0, image_1, ...`` or just ``image``."""
    numbered = sorted((c for c in columns if re.fullmatch(r"image_\d+", c)), key=lambda c: int(c[6:]))
    return numbered or ["image"]


def image_paths(row) -> list[str]:
    """The channel files of a manifest row (a namedtuple from ``itertuples`` or a dict-like)."""
    get = row.get if hasattr(row, "get") else lambda key, default=None: getattr(row, key, default)
    paths, k = [], 0
    while get(f"image_{k}", None):
        paths.append(get(f"image_{k}"))
        k += 1
    return paths or [get("image")]


def declared_channels(manifest: str | os.PathLike) -> list[str]:
    """The modality of each channel from the manifest's sidecar (``"channels"``); ``["image"]`` when undeclared."""
    import json

    sidecar = Path(manifest).with_suffix(".json")
    try:
        channels = json.loads(sidecar.read_text()).get("channels") if sidecar.is_file() else None
    except (OSError, ValueError) as err:
        raise InputError(sidecar, f"cannot parse JSON ({err})") from None
    return [str(c) for c in channels] if channels else ["image"]


def read_image(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Volume:
    """Read a case's channels as a float-or-int array ``(C, D, H, W)`` with the first channel's geometry.

    One path may be a 4D NIfTI (channels on its last axis); several paths are one 3D volume each. InputError
    names the file whose shape or geometry differs from the first channel's.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) == 1 and _is_4d_nifti(paths[0]):
        return _read_4d_nifti(Path(paths[0]))
    volumes = [read_volume(p) for p in paths]
    first = volumes[0]
    for path, volume in zip(paths[1:], volumes[1:]):
        if tuple(volume.meta.shape) != tuple(first.meta.shape):
            raise InputError(path, f"channel shape {volume.meta.shape} differs from {first.meta.shape} of "
                                   f"{Path(paths[0]).name}")
        if not same_geometry(volume.meta, first.meta):
            raise InputError(path, f"channel geometry (spacing/origin/direction) differs from {Path(paths[0]).name}")
    return Volume(np.stack([v.array for v in volumes]), first.meta)


def _is_4d_nifti(path) -> bool:
    if full_suffix(path).lower() not in (".nii", ".nii.gz") or not Path(path).is_file():
        return False
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception:
        return False  # read_volume reports it
    return len(shape) == 4 and shape[3] > 1


def _read_4d_nifti(path: Path) -> Volume:
    import nibabel as nib

    from seg25d.pipeline.io.nifti import _scaled, mm_per_unit

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise InputError(path, f"cannot read NIfTI ({type(err).__name__}: {' '.join(str(err).split())})") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(path, f"{int((~np.isfinite(data)).sum())} voxels are NaN or Inf")
    array = np.ascontiguousarray(data.transpose(3, 2, 1, 0))  # (i, j, k, c) -> (c, d, h, w)
    header = img.header.copy()
    header.set_data_shape(data.shape[:3])  # masks written for it are 3D
    mm = mm_per_unit(img.header, path)  # metre and micron files in mm, as every NIfTI read
    meta = VolumeMeta(shape=array.shape[1:], affine=_scaled(img.affine, mm) @ REVERSE, format="nifti",
                      path=str(path), extension=".nii.gz" if str(path).lower().endswith(".gz") else ".nii",
                      header=header)
    return Volume(array, meta)


def group_channels(paths: Sequence[str | os.PathLike], channels: int | None = None) -> dict[str, list[Path]]:
    """Cases of a file list: ``{case_id: [channel files]}``.

    Files named ``<case>_0000``, ``<case>_0001``... (nnU-Net) are the channels of ``<case>`` when every file has
    such a suffix and every case has channels ``0000`` up to the same count (``channels`` when given); otherwise
    each file is a case named by its stem. A case with a missing channel is an InputError naming it.
    """
    paths = sorted(Path(p) for p in paths)
    matches = [CHANNEL_SUFFIX.match(stem(p)) for p in paths]
    if paths and all(matches):
        cases: dict[str, dict[int, Path]] = {}
        for path, m in zip(paths, matches):
            cases.setdefault(m["case"], {})[int(m["channel"])] = path
        count = channels or max(len(c) for c in cases.values())
        if any(0 in c for c in cases.values()):  # nnU-Net naming: every case needs _0000.._{count-1}
            for case, found in cases.items():
                missing = [k for k in range(count) if k not in found]
                extra = [k for k in found if k >= count]
                if missing:
                    raise InputError(found[min(found)].parent / f"{case}_{missing[0]:04d}{full_suffix(found[min(found)])}",
                                     f"channel {missing[0]} of case {case} is missing ({count} channels expected)")
                if extra:
                    raise InputError(found[extra[0]], f"channel {extra[0]} of case {case} is beyond the "
                                                      f"{count} channels expected")
            return {case: [found[k] for k in range(count)] for case, found in sorted(cases.items())}
    out: dict[str, list[Path]] = {}
    for path in paths:
        if stem(path) in out:
            raise InputError(path, f"two files have the name {stem(path)} (and would write the same output)")
        out[stem(path)] = [path]
    return out
