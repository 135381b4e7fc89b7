"""The UW-Madison GI Tract competition score, on constructed cases with hand-computed values and on real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from seg25d.pipeline.cli import main as cli_main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.kaggle.layout import CLASSES
from seg25d.pipeline.kaggle.rle import rle_encode
from seg25d.pipeline.kaggle.score import normalized_hausdorff, score_submission, score_volumes, truth_to_submission

SQRT3 = math.sqrt(3.0)
LB, SB, ST = 0, 1, 2  # class indices in CLASSES order


def make_case_day(root: Path, case: int, day: int, depth: int, height: int, width: int) -> None:
    """Blank 16-bit PNG slices 1..depth; only their names (sizes) matter to the score."""
    scans = root / "train" / f"case{case}" / f"case{case}_day{day}" / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for k in range(depth):
        blank = sitk.GetImageFromArray(np.zeros((height, width), dtype=np.uint16))
        sitk.WriteImage(blank, str(scans / f"slice_{k + 1:04d}_{width}_{height}_1.50_1.50.png"))


def rows(case: int, day: int, masks: np.ndarray, column: str) -> list[dict]:
    return [{"id": f"case{case}_day{day}_slice_{k + 1:04d}", "class": cls, column: rle_encode(masks[c, k])}
            for k in range(masks.shape[1]) for c, cls in enumerate(CLASSES)]


def write_pair(root: Path, cases: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    """Write the layout, truth.csv and submission.csv for {(case, day): (truth (3,D,H,W), pred (3,D,H,W))}."""
    truth_rows, pred_rows = [], []
    for (case, day), (truth, pred) in cases.items():
        make_case_day(root, case, day, *truth.shape[1:])
        truth_rows += rows(case, day, truth, "segmentation")
        pred_rows += rows(case, day, pred, "predicted")
    truth_csv, sub_csv = root / "truth.csv", root / "submission.csv"
    pd.DataFrame(truth_rows).to_csv(truth_csv, index=False)
    pd.DataFrame(pred_rows).to_csv(sub_csv, index=False)
    return truth_csv, sub_csv


def shifted_case() -> tuple[np.ndarray, np.ndarray]:
    """Stomach 3x4 block on slices 2-3 of a (4, 10, 20) scan, predicted 3 columns to the right."""
    truth = np.zeros((3, 4, 10, 20), dtype=bool)
    pred = np.zeros_like(truth)
    truth[ST, 1:3, 2:5, 3:7] = True
    pred[ST, 1:3, 2:5, 6:10] = True
    return truth, pred


def missed_organ_case() -> tuple[np.ndarray, np.ndarray]:
    """(2, 8, 20): stomach 2x2 at the corner of slice 1 found exactly; a large-bowel pixel at column 10 missed."""
    truth = np.zeros((3, 2, 8, 20), dtype=bool)
    truth[ST, 0, 0:2, 0:2] = True
    truth[LB, 0, 0, 10] = True
    pred = truth.copy()
    pred[LB] = False
    return truth, pred


# ---------------------------------------------------------------------------------------------------------------


def test_shifted_organ(tmp_path):
    truth_csv, sub_csv = write_pair(tmp_path, {(1, 0): shifted_case()})
    result = score_submission(sub_csv, truth_csv, tmp_path)
    # Each of the two stomach rows: 12 true, 12 predicted, 3 shared pixels -> Dice 2*3/24 = 0.25; other rows empty.
    assert result["dice"] == pytest.approx(0.25)
    assert result["dice_per_class"]["stomach"] == pytest.approx(0.25)
    assert math.isnan(result["dice_per_class"]["large_bowel"]) and math.isnan(result["dice_per_class"]["small_bowel"])
    # Every point is 3 columns from its counterpart; the width is 20 -> 3/20 in the unit cube, / sqrt(3).
    expected_hd = (3 / 20) / SQRT3
    assert result["hausdorff"] == pytest.approx(expected_hd)
    assert result["score"] == pytest.approx(0.4 * 0.25 + 0.6 * (1 - expected_hd))
    assert (result["n_rows"], result["n_dice_rows"], result["n_case_days"], result["n_hausdorff_volumes"]) == \
        (12, 2, 1, 1)

    # empty_dice="one": the 10 rows empty on both sides count as 1.
    one = score_submission(sub_csv, truth_csv, tmp_path, empty_dice="one")
    assert one["dice"] == pytest.approx((2 * 0.25 + 10 * 1.0) / 12)
    assert one["dice_per_class"] == pytest.approx({"large_bowel": 1.0, "small_bowel": 1.0,
                                                   "stomach": (2 * 0.25 + 2 * 1.0) / 4})
    assert one["hausdorff"] == result["hausdorff"] and one["n_dice_rows"] == 12
    assert one["conventions"]["empty_dice"] == "one"


def test_missed_organ_and_per_class_hausdorff(tmp_path):
    truth_csv, sub_csv = write_pair(tmp_path, {(2, 1): missed_organ_case()})
    union = score_submission(sub_csv, truth_csv, tmp_path)
    # Rows counted: stomach slice 1 (Dice 1) and large bowel slice 1 (Dice 0).
    assert union["dice"] == pytest.approx(0.5)
    assert union["dice_per_class"]["stomach"] == 1.0 and union["dice_per_class"]["large_bowel"] == 0.0
    # Union: the missed pixel (row 0, col 10) is 9 columns from the nearest stomach pixel (row 0, col 1).
    expected_union = (9 / 20) / SQRT3
    assert union["hausdorff"] == pytest.approx(expected_union)
    assert union["score"] == pytest.approx(0.4 * 0.5 + 0.6 * (1 - expected_union))
    # Per class: stomach volume 0, large bowel volume 1 (prediction empty), small bowel skipped -> mean 0.5.
    per_class = score_submission(sub_csv, truth_csv, tmp_path, hausdorff_volume="per_class")
    assert per_class["hausdorff"] == pytest.approx(0.5)
    assert per_class["n_hausdorff_volumes"] == 2 and union["n_hausdorff_volumes"] == 1
    assert per_class["dice"] == union["dice"]
    assert per_class["score"] == pytest.approx(0.4 * 0.5 + 0.6 * 0.5)


@pytest.mark.parametrize("empty_dice", ["skip", "one"])
@pytest.mark.parametrize("volume", ["union", "per_class"])
def test_score_of_arrays_equals_score_of_the_submission_csv(tmp_path, empty_dice, volume):
    rng = np.random.default_rng(3)
    cases = {}
    for case, shape in ((1, (3, 5, 12, 16)), (2, (3, 3, 10, 14))):
        truth = np.zeros(shape, dtype=bool)
        truth[:, 1:-1, 2:8, 3:9] = rng.random(truth[:, 1:-1, 2:8, 3:9].shape) < 0.6
        truth[LB] = False  # an organ absent from one case-day
        pred = truth ^ (rng.random(shape) < 0.05)
        cases[(case, 0)] = (truth, pred)
    cases[(2, 0)][1][SB] = False  # an organ missed
    truth_csv, sub_csv = write_pair(tmp_path, cases)
    expected = score_submission(sub_csv, truth_csv, tmp_path, empty_dice=empty_dice, hausdorff_volume=volume)
    result = score_volumes(cases.values(), empty_dice=empty_dice, hausdorff_volume=volume)
    assert result.pop("conventions") == expected.pop("conventions")
    assert result.pop("dice_per_class") == pytest.approx(expected.pop("dice_per_class"), nan_ok=True)
    assert result == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"\(3, D, H, W\)"):
        score_volumes([(np.zeros((2, 3, 4, 4), bool), np.zeros((2, 3, 4, 4), bool))])


def test_both_empty_case_day_is_skipped(tmp_path):
    empty = np.zeros((3, 3, 6, 5), dtype=bool)
    truth_csv, sub_csv = write_pair(tmp_path, {(1, 0): shifted_case(), (7, 2): (empty, empty)})
    result = score_submission(sub_csv, truth_csv, tmp_path)
    expected_hd = (3 / 20) / SQRT3
    assert result["dice"] == pytest.approx(0.25) and result["hausdorff"] == pytest.approx(expected_hd)
    assert result["n_case_days"] == 2 and result["n_hausdorff_volumes"] == 1 and result["n_rows"] == 12 + 9
    one = score_submission(sub_csv, truth_csv, tmp_path, empty_dice="one")
    assert one["dice"] == pytest.approx((2 * 0.25 + 10 + 9) / 21)
    assert one["hausdorff"] == pytest.approx(expected_hd)  # both-empty volumes stay skipped


def test_only_empty_gives_nan_or_one(tmp_path):
    empty = np.zeros((3, 2, 4, 4), dtype=bool)
    truth_csv, sub_csv = write_pair(tmp_path, {(1, 0): (empty, empty)})
    skip = score_submission(sub_csv, truth_csv, tmp_path)
    assert math.isnan(skip["dice"]) and math.isnan(skip["hausdorff"]) and math.isnan(skip["score"])
    one = score_submission(sub_csv, truth_csv, tmp_path, empty_dice="one")
    assert one["dice"] == 1.0 and one["n_hausdorff_volumes"] == 0


@pytest.mark.parametrize("n_pred, expected_hd", [(11, 1.0), (10, (9 / 20) / SQRT3)])
def test_oversized_prediction(tmp_path, n_pred, expected_hd):
    truth = np.zeros((3, 1, 3, 20), dtype=bool)
    truth[ST, 0, 1, 0] = True
    pred = np.zeros_like(truth)
    pred[ST, 0, 1, :n_pred] = True  # contains the true pixel; 11x the true voxels -> Hausdorff term 1
    truth_csv, sub_csv = write_pair(tmp_path, {(3, 0): (truth, pred)})
    result = score_submission(sub_csv, truth_csv, tmp_path)
    assert result["hausdorff"] == pytest.approx(expected_hd)
    assert result["dice"] == pytest.approx(2 / (1 + n_pred))
    assert result["score"] == pytest.approx(0.4 * 2 / (1 + n_pred) + 0.6 * (1 - expected_hd))


def test_prediction_on_empty_truth_is_hausdorff_one(tmp_path):
    truth = np.zeros((3, 2, 5, 5), dtype=bool)
    pred = truth.copy()
    pred[SB, 1, 2, 2] = True
    truth_csv, sub_csv = write_pair(tmp_path, {(4, 0): (truth, pred)})
    result = score_submission(sub_csv, truth_csv, tmp_path)
    assert result["hausdorff"] == 1.0 and result["dice"] == 0.0 and result["score"] == 0.0


@pytest.mark.parametrize("make", [shifted_case, missed_organ_case])
@pytest.mark.parametrize("empty_dice", ["skip", "one"])
@pytest.mark.parametrize("volume", ["union", "per_class"])
def test_truth_against_itself_is_one(tmp_path, make, empty_dice, volume):
    truth, _ = make()
    truth_csv, _ = write_pair(tmp_path, {(1, 0): (truth, truth)})
    sub = truth_to_submission(truth_csv, tmp_path / "self.csv")
    assert sub.read_text().splitlines()[0] == "id,class,predicted"
    result = score_submission(sub, truth_csv, tmp_path, empty_dice=empty_dice, hausdorff_volume=volume)
    assert result["score"] == 1.0 and result["dice"] == 1.0 and result["hausdorff"] == 0.0


def test_real_truth_against_itself(realdata, tmp_path):
    root = realdata / "gi_kaggle_mr"
    sub = truth_to_submission(root / "train.csv", tmp_path / "sub.csv")
    result = score_submission(sub, root / "train.csv", root)
    assert result["score"] == 1.0 and result["n_rows"] == 60 and result["n_case_days"] == 1
    assert result["dice_per_class"] == {"large_bowel": 1.0, "small_bowel": 1.0, "stomach": 1.0}


def test_real_empty_submission(realdata, tmp_path):
    root = realdata / "gi_kaggle_mr"
    frame = pd.read_csv(root / "train.csv", keep_default_na=False)
    counted = int((frame["segmentation"] != "").sum())
    frame = frame.rename(columns={"segmentation": "predicted"}).assign(predicted="")
    frame.to_csv(tmp_path / "empty.csv", index=False)
    result = score_submission(tmp_path / "empty.csv", root / "train.csv", root)
    # Every non-empty truth row scores 0, the Hausdorff term is 1 (prediction empty): score 0.
    assert result["n_dice_rows"] == counted and result["dice"] == 0.0 and result["hausdorff"] == 1.0
    assert result["score"] == 0.0


def test_normalized_hausdorff_matches_brute_force():
    rng = np.random.default_rng(5)
    for shape in [(3, 7, 9), (5, 4, 11), (1, 6, 6)]:
        a = rng.random(shape) < 0.15
        b = rng.random(shape) < 0.12
        a.flat[0] = b.flat[-1] = True
        scale = np.array(shape, dtype=float)
        d = cdist(np.argwhere(a) / scale, np.argwhere(b) / scale)
        expected = max(d.min(axis=1).max(), d.min(axis=0).max()) / SQRT3
        assert normalized_hausdorff(a, b) == pytest.approx(expected, rel=1e-12)
        assert normalized_hausdorff(a, a) == 0.0
    assert normalized_hausdorff(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) is None


# ---------------------------------------------------------------------------------------------------------------
# bad submissions


def _frames(tmp_path):
    truth_csv, sub_csv = write_pair(tmp_path, {(1, 0): shifted_case()})
    return truth_csv, sub_csv, pd.read_csv(sub_csv, keep_default_na=False)


def test_missing_submission_row(tmp_path):
    truth_csv, sub_csv, frame = _frames(tmp_path)
    frame.drop(index=7).to_csv(sub_csv, index=False)  # slice 3, small_bowel
    with pytest.raises(InputError, match="row missing from the submission") as info:
        score_submission(sub_csv, truth_csv, tmp_path)
    assert info.value.where == "case1_day0_slice_0003" and "small_bowel" in str(info.value)


def test_unknown_submission_id(tmp_path):
    truth_csv, sub_csv, frame = _frames(tmp_path)
    extra = pd.DataFrame([{"id": "case1_day0_slice_0099", "class": "stomach", "predicted": ""}])
    pd.concat([frame, extra]).to_csv(sub_csv, index=False)
    with pytest.raises(InputError, match="not in the truth") as info:
        score_submission(sub_csv, truth_csv, tmp_path)
    assert info.value.where == "case1_day0_slice_0099"


def test_malformed_submission_rle(tmp_path):
    truth_csv, sub_csv, frame = _frames(tmp_path)
    frame.loc[5, "predicted"] = "199 5"  # slice 2 stomach: runs past 200 pixels
    frame.to_csv(sub_csv, index=False)
    with pytest.raises(InputError, match="past the end") as info:
        score_submission(sub_csv, truth_csv, tmp_path)
    assert info.value.where == "case1_day0_slice_0002 stomach"


def test_submission_wrong_header(tmp_path):
    truth_csv, sub_csv = write_pair(tmp_path, {(1, 0): shifted_case()})
    with pytest.raises(InputError, match="missing column"):
        score_submission(truth_csv, truth_csv, tmp_path)  # segmentation, not predicted


def test_truth_id_without_image(tmp_path):
    truth_csv, sub_csv, frame = _frames(tmp_path)
    moved = frame.assign(id=frame["id"].str.replace("case1_day0", "case1_day5"))
    moved.to_csv(sub_csv, index=False)
    moved.rename(columns={"predicted": "segmentation"}).to_csv(truth_csv, index=False)
    with pytest.raises(InputError, match="no image") as info:
        score_submission(sub_csv, truth_csv, tmp_path)
    assert info.value.where == "case1_day5_slice_0001"


def test_bad_convention_names():
    with pytest.raises(ValueError):
        score_submission("a", "b", "c", empty_dice="zero")
    with pytest.raises(ValueError):
        score_submission("a", "b", "c", hausdorff_volume="mean")


# ---------------------------------------------------------------------------------------------------------------


def test_cli_score_writes_json(tmp_path, capsys):
    truth_csv, sub_csv = write_pair(tmp_path, {(2, 1): missed_organ_case()})
    out = tmp_path / "res" / "score.json"
    code = cli_main(["kaggle", "score", "--submission", str(sub_csv), "--truth", str(truth_csv),
                     "--root", str(tmp_path), "--json", str(out), "--hausdorff-volume", "per_class"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "score     0.5000" in printed and "dice stomach      1.0000" in printed and "n/a" in printed
    saved = json.loads(out.read_text())
    assert saved["score"] == pytest.approx(0.5) and saved["hausdorff"] == pytest.approx(0.5)
    assert saved["dice_per_class"]["small_bowel"] is None  # NaN written as null
    assert saved["conventions"]["hausdorff_volume"] == "per_class"
    bad = cli_main(["kaggle", "score", "--submission", str(tmp_path / "missing.csv"), "--truth", str(truth_csv),
                    "--root", str(tmp_path)])
    assert bad == 2 and "file not found" in capsys.readouterr().err
