"""``seg25d bench oracle``: how much of a 3D mask the views can give back at best, per direction set and slab count.

Perfect per-view masks (the binarised slab MIPs of each class's true mask) are lifted back two ways:

- the visual hull: a voxel is kept when every view's mask, grown by one detector cell, covers it (backprojected
  along whole rays; with slabs, each image spread over its own band of the rays, so thin slabs carve concave
  shapes that whole rays cannot);
- MIP lifting: a voxel is kept when it is the brightest voxel of its band of a ray whose view mask is on, i.e.
  ``lift`` of the masks at the image's own maxima.

Their Dice against the true mask, the mean over classes and volumes, is the ceiling a projection network with
that lifting and those directions faces before any learning. Views are taken in physical space (each volume's
voxel size), as ``projection25d`` takes them.
"""

from __future__ import annotations

import numpy as np
import torch

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import label_spec_or_infer, read_manifest
from seg25d.pipeline.metrics import dice_per_class

__all__ = ["bench_oracle", "lifted_ceilings", "DIRECTION_SETS"]

# name -> (kind, views): rotations about D only, about all three axes, or general directions on the sphere
DIRECTION_SETS = {"1 axis (D), 32 views": ("axes", (0,), 32), "3 axes, 8 views each": ("axes", (0, 1, 2), 8),
                  "3 axes, 16 views each": ("axes", (0, 1, 2), 16), "sphere, 24 views": ("sphere", None, 24)}


def _geometry(kind, axes, n, shape, spacing):
    from seg25d.projections import multi_axis_geometry, sphere_geometry

    voxel = tuple(float(s) / min(spacing) for s in spacing)  # as projection25d: the finest axis is one unit
    if kind == "axes":
        return multi_axis_geometry(shape, {a: n for a in axes}, voxel)
    return sphere_geometry(shape, n, spacing=voxel)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(dice_per_class(a[None], b[None])[0])


@torch.no_grad()
def lifted_ceilings(image: np.ndarray, mask: np.ndarray, geometry, slabs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(visual hull, MIP lifting)`` of the perfect slab masks of ``mask`` (both ``(D, H, W)``) as boolean
    volumes; MIP lifting at the maxima of ``image``."""
    from seg25d.projections import MaxIntensityProjection, RayBackprojection, SlabMeanProjection

    mip = MaxIntensityProjection(geometry, slabs)
    truth = torch.from_numpy(mask.astype(np.float32))[None, None]
    views = (mip(truth) >= 0.5).float()
    # the silhouettes grown by one detector cell, so that interpolating them at a thin structure's projected
    # centre reads 1 (the hull is then at most a voxel too wide, never eroded)
    grown = torch.nn.functional.max_pool2d(views[0, 0], 3, stride=1, padding=1)[None, None]
    spread = SlabMeanProjection(geometry, slabs).lift if slabs > 1 else RayBackprojection(geometry)  # whole rays
    coverage = spread(grown) / spread(torch.ones_like(grown)).clamp_min(1e-12)
    in_hull = (coverage[0, 0] >= 1 - 0.5 / len(geometry)).numpy()
    _, argmax = mip.with_argmax(torch.from_numpy(image.astype(np.float32))[None, None])
    at_maxima = (mip.lift(views, argmax)[0, 0] > 0).numpy()
    return in_hull, at_maxima


def bench_oracle(manifest, split: str = "test", sets=None, slabs=(1,)) -> list[dict]:
    """Mean Dice of the visual hull and of MIP lifting of perfect view masks, per direction set and slab count
    (slabs above 1 for views about the volume axes only)."""
    frame = read_manifest(manifest)
    frame = frame[(frame.split == split) & frame.label.notna()]
    if frame.empty:
        raise InputError(manifest, f"no labelled cases in split {split!r}")
    spec = label_spec_or_infer(manifest, frame)
    rows = []
    for name, (kind, axes, n) in (sets or DIRECTION_SETS).items():
        for count in slabs:
            if kind != "axes" and count > 1:
                continue
            hull, lifted, both = [], [], []
            for case in frame.itertuples():
                volume, label = read_volume(case.image), read_volume(case.label)
                geometry = _geometry(kind, axes, n, label.array.shape, volume.meta.spacing)
                scores = []
                for truth in spec.masks(label.array):
                    if truth.any():
                        in_hull, at_maxima = lifted_ceilings(volume.array, truth, geometry, count)
                        scores.append((_dice(in_hull, truth), _dice(at_maxima, truth),
                                       _dice(in_hull & at_maxima, truth)))
                if scores:
                    for values, score in zip((hull, lifted, both), np.mean(scores, axis=0)):
                        values.append(float(score))
            rows.append({"directions": name, "views": len(geometry), "slabs": int(count),
                         "visual_hull_dice": float(np.mean(hull)), "mip_lift_dice": float(np.mean(lifted)),
                         "hull_and_mip_lift_dice": float(np.mean(both)), "cases": len(hull)})
    return rows
