"""Index and weight tables for axis views (rotations about one volume axis).

All rows along the rotation axis share one in-plane geometry, so the tables index the ``Np * Nq`` voxels
of one plane and every gather moves a contiguous run of ``N_a * B * C`` values.

- Radon (line sums) is *voxel-driven* with exact footprints: each voxel's shadow on the detector (a
  trapezoid, see :mod:`seg25d.projections.footprint`) is integrated over the detector columns it covers,
  scaled by ``sp * sq / du``. Hence ``sum_j R[j] * du`` equals the volume's mass at every angle, ``R[j]``
  approximates the cell-averaged line integral (mm times intensity), and axis-aligned views give exact
  sums. The backprojection is the transpose: each voxel reads the detector cells its shadow covers.
- MIP is *ray-driven* (Joseph's method): each ray steps one voxel at a time along its major axis and
  interpolates linearly along the minor one; samples closer than half a voxel outside the volume take the
  edge voxel, samples farther out are invalid. The image is the maximum over a ray's samples.
"""

from __future__ import annotations

import numpy as np
import torch

from seg25d.projections.footprint import cell_weights
from seg25d.projections.geometry import plane_axes

__all__ = ["splat_matrix", "mip_tables"]


def splat_matrix(geometry, views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """COO triplets of the radon matrix ``(len(views) * U, Np * Nq)`` of axis views about one axis."""
    axis = geometry.axes[views[0]]
    p, q = plane_axes(axis)
    n_p, n_q = geometry.shape[p], geometry.shape[q]
    s_p, s_q = geometry.spacing[p], geometry.spacing[q]
    u_count, du = geometry.detector_shape[1], geometry.du
    xp = ((np.arange(n_p) - (n_p - 1) / 2) * s_p)[:, None]
    xq = ((np.arange(n_q) - (n_q - 1) / 2) * s_q)[None, :]
    voxel = np.arange(n_p * n_q)
    rows, cols, vals = [], [], []
    for k, view in enumerate(views):
        e_u = geometry.u_axes[view]
        centres = ((xp * e_u[p] + xq * e_u[q]) / du + (u_count - 1) / 2).ravel()
        widths = (s_p * abs(e_u[p]) / du, s_q * abs(e_u[q]) / du)
        index, weight = (t.numpy() for t in cell_weights(torch.from_numpy(centres), widths, u_count))
        keep = weight > 0
        rows.append(k * u_count + index[keep])
        cols.append(np.broadcast_to(voxel[:, None], index.shape)[keep])
        vals.append(weight[keep])
    scale = s_p * s_q / du
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals) * scale, (len(views) * u_count, n_p * n_q)


def mip_tables(geometry, view: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Joseph sampling of one axis view: ``(idx0, idx1, alpha, K)``.

    ``idx0``/``idx1`` (``U * K``) index the plane's voxels (``Np * Nq`` marks an invalid sample), ``alpha``
    is the weight of ``idx1``; sample ``k`` of column ``j`` is entry ``j * K + k``.
    """
    axis = geometry.axes[view]
    p, q = plane_axes(axis)
    n = (geometry.shape[p], geometry.shape[q])
    s = (geometry.spacing[p], geometry.spacing[q])
    u_count, du = geometry.detector_shape[1], geometry.du
    ray = geometry.rays[view][[p, q]]
    e_u = geometry.u_axes[view][[p, q]]
    step = np.abs(ray) / np.asarray(s)
    major = int(np.argmax(step))
    minor = 1 - major
    k_count = n[major]
    u = (np.arange(u_count) - (u_count - 1) / 2)[:, None] * du
    i_major = np.arange(k_count)[None, :]
    x_major = (i_major - (n[major] - 1) / 2) * s[major]
    t = (x_major - u * e_u[major]) / ray[major]
    f = (u * e_u[minor] + t * ray[minor]) / s[minor] + (n[minor] - 1) / 2
    f = np.where(np.abs(f - np.round(f)) < 1e-9, np.round(f), f)  # exact voxel hits at multiples of pi/2
    valid = (f >= -0.5) & (f <= n[minor] - 0.5)
    fc = np.clip(f, 0, n[minor] - 1)
    i0 = np.floor(fc).astype(np.int64)
    alpha = fc - i0
    i1 = np.minimum(i0 + 1, n[minor] - 1)
    i_major = np.broadcast_to(i_major, i0.shape)

    def flat(i_minor):
        ip, iq = (i_major, i_minor) if major == 0 else (i_minor, i_major)
        return np.where(valid, ip * n[1] + iq, n[0] * n[1])

    alpha = np.where(valid, alpha, 0.0)
    return flat(i0).ravel(), flat(i1).ravel(), alpha.ravel(), k_count
