"""Volume I/O that never loses geometry.

``read_volume(path)`` gives a :class:`Volume`: a ``(D, H, W)`` array and a :class:`VolumeMeta` whose
``affine`` maps array indices to RAS+ millimetres (see :mod:`seg25d.pipeline.io.base` for the axis
convention). ``write_mask(path, mask, meta)`` writes a label volume with exactly the input's size, spacing,
origin and direction, atomically; the output format follows the path's extension.

Backends: NIfTI through nibabel (``.nii``, ``.nii.gz``), everything else SimpleITK reads (NRRD, MHA/MHD,
DICOM folders, ...) through SimpleITK.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from seg25d.pipeline.atomic import atomic_path, full_suffix
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io.base import (
    Volume, VolumeIO, VolumeMeta, itk_geometry_from_ras, same_geometry, synthetic_meta,
)

__all__ = [
    "Volume", "VolumeMeta", "VolumeIO", "read_volume", "write_volume", "write_mask", "synthetic_meta",
    "same_geometry", "supported_extension", "mask_name", "SUPPORTED_EXTENSIONS",
]

_NIFTI_EXTENSIONS = (".nii.gz", ".nii")  # NibabelIO.extensions, known without importing nibabel
SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_DETACHED_HEADER = (".mhd", ".nhdr")


def _backend(path: Path) -> VolumeIO:
    """nibabel for NIfTI, SimpleITK for the rest; imported on first use, so that training and benchmarks run
    without the file-format libraries."""
    if full_suffix(path).lower() in _NIFTI_EXTENSIONS:
        from seg25d.pipeline.io.nifti import NibabelIO

        return NibabelIO()
    from seg25d.pipeline.io.sitk import SimpleITKIO

    return SimpleITKIO()


def supported_extension(path: str | os.PathLike) -> bool:
    """True for the file types seg25d reads (DICOM scans are folders)."""
    path = Path(path)
    return path.is_dir() or full_suffix(path).lower() in SUPPORTED_EXTENSIONS


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume as ``(D, H, W)`` with its geometry; :class:`InputError` names the file on bad input.

    Non-finite voxels are reported too (NaN/Inf break normalisation silently otherwise).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    volume = _backend(path).read(path)
    if volume.array.dtype.kind == "f" and not np.isfinite(volume.array).all():
        bad = int((~np.isfinite(volume.array)).sum())
        raise InputError(path, f"{bad} voxels are NaN or Inf")
    return volume


def write_volume(path: str | os.PathLike, array: np.ndarray, meta: VolumeMeta) -> Path:
    """Atomically write ``array`` (D, H, W) with ``meta``'s geometry; the format follows ``path``'s extension."""
    path = Path(path)
    array = np.asarray(array)
    if tuple(array.shape) != tuple(meta.shape):
        raise ValueError(f"{path}: array shape {array.shape} differs from the geometry's {tuple(meta.shape)}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if full_suffix(path).lower() not in _NIFTI_EXTENSIONS:  # SimpleITK: orthogonal only; errors name the target
        itk_geometry_from_ras(meta.affine, path)
    if full_suffix(path).lower() in _DETACHED_HEADER:
        _write_detached(path, array, meta)
        return path
    with atomic_path(path) as tmp:
        _backend(path).write(tmp, array, meta)
    return path


def _write_detached(path: Path, array: np.ndarray, meta: VolumeMeta) -> None:
    """Header + data file formats (.mhd, .nhdr): the header names its data file after the header's own name.

    Writing to a renamed temporary would leave the data file under the temporary name, so both files are written
    under their final names in a temporary folder beside ``path``, then moved: data first, the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent) as folder:
        _backend(path).write(Path(folder) / path.name, array, meta)
        for item in sorted(Path(folder).iterdir(), key=lambda item: item.name == path.name):
            os.replace(item, path.parent / item.name)


def write_mask(path: str | os.PathLike, mask: np.ndarray, meta: VolumeMeta) -> Path:
    """Write an integer label volume with exactly ``meta``'s geometry (uint8 when the values fit)."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        dtype = np.int16 if mask.min() >= -32768 and mask.max() < 32768 else np.int32
    else:
        dtype = np.uint8
    return write_volume(path, mask.astype(dtype), meta)


def mask_name(case_id: str, meta: VolumeMeta) -> str:
    """File name of the mask for ``case_id``: the case id plus the input's extension."""
    return f"{case_id}{meta.extension}"
