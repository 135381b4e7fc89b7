"""Projection geometry and projectors: volumes to 2D images from many directions.

``project(volume, angles, mode="mip" | "radon")`` is the one-call form for rotations about the D axis;
:class:`Geometry` (built with :func:`axis_geometry`, :func:`multi_axis_geometry`, :func:`sphere_geometry`
or :func:`direction_geometry`) covers several rotation axes and arbitrary directions with the same calls.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from seg25d.projections.geometry import (
    AXIS_NAMES, Geometry, axis_geometry, direction_geometry, fibonacci_directions, multi_axis_geometry,
    sphere_geometry, uniform_angles,
)
from seg25d.projections.detector import resample_views
from seg25d.projections.operators import (
    MaxIntensityProjection, RayBackprojection, RayTransform, SlabMeanProjection, projector_plan,
)

__all__ = [
    "project", "as_geometry", "Geometry", "axis_geometry", "multi_axis_geometry", "sphere_geometry",
    "direction_geometry", "fibonacci_directions", "uniform_angles", "RayTransform", "RayBackprojection",
    "MaxIntensityProjection", "SlabMeanProjection", "projector_plan", "resample_views", "AXIS_NAMES", "MODES",
]

MODES = ("mip", "radon")


def as_geometry(angles, shape: Sequence[int], spacing: Sequence[float] | None = None) -> Geometry:
    """A :class:`Geometry` as given, or rotations about D by ``angles`` (radians, array-like or count)."""
    if isinstance(angles, Geometry):
        if tuple(angles.shape) != tuple(shape):
            raise ValueError(f"geometry is for shape {angles.shape}, volume has {tuple(shape)}")
        return angles
    if isinstance(angles, torch.Tensor):
        angles = angles.detach().cpu().numpy()
    if not isinstance(angles, (int, np.integer)):
        angles = np.asarray(angles, dtype=float).reshape(-1)
    return axis_geometry(shape, angles, axis=0, spacing=(1.0, 1.0, 1.0) if spacing is None else spacing)


def project(volume: torch.Tensor, angles, mode: str = "mip", spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Project ``volume`` (B, C, D, H, W) from every direction: ``(B, C, P, D, U)``.

    Args:
        volume: the volume.
        angles: rotation angles about the D axis in radians (``[0, pi)``), a count of equally spaced angles,
            or a :class:`Geometry` (then the result is ``(B, C, P, V, U)`` on its detector).
        mode: ``"mip"`` (maximum intensity) or ``"radon"`` (line sums in mm x intensity).
        spacing: voxel size ``(sd, sh, sw)`` in mm when ``angles`` is not a geometry (default isotropic 1 mm).

    Example:
        >>> x = torch.zeros(1, 1, 3, 8, 8); x[0, 0, 1, 2, 5] = 1.0
        >>> y = project(x, [0.0], mode="mip")
        >>> y.shape, float(y.max())
        (torch.Size([1, 1, 1, 3, 12]), 1.0)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    geometry = as_geometry(angles, volume.shape[2:], spacing)
    op = MaxIntensityProjection(geometry) if mode == "mip" else RayTransform(geometry)
    return op(volume)
