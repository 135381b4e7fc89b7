"""The simplest baseline any method must beat: one global intensity threshold chosen on the training volumes."""

from __future__ import annotations

import os

import numpy as np

from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import read_label_spec, read_manifest
from seg25d.pipeline.preprocess import Preprocessing

__all__ = ["best_global_threshold", "threshold_dice"]


def _volumes(manifest, split: str, normalize: str):
    prep = Preprocessing(None, normalize)
    spec = read_label_spec(manifest)
    frame = read_manifest(manifest)
    for row in frame[(frame.split == split) & frame.label.notna()].itertuples():
        image = prep.image(read_volume(row.image).array, (1, 1, 1))[0]
        label = read_volume(row.label).array
        yield image, (spec.masks(label).any(0) if spec else label > 0)


def threshold_dice(manifest: str | os.PathLike, split: str, threshold: float, normalize: str = "case_zscore") -> float:
    """Mean Dice over a split's cases of ``image > threshold`` (foreground = any class)."""
    scores = []
    for image, truth in _volumes(manifest, split, normalize):
        pred = image > threshold
        total = pred.sum() + truth.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(pred, truth).sum() / total)
    return float(np.mean(scores))


def best_global_threshold(manifest: str | os.PathLike, normalize: str = "case_zscore", candidates: int = 200
                          ) -> tuple[float, float]:
    """The threshold (on normalised intensities) with the best mean training Dice, and that Dice."""
    volumes = list(_volumes(manifest, "train", normalize))
    pooled = np.concatenate([im.ravel() for im, _ in volumes])
    grid = np.unique(np.quantile(pooled, np.linspace(0.5, 0.9999, candidates)))
    best = (-1.0, 0.0)
    for t in grid:
        dice = np.mean([2.0 * np.logical_and(im > t, tr).sum() / max((im > t).sum() + tr.sum(), 1)
                        for im, tr in volumes])
        best = max(best, (float(dice), float(t)))
    return best[1], best[0]
