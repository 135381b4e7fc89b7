"""Projection along arbitrary directions (general views), computed on the fly.

Radon is voxel-driven with separable exact footprints on square detector cells (mass-exact, like the
axis views); MIP is ray-driven (Joseph's method in 3D: step along the major axis, bilinear interpolation in the
two minor ones). Tables would take tens of MB per view at 128^3, so they are computed per call, in chunks, with
torch on the volume's device (float64; elementwise only, so a GPU computes the same weights as the CPU).
Volumes are handled flattened: ``x`` is ``(N, BC)`` with ``N = D * H * W`` in C order.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from seg25d.projections.footprint import cell_weights

__all__ = ["voxel_coordinates", "splat_weights", "radon", "backproject", "mip_samples", "mip", "mip_lift"]

_CHUNK = 1 << 22  # elements per temporary


def voxel_coordinates(shape, spacing, device, dtype) -> torch.Tensor:
    """``(N, 3)`` physical coordinates (mm) of the voxel centres relative to the volume centre."""
    axes = [(torch.arange(n, device=device, dtype=dtype) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grid], dim=1)


def _along(xyz: torch.Tensor, axis: np.ndarray) -> torch.Tensor:
    """Coordinates ``(N, 3)`` projected onto ``axis``, summed in a fixed order."""
    return xyz[:, 0] * float(axis[0]) + xyz[:, 1] * float(axis[1]) + xyz[:, 2] * float(axis[2])


def splat_weights(geometry, view: int, coords: torch.Tensor):
    """Detector cells and weights of each voxel's footprint: ``(index, weight)``, each ``(N, n)``.

    The footprint is separable: the exact shadow of the voxel box along the detector's column axis times
    the one along its row axis (see :mod:`seg25d.projections.footprint`); mass-exact per voxel.
    """
    rows, cols = geometry.detector_shape
    du = geometry.du
    spacing = np.asarray(geometry.spacing)
    xyz = coords.detach().to(torch.float64)
    e_u, e_v = geometry.u_axes[view], geometry.v_axes[view]
    iu, wu = cell_weights(_along(xyz, e_u) / du + (cols - 1) / 2, spacing * np.abs(e_u) / du, cols)
    iv, wv = cell_weights(_along(xyz, e_v) / du + (rows - 1) / 2, spacing * np.abs(e_v) / du, rows)
    index = (iv[:, :, None] * cols + iu[:, None, :]).reshape(len(xyz), -1)
    weight = (wv[:, :, None] * wu[:, None, :]).reshape(len(xyz), -1)
    index = torch.where(weight > 0, index, 0)
    return index, (weight * _scale(geometry)).to(coords.dtype)


def _scale(geometry) -> float:
    sd, sh, sw = geometry.spacing
    return sd * sh * sw / geometry.du**2


def _voxel_chunks(n_vox: int, width: int, columns: int):
    step = max(1, _CHUNK // max(1, width * columns))
    return [slice(s, min(n_vox, s + step)) for s in range(0, n_vox, step)]


def radon(geometry, view: int, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Line sums of ``x`` (N, BC) for one general view: ``(V * U, BC)``."""
    rows, cols = geometry.detector_shape
    out = x.new_zeros(rows * cols, x.shape[1])
    index, weight = splat_weights(geometry, view, coords)
    for sl in _voxel_chunks(len(coords), index.shape[1], x.shape[1]):
        out.index_add_(0, index[sl].reshape(-1), (x[sl, None, :] * weight[sl, :, None]).reshape(-1, x.shape[1]))
    return out


def backproject(geometry, view: int, y: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`radon`: ``y`` (V * U, BC) -> ``(N, BC)``."""
    out = y.new_empty(coords.shape[0], y.shape[1])
    index, weight = splat_weights(geometry, view, coords)
    for sl in _voxel_chunks(len(coords), index.shape[1], y.shape[1]):
        gathered = y.index_select(0, index[sl].reshape(-1)).view(-1, index.shape[1], y.shape[1])
        out[sl] = (gathered * weight[sl, :, None]).sum(dim=1)
    return out


def _major(geometry, view: int) -> int:
    """The axis a view's rays step along (largest step in voxels)."""
    return int(np.argmax(np.abs(geometry.rays[view]) / np.asarray(geometry.spacing)))


@functools.lru_cache(maxsize=256)
def _frame(geometry, view: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A view's ray, column and row axes as float64 tensors on ``device``, made once."""
    return tuple(torch.tensor(a[view], dtype=torch.float64, device=device)
                 for a in (geometry.rays, geometry.u_axes, geometry.v_axes))


def mip_samples(geometry, view: int, rays: torch.Tensor, k: torch.Tensor | None = None):
    """Joseph samples of the given detector cells (flat indices ``rays``).

    With ``k=None`` all ``K`` samples per ray: four ``(voxel index, weight)`` corner pairs of shape
    ``(len(rays), K)``; with ``k`` (same shape as ``rays``) only that sample per ray. Invalid samples have
    index ``N`` (one past the last voxel: the fill row) with weight 1 at the first corner and 0 at the others,
    so they read the fill value.
    """
    shape, spacing = geometry.shape, geometry.spacing
    rows, cols = geometry.detector_shape
    device = rays.device
    dt = torch.float64
    ray, e_u, e_v = _frame(geometry, view, str(device))
    major = _major(geometry, view)
    minors = [a for a in range(3) if a != major]
    u = ((rays % cols).to(dt) - (cols - 1) / 2) * geometry.du
    v = ((rays // cols).to(dt) - (rows - 1) / 2) * geometry.du
    start = u[:, None] * e_u + v[:, None] * e_v  # (R, 3)
    i_major = (torch.arange(shape[major], device=device, dtype=dt)[None, :] if k is None else k.to(dt)[:, None])
    t = ((i_major - (shape[major] - 1) / 2) * spacing[major] - start[:, major:major + 1]) / ray[major]
    valid = torch.ones_like(t, dtype=torch.bool)
    parts = []
    for a in minors:
        f = (start[:, a:a + 1] + t * ray[a]) / spacing[a] + (shape[a] - 1) / 2
        valid &= (f >= -0.5) & (f <= shape[a] - 0.5)
        fc = f.clamp(0, shape[a] - 1)
        i0 = torch.floor(fc)
        parts.append((i0.long(), (i0 + 1).clamp(max=shape[a] - 1).long(), fc - i0))
    strides = (shape[1] * shape[2], shape[2], 1)
    base = i_major.long() * strides[major]
    n_vox = shape[0] * shape[1] * shape[2]
    (a0, a1, fa), (b0, b1, fb) = parts
    corners = []
    for ia, wa in ((a0, 1 - fa), (a1, fa)):
        for ib, wb in ((b0, 1 - fb), (b1, fb)):
            idx = base + ia * strides[minors[0]] + ib * strides[minors[1]]
            fill_weight = 0.0 if corners else 1.0
            corners.append((torch.where(valid, idx, n_vox), torch.where(valid, wa * wb, fill_weight)))
    return corners


def _fill(x: torch.Tensor) -> torch.Tensor:
    return x.amin(dim=0, keepdim=True)


def mip(geometry, view: int, x: torch.Tensor, want_argmax: bool = False):
    """MIP of ``x`` (N, BC) for one general view: ``(V * U, BC)`` (and the argmax sample per ray and column).

    Rays that miss the volume take the volume's minimum (per column of ``x``).
    """
    rows, cols = geometry.detector_shape
    n_rays = rows * cols
    xe = torch.cat([x, _fill(x)], dim=0)
    k_count = geometry.shape[_major(geometry, view)]
    chunk = max(1, _CHUNK // (k_count * max(1, x.shape[1])))
    out = x.new_empty(n_rays, x.shape[1])
    arg = torch.empty(n_rays, x.shape[1], dtype=torch.long, device=x.device) if want_argmax else None
    for s in range(0, n_rays, chunk):
        rays = torch.arange(s, min(n_rays, s + chunk), device=x.device)
        acc = None
        for idx, w in mip_samples(geometry, view, rays):
            term = xe.index_select(0, idx.reshape(-1)) * w.reshape(-1, 1).to(x.dtype)
            acc = term if acc is None else acc.add_(term)
        acc = acc.view(len(rays), k_count, -1)
        if want_argmax:
            out[rays], arg[rays] = acc.max(dim=1)
        else:
            out[rays] = acc.amax(dim=1)
    return out, arg


def mip_lift(geometry, view: int, y: torch.Tensor, arg: torch.Tensor, n_vox: int) -> torch.Tensor:
    """Send each detector value back to the voxels its ray's maximum came from: ``(V * U, BC)`` -> ``(N, BC)``.

    This is the adjoint of the MIP's derivative at the volume that produced ``arg``.
    """
    n_rays, bc = y.shape
    out = y.new_zeros((n_vox + 1) * bc)
    chunk = max(1, _CHUNK // max(1, bc))
    column = torch.arange(bc, device=y.device)
    for s in range(0, n_rays, chunk):
        rays = torch.arange(s, min(n_rays, s + chunk), device=y.device)
        k = arg[rays]  # (R, BC)
        rays_rep = rays[:, None].expand_as(k).reshape(-1)
        vals = y[rays].reshape(-1)
        cols = column.expand_as(k).reshape(-1)
        for idx, w in mip_samples(geometry, view, rays_rep, k.reshape(-1)):
            out.index_add_(0, idx.reshape(-1) * bc + cols, vals * w.reshape(-1).to(y.dtype))
    return out.view(n_vox + 1, bc)[:n_vox]
