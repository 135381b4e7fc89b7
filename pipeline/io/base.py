"""The volume type and the reader/writer contract.

Array convention: a volume is a numpy array ``(D, H, W)``, the file's voxel index order reversed: the
NIfTI/ITK index ``(i, j, k)`` is ``array[k, j, i]`` (SimpleITK's ``GetArrayFromImage`` order; nibabel arrays are
transposed on read). ``D`` is the file's third voxel axis, normally the acquired slice axis. Nothing is
reoriented: the array keeps the stored voxel order, and the orientation travels in ``VolumeMeta.affine``,
which maps an array index ``(d, h, w, 1)`` to RAS+ world millimetres. Spacing is ``(D, H, W)`` ordered too.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Volume", "VolumeMeta", "VolumeIO", "synthetic_meta", "spacing_of", "same_geometry"]

# (i, j, k) voxel axes <-> (d, h, w) array axes: d = k, h = j, w = i.
REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclasses.dataclass(frozen=True, eq=False)
class VolumeMeta:
    """Geometry and provenance of a volume; enough to write a mask back with the source's exact geometry.

    Attributes:
        shape: array shape ``(D, H, W)``.
        affine: 4x4 map from array index ``(d, h, w, 1)`` to RAS+ world coordinates in mm.
        format: the reader that produced it: ``"nifti"`` (nibabel) or ``"sitk"`` (SimpleITK).
        path: the source file (or DICOM folder).
        extension: extension a mask for this volume gets (``".nii.gz"``, ``".nrrd"``...; NIfTI for DICOM input).
        header: format-specific extras the writer restores (a nibabel header for NIfTI input).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    format: str = "nifti"
    path: str = ""
    extension: str = ".nii.gz"
    header: Any = dataclasses.field(default=None, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, ``(D, H, W)`` order (lengths of the affine's columns)."""
        return spacing_of(self.affine)

    def replace(self, **changes) -> "VolumeMeta":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """An array ``(D, H, W)`` with its geometry."""

    array: np.ndarray
    meta: VolumeMeta


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def same_geometry(a: VolumeMeta, b: VolumeMeta, atol: float = 1e-4) -> bool:
    """True when two volumes share shape and affine (within ``atol`` mm)."""
    return tuple(a.shape) == tuple(b.shape) and np.allclose(a.affine, b.affine, atol=atol)


def synthetic_meta(shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> VolumeMeta:
    """Axis-aligned geometry for generated data: array axes (D, H, W) run along world (S, A, R)... in RAS+.

    The W axis maps to +R (x), H to +A (y), D to +S (z), so a NIfTI written with it has a diagonal affine
    with the spacing on the diagonal, as most scanners' axial volumes do.
    """
    sd, sh, sw = (float(s) for s in spacing)
    affine_ijk = np.diag([sw, sh, sd, 1.0])
    affine_ijk[:3, 3] = origin
    return VolumeMeta(shape=tuple(int(s) for s in shape), affine=affine_ijk @ REVERSE)


class VolumeIO(abc.ABC):
    """A reader/writer for one family of formats (one backend library)."""

    #: lower-case extensions this backend handles, compound first (".nii.gz" before ".gz").
    extensions: tuple[str, ...] = ()

    @abc.abstractmethod
    def read(self, path: Path) -> Volume:
        """Read a 3D volume as ``(D, H, W)`` with its meta; raise InputError naming ``path`` on bad input."""

    @abc.abstractmethod
    def write(self, path: Path, array: np.ndarray, meta: VolumeMeta) -> None:
        """Write ``array`` (D, H, W) at ``path`` (a temporary sibling; the caller renames) with meta's geometry."""


def ras_affine_from_itk(origin, spacing, direction) -> np.ndarray:
    """ITK geometry (LPS, index order i, j, k) -> 4x4 RAS affine of the (d, h, w) array."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = d * np.asarray(spacing, dtype=float)[None, :]
    affine[:3, 3] = origin
    return LPS_TO_RAS @ affine @ REVERSE


def itk_geometry_from_ras(affine: np.ndarray, where: str | os.PathLike = "") -> tuple[tuple, tuple, tuple]:
    """Inverse of :func:`ras_affine_from_itk`: (origin, spacing, direction) in ITK's LPS (i, j, k) terms."""
    from seg25d.pipeline.errors import InputError

    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float) @ REVERSE  # REVERSE and LPS_TO_RAS are involutions
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise InputError(where, "the affine has shear; this format can only store orthogonal directions "
                                "(write NIfTI instead)")
    return tuple(lps[:3, 3]), tuple(spacing), tuple(direction.ravel())
