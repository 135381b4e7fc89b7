"""Backprojection: the adjoint of the Radon projection, and lifting through a MIP's maxima."""

from __future__ import annotations

from typing import Sequence

import torch

from seg25d.projections import MaxIntensityProjection, RayBackprojection, as_geometry

__all__ = ["backproject", "lift_mip"]


def backproject(projections: torch.Tensor, angles, shape: Sequence[int], spacing: Sequence[float] | None = None
                ) -> torch.Tensor:
    """Smear projections back along their rays: ``(B, C, P, V, U)`` -> ``(B, C, D, H, W)``.

    The exact adjoint of ``project(..., mode="radon")`` for the same angles or geometry: with the plain sum
    as inner product on both sides, ``<project(x), y> == <x, backproject(y)>`` to rounding. Differentiable.

    Args:
        projections: detector images, one per view.
        angles: rotation angles about D (radians), a count, or a :class:`~seg25d.projections.Geometry`.
        shape: volume shape ``(D, H, W)``.
        spacing: voxel size in mm when ``angles`` is not a geometry.

    Example:
        >>> from seg25d.projections import project
        >>> x, y = torch.rand(1, 1, 3, 6, 5), torch.rand(1, 1, 4, 3, 9)
        >>> lhs = (project(x, 4, mode="radon") * y).sum()
        >>> rhs = (x * backproject(y, 4, shape=(3, 6, 5))).sum()
        >>> bool(torch.isclose(lhs, rhs))
        True
    """
    geometry = as_geometry(angles, shape, spacing)
    return RayBackprojection(geometry)(projections)


def lift_mip(projections: torch.Tensor, volume: torch.Tensor, angles, spacing: Sequence[float] | None = None
             ) -> torch.Tensor:
    """Put each detector value into the voxels the MIP of ``volume`` took its maximum from.

    Where ``backproject`` spreads a 2D mask over the whole ray, this puts it at the depth where the ray met
    the brightest structure: the adjoint of the MIP's derivative at ``volume``. Differentiable in
    ``projections``.
    """
    geometry = as_geometry(angles, volume.shape[2:], spacing)
    mip = MaxIntensityProjection(geometry)
    _, argmax = mip.with_argmax(volume)
    return mip.lift(projections, argmax)
