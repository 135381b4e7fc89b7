"""Figures: training curves and MIP overlays of predictions against the ground truth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import atomic_path

__all__ = ["training_curves", "mip_overlay"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(metrics: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Loss (raw and smoothed) and validation Dice per class against the step; path-2 steps shaded."""
    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(metrics.step, metrics.loss, color="0.75", lw=0.8, label="loss")
    ax_loss.plot(metrics.step, metrics.loss.rolling(20, min_periods=1).mean(), color="C0", label="loss (mean of 20)")
    if "path" in metrics and (metrics.path == 2).any():
        steps = metrics.step[metrics.path == 2]
        for ax in (ax_loss, ax_val):
            ax.axvspan(steps.min(), steps.max(), color="C1", alpha=0.12, label="path 2 (frozen U-Net)")
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("training loss"), ax_loss.legend()
    val_cols = [c for c in metrics.columns if c.startswith("val_dice_")]
    val = metrics.dropna(subset=val_cols[:1]) if val_cols else metrics.iloc[:0]
    for col in val_cols:
        ax_val.plot(val.step, val[col], marker="o", ms=3, label=col.removeprefix("val_dice_"))
    ax_val.set_xlabel("step"), ax_val.set_ylabel("validation Dice"), ax_val.set_ylim(0, 1)
    if val_cols:
        ax_val.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def mip_overlay(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, spacing, path: str | os.PathLike,
                title: str = "") -> Path:
    """Maximum-intensity projections of ``image`` (D, H, W) along each axis, with the outlines of the
    projected ground truth (green) and prediction (magenta), at the physical aspect ratio."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    names = ("axial (max over D)", "coronal (max over H)", "sagittal (max over W)")
    for axis, ax, name in zip(range(3), axes, names):
        mip = image.max(axis=axis)
        rest = [s for i, s in enumerate(spacing) if i != axis]
        ax.imshow(mip, cmap="gray", aspect=rest[0] / rest[1], interpolation="nearest")
        if truth is not None and truth.any():
            ax.contour(truth.max(axis=axis), levels=[0.5], colors="lime", linewidths=0.8)
        if pred.any():
            ax.contour(pred.max(axis=axis), levels=[0.5], colors="magenta", linewidths=0.8)
        ax.set_title(name, fontsize=9), ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{title}  (green: truth, magenta: prediction)" if title else "green: truth, magenta: prediction",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
