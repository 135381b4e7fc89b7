"""Resampling to a target spacing and back onto the original grid.

Grids are aligned at voxel *edges* (``scipy.ndimage.zoom(grid_mode=True)``): a volume of N voxels at spacing
s covers N*s mm before and after resampling, so going to a new spacing and back returns the original grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["target_shape", "resample_image", "resample_labels", "resample_masks"]


def target_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling ``shape`` from ``spacing`` to ``new_spacing`` (at least one voxel per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))


def _zoom(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    if tuple(array.shape) == tuple(shape):
        return array.copy()
    factors = [t / s for t, s in zip(shape, array.shape)]
    out = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    assert out.shape == tuple(shape), (out.shape, shape)
    return out


def resample_image(image: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample an intensity volume (or a channel-first stack ``(C, D, H, W)``) to ``shape``.

    Args:
        image: ``(D, H, W)`` or ``(C, D, H, W)``.
        shape: target ``(D, H, W)``.
        order: 1 linear, 3 cubic B-spline.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 4:
        return np.stack([_zoom(c, shape, order) for c in image])
    return _zoom(image, shape, order)


def resample_labels(labels: np.ndarray, shape: Sequence[int], method: str = "linear") -> np.ndarray:
    """Resample an index label map to ``shape``.

    ``method="nearest"`` picks the nearest voxel; ``"linear"`` interpolates each label's indicator linearly and
    takes the most likely label per voxel (smoother borders, no label flips at thin structures' centres).
    """
    if method == "nearest":
        return _zoom(np.asarray(labels), shape, order=0)
    if method != "linear":
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    values = np.unique(labels)
    if len(values) == 1:
        return np.full(shape, values[0], dtype=labels.dtype)
    scores = np.stack([_zoom((labels == v).astype(np.float32), shape, order=1) for v in values])
    return values[np.argmax(scores, axis=0)].astype(labels.dtype)


def resample_masks(masks: np.ndarray, shape: Sequence[int], method: str = "linear") -> np.ndarray:
    """Resample independent (possibly overlapping) boolean masks ``(K, D, H, W)`` to ``shape``.

    ``"linear"`` interpolates each mask and thresholds at 0.5; ``"nearest"`` picks the nearest voxel.
    """
    order = {"nearest": 0, "linear": 1}[method]
    return np.stack([_zoom(m.astype(np.float32), shape, order) >= 0.5 for m in masks])
