"""The UW-Madison GI Tract competition score: ``0.4 * dice + 0.6 * (1 - hausdorff)``.

The organisers never published their scoring code; these are the conventions of the most widely used
public reimplementation, with switches for the other readings in circulation:

- Dice per (slice, class) row of the truth; rows where truth and prediction are both empty are skipped
  (``empty_dice="skip"``) or count as Dice 1 (``empty_dice="one"``); the mean over the counted rows.
- Hausdorff per case-day on the union of the three organs (``hausdorff_volume="union"``) or on one volume
  per organ (``"per_class"``, the mean over all case-day/organ volumes): slices stacked by slice number
  into (D, H, W), voxel index coordinates divided by the axis lengths (the volume becomes the unit cube),
  the symmetric Hausdorff distance divided by sqrt(3) so it lies in [0, 1]. It is 1 when exactly one side
  is empty or when the prediction has more than 10 times the true voxels; volumes empty on both sides are
  skipped; the mean over the remaining volumes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.kaggle.layout import CLASSES, read_rle_csv, scan_case_days, stack_masks

__all__ = [
    "DICE_WEIGHT",
    "HAUSDORFF_WEIGHT",
    "EMPTY_DICE_CHOICES",
    "HAUSDORFF_VOLUME_CHOICES",
    "normalized_hausdorff",
    "score_submission",
    "score_volumes",
    "truth_to_submission",
]

DICE_WEIGHT = 0.4
HAUSDORFF_WEIGHT = 0.6
OVERSIZE_FACTOR = 10  # a prediction with more than this many times the true voxels gets Hausdorff 1
EMPTY_DICE_CHOICES = ("skip", "one")
HAUSDORFF_VOLUME_CHOICES = ("union", "per_class")


def normalized_hausdorff(truth: np.ndarray, pred: np.ndarray) -> float | None:
    """The competition's Hausdorff term for one (D, H, W) volume pair.

    Coordinates are index / axis length per axis; the symmetric Hausdorff distance (the larger of the two
    directed distances) is divided by sqrt(3).

    Returns:
        A value in [0, 1]; 1.0 when exactly one side is empty or the prediction has more than 10x the true
        voxels; None when both are empty (the volume is skipped).
    """
    from scipy.spatial import cKDTree

    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch {truth.shape} vs {pred.shape}")
    n_truth, n_pred = int(truth.sum()), int(pred.sum())
    if n_truth == 0 and n_pred == 0:
        return None
    if n_truth == 0 or n_pred == 0 or n_pred > OVERSIZE_FACTOR * n_truth:
        return 1.0
    if np.array_equal(truth, pred):
        return 0.0
    scale = np.array(truth.shape, dtype=np.float64)
    a = np.argwhere(truth) / scale
    b = np.argwhere(pred) / scale
    # Exact nearest-neighbour distances (k-d tree): fast also for large, nearly identical sets, where
    # scipy's early-break directed_hausdorff degrades to all pairs.
    distance = max(cKDTree(b).query(a, k=1)[0].max(), cKDTree(a).query(b, k=1)[0].max())
    return float(distance / math.sqrt(truth.ndim))


def score_submission(submission_csv: str | os.PathLike, truth_csv: str | os.PathLike, root: str | os.PathLike,
                     empty_dice: str = "skip", hausdorff_volume: str = "union", split: str = "train") -> dict:
    """Score a submission against the truth the way the competition did.

    Args:
        submission_csv: ``id,class,predicted`` (RLE row-major, empty = no mask), one row per truth row.
        truth_csv: ``id,class,segmentation`` (train.csv or a part of it).
        root: the dataset root; slice sizes come from the file names under ``root/<split>``.
        empty_dice: ``"skip"`` rows empty on both sides, or count them as ``"one"``.
        hausdorff_volume: ``"union"`` of the organs per case-day, or ``"per_class"`` volumes averaged.
        split: the image folder under ``root``.

    Returns:
        ``score``, ``dice``, ``hausdorff`` (the distance term, lower is better), ``dice_per_class``,
        ``n_rows`` (truth rows), ``n_dice_rows`` (rows counted in the Dice), ``n_case_days``,
        ``n_hausdorff_volumes`` and ``conventions``. Means over nothing are NaN.

    Raises:
        InputError: a submission row missing or unknown (naming the id), bad RLE, a truth id with no image.
    """
    _Terms(empty_dice, hausdorff_volume)  # bad conventions fail before any file is read
    truth = read_rle_csv(truth_csv, "segmentation")
    submission = read_rle_csv(submission_csv, "predicted")
    _check_rows_match(truth, submission, Path(submission_csv), Path(truth_csv))

    case_days = {c.name: c for c in scan_case_days(root, split)}
    submission_groups = dict(tuple(submission.groupby("case_day", sort=False)))
    terms = _Terms(empty_dice, hausdorff_volume)
    for name, truth_rows in truth.groupby("case_day", sort=True):
        case_day = case_days.get(name)
        if case_day is None:
            raise InputError(truth_rows["id"].iat[0], f"no image for this id under {Path(root) / split} "
                                                      f"(no folder {case_day_folder(name)})")
        true_masks = stack_masks(case_day, truth_rows, "segmentation", require_all_slices=False)
        pred_masks = stack_masks(case_day, submission_groups[name], "predicted", require_all_slices=False)
        index = {n: k for k, n in enumerate(case_day.slice_numbers)}
        classes = np.array([CLASSES.index(v) for v in truth_rows["class"]])
        slices = np.array([index[int(v)] for v in truth_rows["slice"]])
        terms.add(true_masks, pred_masks, classes, slices)
    return {**terms.result(), "n_rows": int(len(truth)), "n_case_days": int(truth["case_day"].nunique())}


def score_volumes(pairs: Iterable[tuple[np.ndarray, np.ndarray]], empty_dice: str = "skip",
                  hausdorff_volume: str = "union") -> dict:
    """The competition score of whole case-days given as arrays, every slice of every organ a truth row (as in
    train.csv): the same conventions as :func:`score_submission`.

    Args:
        pairs: per case-day ``(truth, prediction)``, boolean ``(3, D, H, W)`` in :data:`CLASSES` order, slices
            along D.

    Returns:
        ``score``, ``dice``, ``hausdorff``, ``dice_per_class``, ``n_rows``, ``n_dice_rows``, ``n_case_days``,
        ``n_hausdorff_volumes`` and ``conventions``.
    """
    terms = _Terms(empty_dice, hausdorff_volume)
    n_rows = n_case_days = 0
    for truth, pred in pairs:
        truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
        if truth.shape != pred.shape or truth.ndim != 4 or truth.shape[0] != len(CLASSES):
            raise ValueError(f"expected two ({len(CLASSES)}, D, H, W) arrays, got {truth.shape} and {pred.shape}")
        classes, slices = np.divmod(np.arange(truth.shape[0] * truth.shape[1]), truth.shape[1])
        terms.add(truth, pred, classes, slices)
        n_rows, n_case_days = n_rows + classes.size, n_case_days + 1
    return {**terms.result(), "n_rows": n_rows, "n_case_days": n_case_days}


class _Terms:
    """The Dice rows and Hausdorff volumes of the case-days scored so far, and the score they make."""

    def __init__(self, empty_dice: str, hausdorff_volume: str):
        if empty_dice not in EMPTY_DICE_CHOICES:
            raise ValueError(f"empty_dice must be one of {EMPTY_DICE_CHOICES}, got {empty_dice!r}")
        if hausdorff_volume not in HAUSDORFF_VOLUME_CHOICES:
            raise ValueError(f"hausdorff_volume must be one of {HAUSDORFF_VOLUME_CHOICES}, "
                             f"got {hausdorff_volume!r}")
        self.empty_dice, self.hausdorff_volume = empty_dice, hausdorff_volume
        self.dice: list[float] = []
        self.classes: list[int] = []
        self.hausdorff: list[float] = []

    def add(self, true_masks: np.ndarray, pred_masks: np.ndarray, classes: np.ndarray, slices: np.ndarray) -> None:
        """One case-day: ``(3, D, H, W)`` masks and the (organ, slice) index of each truth row."""
        n_true = true_masks.sum(axis=(2, 3))[classes, slices]
        n_pred = pred_masks.sum(axis=(2, 3))[classes, slices]
        n_both = (true_masks & pred_masks).sum(axis=(2, 3))[classes, slices]
        total = n_true + n_pred
        keep = total > 0
        dice = np.ones(len(classes), dtype=np.float64)
        dice[keep] = 2.0 * n_both[keep] / total[keep]
        if self.empty_dice == "skip":
            dice, classes = dice[keep], classes[keep]
        self.dice.extend(dice.tolist())
        self.classes.extend(classes.tolist())
        if self.hausdorff_volume == "union":
            pairs = [(true_masks.any(axis=0), pred_masks.any(axis=0))]
        else:
            pairs = [(true_masks[i], pred_masks[i]) for i in range(len(CLASSES))]
        for t, p in pairs:
            value = normalized_hausdorff(t, p)
            if value is not None:
                self.hausdorff.append(value)

    def result(self) -> dict:
        dice, classes = np.array(self.dice), np.array(self.classes, dtype=int)
        dice_mean, hausdorff_mean = _mean(dice), _mean(np.array(self.hausdorff))
        return {"score": DICE_WEIGHT * dice_mean + HAUSDORFF_WEIGHT * (1.0 - hausdorff_mean),
                "dice": dice_mean, "hausdorff": hausdorff_mean,
                "dice_per_class": {cls: _mean(dice[classes == i]) for i, cls in enumerate(CLASSES)},
                "n_dice_rows": int(dice.size), "n_hausdorff_volumes": len(self.hausdorff),
                "conventions": {"empty_dice": self.empty_dice, "hausdorff_volume": self.hausdorff_volume,
                                "rle": "row-major, 1-indexed start/length"}}


def truth_to_submission(truth_csv: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Write the truth as a submission (``segmentation`` column renamed ``predicted``); atomic.

    Returns:
        ``out_csv`` as a Path.
    """
    from seg25d.pipeline.atomic import write_csv

    truth = read_rle_csv(truth_csv, "segmentation")
    out_csv = Path(out_csv)
    write_csv(out_csv, truth[["id", "class", "segmentation"]].rename(columns={"segmentation": "predicted"}))
    return out_csv


def case_day_folder(name: str) -> str:
    """``case{N}_day{M}`` -> ``case{N}/case{N}_day{M}/scans``."""
    return f"{name.split('_')[0]}/{name}/scans"


def _check_rows_match(truth: pd.DataFrame, submission: pd.DataFrame, submission_path: Path,
                      truth_path: Path) -> None:
    truth_keys = pd.MultiIndex.from_frame(truth[["id", "class"]])
    submission_keys = pd.MultiIndex.from_frame(submission[["id", "class"]])
    missing = truth_keys.difference(submission_keys, sort=False)
    if len(missing):
        sid, cls = missing[0]
        raise InputError(sid, f"{cls}: row missing from the submission {submission_path} "
                              f"({len(missing)} truth row(s) missing in all)")
    unknown = submission_keys.difference(truth_keys, sort=False)
    if len(unknown):
        sid, cls = unknown[0]
        raise InputError(sid, f"{cls}: row of the submission {submission_path} is not in the truth {truth_path} "
                              f"({len(unknown)} unknown row(s) in all)")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
