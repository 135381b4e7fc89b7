"""Overlap and surface metrics for binary segmentation masks (numpy/scipy only).

``binary_metrics`` compares one predicted mask with one reference mask of any dimensionality and
returns dice, iou, precision, sensitivity, specificity, hd95 (mm) and both volumes (ml).
``summarize`` turns a per-(case, class) table of those numbers into per-class means.

Counts: TP = |P & T|, FP = |P & ~T|, FN = |~P & T|, TN = |~P & ~T|; dice = 2TP / (|P| + |T|),
iou = TP / |P | T|, precision = TP / |P|, sensitivity = TP / |T|, specificity = TN / |~T|,
volume = voxel count x prod(spacing) / 1000.

HD95 follows MONAI's ``compute_hausdorff_distance(percentile=95)`` with its default settings:
the surface of a mask is the mask minus its ``scipy.ndimage.binary_erosion`` with scipy's default
structuring element (face connectivity, the 3x3(x3) cross; voxels outside the image count as
background); the directed distances from every surface voxel of one mask to the nearest surface
voxel of the other come from ``distance_transform_edt(..., sampling=spacing)``, so anisotropic
spacing is exact; hd95 = max(95th percentile pred -> true, 95th percentile true -> pred), with
linear interpolation between order statistics (``numpy.percentile`` / ``torch.quantile``).

Empty masks (``empty=`` policy). A ratio whose denominator is 0 is "0/0":

==========================  ======================  ==========================================
situation                   ``"nan"`` (default)     ``"one"``
==========================  ======================  ==========================================
both empty: dice, iou,      NaN                     1.0 (perfect agreement)
precision, sensitivity
both empty: hd95            NaN                     0.0
pred empty, truth not       dice = iou = 0,         dice = iou = 0, sensitivity = 0,
                            sensitivity = 0,        precision = 0, hd95 = image diagonal (mm)
                            precision = NaN,
                            hd95 = NaN
truth empty, pred not       dice = iou = 0,         dice = iou = 0, precision = 0,
                            precision = 0,          sensitivity = 0, hd95 = image diagonal (mm)
                            sensitivity = NaN,
                            hd95 = NaN
truth has no negatives      specificity = NaN       specificity = 1 if the prediction has no
(all foreground)                                    negatives either, else 0
==========================  ======================  ==========================================

``"nan"`` is MONAI-like (an undefined value stays undefined and is left out of means, see
``summarize``); note that MONAI's ``compute_dice(ignore_empty=True)`` additionally makes dice NaN for
an empty truth with a non-empty prediction, whereas here that is 2*0/(|P|+0) = 0. ``"one"`` is
segmentation_models_pytorch-like and never produces NaN. The image diagonal, the worst-case penalty,
is ``sqrt(sum((shape_i * spacing_i) ** 2))``, the diagonal of the imaged extent in mm.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["EMPTY_POLICIES", "METRICS", "binary_metrics", "surface_distances", "hd95", "summarize", "dice_per_class"]

EMPTY_POLICIES = ("nan", "one")
METRICS = ("dice", "iou", "precision", "sensitivity", "specificity", "hd95", "volume_pred_ml", "volume_true_ml")


def binary_metrics(pred: np.ndarray, true: np.ndarray, spacing: Sequence[float],
                   empty: str = "nan") -> dict[str, float]:
    """All metrics of one predicted mask against one reference mask.

    Args:
        pred: predicted mask (anything nonzero is foreground), same shape as ``true``.
        true: reference mask.
        spacing: voxel size in mm per array axis (``len(spacing) == pred.ndim``).
        empty: empty-mask policy, ``"nan"`` or ``"one"`` (see the module docstring).

    Returns:
        ``{name: float}`` for every name in ``METRICS``, plain Python floats.

    Raises:
        ValueError: on mismatched shapes, a wrong spacing length or an unknown policy.
    """
    pred, true, spacing = _check_inputs(pred, true, spacing, empty)
    n_pred = int(np.count_nonzero(pred))
    n_true = int(np.count_nonzero(true))
    tp = int(np.count_nonzero(pred & true))
    fp = n_pred - tp
    n_neg = true.size - n_true
    tn = n_neg - fp
    n_pred_neg = pred.size - n_pred
    voxel_ml = float(np.prod(spacing)) / 1000.0

    both_empty = n_pred == 0 and n_true == 0
    return {
        "dice": _ratio(2 * tp, n_pred + n_true, both_empty, empty),
        "iou": _ratio(tp, n_pred + n_true - tp, both_empty, empty),
        "precision": _ratio(tp, n_pred, both_empty, empty),
        "sensitivity": _ratio(tp, n_true, both_empty, empty),
        "specificity": _ratio(tn, n_neg, n_neg == 0 and n_pred_neg == 0, empty),
        "hd95": _hd95_with_policy(pred, true, spacing, empty, n_pred, n_true),
        "volume_pred_ml": n_pred * voxel_ml,
        "volume_true_ml": n_true * voxel_ml,
    }


def surface_distances(pred: np.ndarray, true: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> true surface, true surface -> pred surface).

    Both masks must be non-empty. The arrays are cropped to the bounding box of their union plus a
    one-voxel margin first; this changes nothing (all surface voxels lie inside) but keeps the
    distance transforms small.
    """
    pred, true, spacing = _check_inputs(pred, true, spacing, "nan")
    if not pred.any() or not true.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _union_box(pred, true)
    pred, true = _pad_one(pred[box]), _pad_one(true[box])
    edge_pred = pred & ~ndimage.binary_erosion(pred)
    edge_true = true & ~ndimage.binary_erosion(true)
    to_true = ndimage.distance_transform_edt(~edge_true, sampling=spacing)[edge_pred]
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=spacing)[edge_true]
    return to_true, to_pred


def hd95(pred: np.ndarray, true: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two non-empty masks."""
    to_true, to_pred = surface_distances(pred, true, spacing)
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def summarize(frame) -> dict:
    """Per-class means of a metrics table, leaving undefined values out.

    Args:
        frame: pandas DataFrame with columns ``case_id``, ``class`` and metric columns (any of
            ``METRICS``); rows with a non-empty ``error`` column (failed cases) are skipped.

    Returns:
        ``{"metrics": [...], "classes": {class: {"n_cases": int, metric: {"mean", "sd", "n",
        "n_undefined"}}}, "foreground_mean": {metric: float}}``. ``mean``/``sd`` use only finite
        values (``sd`` is the sample standard deviation, NaN below two values); ``n`` counts them and
        ``n_undefined`` counts the NaN/inf ones. ``foreground_mean`` is the mean over classes of the
        per-class means that are defined (NaN when none is). NaN is left as float NaN for
        ``write_json`` to turn into null.
    """
    if "error" in frame.columns:
        frame = frame[frame["error"].isna() | (frame["error"].astype(str) == "")]
    metrics = [m for m in METRICS if m in frame.columns]
    classes: dict[str, dict] = {}
    for name in frame["class"].dropna().unique():
        rows = frame[frame["class"] == name]
        entry: dict = {"n_cases": int(rows["case_id"].nunique())}
        for metric in metrics:
            values = rows[metric].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            entry[metric] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "sd": float(finite.std(ddof=1)) if finite.size >= 2 else math.nan,
                "n": int(finite.size),
                "n_undefined": int(values.size - finite.size),
            }
        classes[str(name)] = entry
    foreground = {}
    for metric in metrics:
        means = [c[metric]["mean"] for c in classes.values() if math.isfinite(c[metric]["mean"])]
        foreground[metric] = float(np.mean(means)) if means else math.nan
    return {"metrics": metrics, "classes": classes, "foreground_mean": foreground}


def _check_inputs(pred, true, spacing, empty) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    pred = np.asarray(pred) != 0
    true = np.asarray(true) != 0
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {true.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {pred.ndim}D mask")
    if not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return pred, true, spacing


def _ratio(num: int, den: int, perfect: bool, empty: str) -> float:
    """num / den; for 0/0 NaN (policy "nan") or 1 if ``perfect`` else 0 (policy "one")."""
    if den > 0:
        return num / den
    if empty == "nan":
        return math.nan
    return 1.0 if perfect else 0.0


def _hd95_with_policy(pred, true, spacing, empty, n_pred, n_true) -> float:
    if n_pred and n_true:
        return hd95(pred, true, spacing)
    if empty == "nan":
        return math.nan
    if n_pred == 0 and n_true == 0:
        return 0.0
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))


def _union_box(pred: np.ndarray, true: np.ndarray) -> tuple[slice, ...]:
    union = pred | true
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _pad_one(mask: np.ndarray) -> np.ndarray:
    """Zero margin of one voxel; erosion treats outside as background, so edges are unchanged."""
    return np.pad(mask, 1, mode="constant", constant_values=False)


def dice_per_class(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Hard Dice per class of ``(K, ...)`` masks; both empty counts as 1."""
    axes = tuple(range(1, pred.ndim))
    inter = np.logical_and(pred, true).sum(axes)
    total = pred.sum(axes) + true.sum(axes)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
