"""Voxel footprints on the detector: the exact shadow of a box along one detector axis.

A voxel with extents ``s_k`` projects onto a unit detector axis ``e`` as the sum of independent uniform
variables of widths ``w_k = s_k |e_k|``: a box (one nonzero width), a trapezoid (two), a piecewise quadratic
bump (three). Its distribution function has the closed form

    G(t) = sum over signs eps of (prod eps) * max(t + sum(eps_k w_k) / 2, 0)^n / n!  /  prod w_k

over the ``n`` nonzero widths. Integrating the footprint over detector cells (``G`` at the cell edges)
gives the Radon weights: mass-exact (each voxel's weights sum to one), exact line sums for axis-aligned
rays, and no ripple at angles where voxel centres project onto a coarse lattice (45 degrees), where
splatting centres onto the two nearest cells errs by several percent.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = ["box_sum_cdf", "cell_weights"]

_TINY = 1e-7


def box_sum_cdf(t: torch.Tensor, widths) -> torch.Tensor:
    """Distribution function of the sum of centred uniforms of the given widths (zero widths ignored), in
    float64 on ``t``'s device."""
    widths = [float(w) for w in widths if w > _TINY]
    t = t.to(torch.float64)
    if not widths:
        return (t >= 0).to(torch.float64)
    n = len(widths)
    total = torch.zeros_like(t)
    for signs in itertools.product((1, -1), repeat=n):
        shift = sum(s * w for s, w in zip(signs, widths)) / 2
        total += math.prod(signs) * (t + shift).clamp_min(0.0) ** n
    return (total / (math.factorial(n) * math.prod(widths))).clamp(0.0, 1.0)


def cell_weights(centres: torch.Tensor, widths, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector cells hit by each footprint and the share of its mass in each.

    Args:
        centres: footprint centres in cell units (cell ``j`` spans ``[j - 0.5, j + 0.5]``), shape ``(N,)``
            float64, on any device (the results are on it).
        widths: the box widths in cell units (floats).
        cells: number of detector cells (footprint parts outside are dropped).

    Returns:
        ``(index, weight)``, each ``(N, n)`` with ``n`` candidate cells per footprint; weights sum to 1 over
        the cells inside the detector.
    """
    half = sum(w for w in widths if w > _TINY) / 2
    first = torch.floor(centres - half + 0.5).long()
    n = int(math.ceil(2 * half)) + 1
    index = first[:, None] + torch.arange(n, device=centres.device)[None, :]
    rel = index - centres[:, None]
    weight = box_sum_cdf(rel + 0.5, widths) - box_sum_cdf(rel - 0.5, widths)
    weight = torch.where((index >= 0) & (index < cells), weight, 0.0)
    return index, weight
