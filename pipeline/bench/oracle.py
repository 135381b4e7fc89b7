"""``seg25d bench oracle``: how much of a 3D mask the views can give back at best, per direction set.

Perfect per-view masks (the binarised MIP of the true mask) are lifted back two ways: the visual hull (a
voxel is kept when every view's mask, grown by one detector cell, covers it: the averaged backprojection
reaches 1) and MIP lifting (a voxel is kept when it is the brightest voxel of a ray whose view mask is on,
i.e. ``lift`` of the masks at the image's own maxima). Their Dice against the true mask is the ceiling a
projection network with that lifting and those directions faces before any learning.
"""

from __future__ import annotations

import numpy as np
import torch

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import read_label_spec, read_manifest
from seg25d.pipeline.metrics import dice_per_class

__all__ = ["bench_oracle", "DIRECTION_SETS"]

# name -> (kind, views): rotations about D only, about all three axes, or general directions on the sphere
DIRECTION_SETS = {"1 axis (D), 32 views": ("axes", (0,), 32), "3 axes, 8 views each": ("axes", (0, 1, 2), 8),
                  "3 axes, 16 views each": ("axes", (0, 1, 2), 16), "sphere, 24 views": ("sphere", None, 24)}


def _geometry(kind, axes, n, shape):
    from seg25d.projections import multi_axis_geometry, sphere_geometry

    return multi_axis_geometry(shape, {a: n for a in axes}) if kind == "axes" else sphere_geometry(shape, n)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(dice_per_class(a[None], b[None])[0])


@torch.no_grad()
def bench_oracle(manifest, split: str = "test", sets=None) -> list[dict]:
    """Mean Dice of the visual hull and of MIP lifting of perfect view masks, per direction set."""
    from seg25d.projections import MaxIntensityProjection, RayBackprojection

    spec = read_label_spec(manifest)
    frame = read_manifest(manifest)
    frame = frame[(frame.split == split) & frame.label.notna()]
    if frame.empty:
        raise InputError(manifest, f"no labelled cases in split {split!r}")
    rows = []
    for name, (kind, axes, n) in (sets or DIRECTION_SETS).items():
        hull, lifted, both = [], [], []
        for case in frame.itertuples():
            image = torch.from_numpy(read_volume(case.image).array.astype(np.float32))[None, None]
            label = read_volume(case.label).array
            truth = (spec.masks(label).any(0) if spec else label > 0)
            mask = torch.from_numpy(truth.astype(np.float32))[None, None]
            geometry = _geometry(kind, axes, n, truth.shape)
            mip = MaxIntensityProjection(geometry)
            views = (mip(mask) >= 0.5).float()
            # the silhouettes grown by one detector cell, so that interpolating them at a thin structure's
            # projected centre reads 1 (the hull is then at most a voxel too wide, never eroded)
            grown = torch.nn.functional.max_pool2d(views[0, 0], 3, stride=1, padding=1)[None, None]
            coverage = RayBackprojection(geometry)(grown) / RayBackprojection(geometry)(torch.ones_like(views))
            in_hull = (coverage[0, 0] >= 1 - 0.5 / len(geometry)).numpy()
            _, argmax = mip.with_argmax(image)
            at_maxima = (mip.lift(views, argmax)[0, 0] > 0).numpy()
            hull.append(_dice(in_hull, truth))
            lifted.append(_dice(at_maxima, truth))
            both.append(_dice(in_hull & at_maxima, truth))
        rows.append({"directions": name, "views": len(geometry), "visual_hull_dice": float(np.mean(hull)),
                     "mip_lift_dice": float(np.mean(lifted)), "hull_and_mip_lift_dice": float(np.mean(both)),
                     "cases": len(frame)})
    return rows
