"""Moving detector data between two geometries of the same views on grids of different voxel size."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from seg25d.projections.geometry import Geometry

__all__ = ["resample_views"]


def resample_views(y: torch.Tensor, source: Geometry, target: Geometry, scale: float) -> torch.Tensor:
    """Resample projections ``y`` (B, C, P, V, U) from ``source``'s detector onto ``target``'s (bilinear).

    Both geometries hold the same views of the same volume centre; a ``source`` voxel is ``scale`` times a
    ``target`` voxel (e.g. 2 for a half-resolution grid). Detector cells outside the source read 0.

    Example:
        >>> from seg25d.projections import axis_geometry
        >>> fine, coarse = axis_geometry((8, 8, 8), 2), axis_geometry((4, 4, 4), 2)
        >>> y = torch.ones(1, 1, 2, *coarse.detector_shape)
        >>> resample_views(y, coarse, fine, 2.0).shape
        torch.Size([1, 1, 2, 8, 12])
    """
    b, c, p, vs, us = y.shape
    vt, ut = target.detector_shape
    dt, device = torch.float64, y.device
    cols = (torch.arange(ut, dtype=dt, device=device) - (ut - 1) / 2) * target.du / (scale * source.du) + (us - 1) / 2
    grids = []
    for view in range(p):
        axis = target.axes[view]
        r = torch.arange(vt, dtype=dt, device=device)
        if axis >= 0:
            position = (r - target.row_offset(axis) - (target.shape[axis] - 1) / 2) * target.spacing[axis]
            rows = position / (scale * source.spacing[axis]) + (source.shape[axis] - 1) / 2 + source.row_offset(axis)
        else:
            rows = (r - (vt - 1) / 2) * target.du / (scale * source.du) + (vs - 1) / 2
        gy, gx = torch.meshgrid(2 * rows / max(vs - 1, 1) - 1, 2 * cols / max(us - 1, 1) - 1, indexing="ij")
        grids.append(torch.stack([gx, gy], dim=-1))
    grid = torch.stack(grids).to(y.dtype).repeat(b, 1, 1, 1)
    flat = y.transpose(1, 2).reshape(b * p, c, vs, us)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(b, p, c, vt, ut).transpose(1, 2)
