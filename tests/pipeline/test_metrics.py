"""Segmentation metrics: cross-checked with MONAI, a brute-force cdist reference and hand-worked values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from seg25d.pipeline.metrics import METRICS, binary_metrics, hd95, summarize

SPACING = (3.0, 0.8, 1.2)


def blob(shape, seed, fraction=0.4, sigma=2.0):
    """A mask with irregular surfaces: smoothed Gaussian noise above its (1 - fraction) quantile."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def monai_reference(pred, true, spacing):
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    p = torch.as_tensor(pred[None, None].astype(np.float32))
    t = torch.as_tensor(true[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = metrics.compute_dice(p, t, include_background=True).item()
        iou = metrics.compute_iou(p, t, include_background=True).item()
        hd = metrics.compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                                spacing=list(spacing)).item()
    return dice, iou, hd


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dice_iou_hd95_match_monai_3d(seed):
    shape = (18, 28, 24)
    pred = blob(shape, seed, fraction=0.35)
    true = blob(shape, seed + 50, fraction=0.45)
    ours = binary_metrics(pred, true, SPACING)
    dice, iou, hd = monai_reference(pred, true, SPACING)
    assert ours["dice"] == pytest.approx(dice, abs=1e-6)
    assert ours["iou"] == pytest.approx(iou, abs=1e-6)
    assert ours["hd95"] == pytest.approx(hd, abs=1e-5)
    assert ours["hd95"] > 1.0  # non-trivial surfaces, not two identical masks


def test_hd95_matches_monai_when_masks_touch_the_border_and_overlap_little():
    shape = (12, 20, 16)
    pred = blob(shape, 7, fraction=0.6, sigma=1.5)
    true = np.zeros(shape, bool)
    true[:, :7, 10:] = True  # touches three faces of the image
    dice, _, hd = monai_reference(pred, true, SPACING)
    ours = binary_metrics(pred, true, SPACING)
    assert ours["dice"] == pytest.approx(dice, abs=1e-6)
    assert ours["hd95"] == pytest.approx(hd, abs=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 2.5)])
def test_dice_iou_hd95_match_monai_2d(spacing):
    pred = blob((40, 36), 11, sigma=3.0)
    true = blob((40, 36), 12, sigma=3.0)
    dice, iou, hd = monai_reference(pred, true, spacing)
    ours = binary_metrics(pred, true, spacing)
    assert (ours["dice"], ours["iou"]) == pytest.approx((dice, iou), abs=1e-6)
    assert ours["hd95"] == pytest.approx(hd, abs=1e-5)


def surface_by_neighbours(mask):
    """Foreground voxels with at least one face neighbour outside the mask (outside the image counts)."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    surface = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            surface |= mask & ~np.roll(padded, step, axis=axis)[inner]
    return surface


def brute_force_hd95(pred, true, spacing):
    a = np.argwhere(surface_by_neighbours(pred)) * np.asarray(spacing)
    b = np.argwhere(surface_by_neighbours(true)) * np.asarray(spacing)
    d = cdist(a, b)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("seed", range(5))
def test_hd95_matches_brute_force_cdist_on_tiny_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 7, 6)
    pred = rng.random(shape) < 0.3
    true = rng.random(shape) < 0.3
    true[2, 3, 3] = pred[0, 0, 0] = True
    spacing = (2.0, 0.6, 1.3)
    assert hd95(pred, true, spacing) == pytest.approx(brute_force_hd95(pred, true, spacing), rel=1e-12)


def test_hd95_matches_brute_force_on_tiny_2d_blob():
    pred = blob((9, 11), 3, fraction=0.5, sigma=1.0)
    true = blob((9, 11), 4, fraction=0.5, sigma=1.0)
    assert hd95(pred, true, (1.5, 0.5)) == pytest.approx(brute_force_hd95(pred, true, (1.5, 0.5)), rel=1e-12)


def test_hand_worked_overlap_counts_and_volumes_2d():
    pred = np.zeros((4, 4), bool)
    true = np.zeros((4, 4), bool)
    pred[0, 0:4] = True           # 4 voxels
    true[0, 1:4] = True           # 3 of them are true positives ...
    true[1, 0:3] = True           # ... truth has 6 voxels
    m = binary_metrics(pred, true, spacing=(2.0, 0.5))  # 1 mm^2 per pixel
    assert m["dice"] == pytest.approx(2 * 3 / (4 + 6))
    assert m["iou"] == pytest.approx(3 / 7)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == pytest.approx(3 / 6)
    assert m["specificity"] == pytest.approx(9 / 10)  # 10 negatives, 1 false positive
    assert m["volume_pred_ml"] == pytest.approx(4 * 1.0 / 1000)
    assert m["volume_true_ml"] == pytest.approx(6 * 1.0 / 1000)
    assert set(m) == set(METRICS)
    assert all(type(v) is float for v in m.values())


def test_hand_worked_hd95_between_two_voxels_and_volume_3d():
    pred = np.zeros((4, 5, 3), bool)
    true = np.zeros((4, 5, 3), bool)
    pred[0, 0, 0] = True
    true[1, 2, 0] = True
    m = binary_metrics(pred, true, SPACING)
    assert m["hd95"] == pytest.approx(math.hypot(1 * 3.0, 2 * 0.8))
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["volume_true_ml"] == pytest.approx(3.0 * 0.8 * 1.2 / 1000)
    assert binary_metrics(true, true, SPACING)["hd95"] == 0.0


def test_hd95_is_the_larger_directed_95th_percentile():
    # pred: a 1x1x10 rod; truth: the same rod plus one far voxel. pred->truth distances are all 0,
    # truth->pred has eleven surface voxels: ten at 0 and one at 8 voxels (x 1.2 mm) away.
    pred = np.zeros((1, 1, 20), bool)
    pred[0, 0, :10] = True
    true = pred.copy()
    true[0, 0, 17] = True
    expected = np.percentile([0.0] * 10 + [8 * 1.2], 95)  # linear interpolation between order statistics
    assert binary_metrics(pred, true, (1.0, 1.0, 1.2))["hd95"] == pytest.approx(expected)
    assert binary_metrics(true, pred, (1.0, 1.0, 1.2))["hd95"] == pytest.approx(expected)


SHAPE = (4, 5, 6)
SP = (2.0, 1.0, 0.5)
DIAGONAL = math.sqrt(8.0 ** 2 + 5.0 ** 2 + 3.0 ** 2)
NAN = math.nan


def some(shape=SHAPE):
    mask = np.zeros(shape, bool)
    mask[1:3, 1:3, 2:4] = True  # 8 voxels
    return mask


EMPTY = np.zeros(SHAPE, bool)
FULL = np.ones(SHAPE, bool)
N = EMPTY.size

# (pred, truth, policy, expected dice, iou, precision, sensitivity, specificity, hd95)
EMPTY_TABLE = [
    ("both empty", EMPTY, EMPTY, "nan", NAN, NAN, NAN, NAN, 1.0, NAN),
    ("both empty", EMPTY, EMPTY, "one", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
    ("pred empty", EMPTY, some(), "nan", 0.0, 0.0, NAN, 0.0, 1.0, NAN),
    ("pred empty", EMPTY, some(), "one", 0.0, 0.0, 0.0, 0.0, 1.0, DIAGONAL),
    ("truth empty", some(), EMPTY, "nan", 0.0, 0.0, 0.0, NAN, (N - 8) / N, NAN),
    ("truth empty", some(), EMPTY, "one", 0.0, 0.0, 0.0, 0.0, (N - 8) / N, DIAGONAL),
    ("no negatives, pred full", FULL, FULL, "nan", 1.0, 1.0, 1.0, 1.0, NAN, 0.0),
    ("no negatives, pred full", FULL, FULL, "one", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
    ("no negatives, pred partial", some(), FULL, "nan", 16 / (N + 8), 8 / N, 1.0, 8 / N, NAN, None),
    ("no negatives, pred partial", some(), FULL, "one", 16 / (N + 8), 8 / N, 1.0, 8 / N, 0.0, None),
]


@pytest.mark.parametrize("case,pred,true,policy,dice,iou,precision,sensitivity,specificity,hd",
                         EMPTY_TABLE, ids=[f"{row[0]}-{row[3]}" for row in EMPTY_TABLE])
def test_empty_mask_policy_table(case, pred, true, policy, dice, iou, precision, sensitivity, specificity, hd):
    m = binary_metrics(pred, true, SP, empty=policy)
    expected = {"dice": dice, "iou": iou, "precision": precision, "sensitivity": sensitivity,
                "specificity": specificity, "hd95": hd}
    for name, value in expected.items():
        if value is None:  # a finite surface distance, checked elsewhere
            assert math.isfinite(m[name]), name
        elif math.isnan(value):
            assert math.isnan(m[name]), f"{name} should be NaN, got {m[name]}"
        else:
            assert m[name] == pytest.approx(value), name
    if policy == "one":
        assert all(math.isfinite(v) for v in m.values())
    assert m["volume_pred_ml"] == pytest.approx(np.count_nonzero(pred) * 1.0 / 1000)
    assert m["volume_true_ml"] == pytest.approx(np.count_nonzero(true) * 1.0 / 1000)


@pytest.mark.parametrize("pred,true,spacing,empty,match", [
    (np.zeros((3, 3)), np.zeros((3, 4)), (1, 1), "nan", "shape"),
    (np.zeros((3, 3)), np.zeros((3, 3)), (1, 1, 1), "nan", "spacing"),
    (np.zeros((3, 3)), np.zeros((3, 3)), (1, 0), "nan", "positive"),
    (np.zeros((3, 3)), np.zeros((3, 3)), (1, 1), "zero", "policy"),
])
def test_bad_arguments_raise(pred, true, spacing, empty, match):
    with pytest.raises(ValueError, match=match):
        binary_metrics(pred, true, spacing, empty=empty)


def test_summarize_excludes_undefined_values_and_counts_them():
    frame = pd.DataFrame([
        {"case_id": "a", "class": "liver", "dice": 0.8, "hd95": 2.0, "error": None},
        {"case_id": "b", "class": "liver", "dice": 0.6, "hd95": NAN, "error": None},
        {"case_id": "c", "class": "liver", "dice": NAN, "hd95": NAN, "error": None},
        {"case_id": "a", "class": "tumour", "dice": 0.2, "hd95": 10.0, "error": None},
        {"case_id": "b", "class": "tumour", "dice": NAN, "hd95": NAN, "error": None},
        {"case_id": "d", "class": None, "dice": NAN, "hd95": NAN, "error": "d.nii.gz: shape differs"},
    ])
    s = summarize(frame)
    assert s["metrics"] == ["dice", "hd95"]
    assert list(s["classes"]) == ["liver", "tumour"]
    liver = s["classes"]["liver"]
    assert liver["n_cases"] == 3
    assert liver["dice"] == {"mean": pytest.approx(0.7), "sd": pytest.approx(np.std([0.8, 0.6], ddof=1)),
                             "n": 2, "n_undefined": 1}
    assert liver["hd95"]["mean"] == 2.0 and liver["hd95"]["n"] == 1 and liver["hd95"]["n_undefined"] == 2
    assert math.isnan(liver["hd95"]["sd"])  # a single value has no sample sd
    tumour = s["classes"]["tumour"]
    assert tumour["dice"]["mean"] == pytest.approx(0.2) and tumour["dice"]["n_undefined"] == 1
    assert s["foreground_mean"]["dice"] == pytest.approx((0.7 + 0.2) / 2)
    assert s["foreground_mean"]["hd95"] == pytest.approx((2.0 + 10.0) / 2)
    for entry in s["classes"].values():
        for metric in s["metrics"]:
            assert all(type(entry[metric][k]) is float for k in ("mean", "sd"))


def test_summarize_class_without_any_defined_value_stays_out_of_foreground_mean():
    frame = pd.DataFrame({"case_id": ["a", "b", "a", "b"], "class": ["x", "x", "y", "y"],
                          "dice": [0.5, 0.7, NAN, NAN]})
    s = summarize(frame)
    assert math.isnan(s["classes"]["y"]["dice"]["mean"]) and s["classes"]["y"]["dice"]["n"] == 0
    assert s["classes"]["y"]["dice"]["n_undefined"] == 2
    assert s["foreground_mean"]["dice"] == pytest.approx(0.6)
