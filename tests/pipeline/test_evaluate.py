"""`evaluate` and `seg25d evaluate` on tiny generated datasets."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from seg25d.pipeline.cli import main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.evaluate import COLUMNS, evaluate
from seg25d.pipeline.io import synthetic_meta, write_mask
from seg25d.pipeline.manifest import LabelSpec, write_label_spec, write_manifest
from seg25d.pipeline.metrics import METRICS, binary_metrics

SHAPE = (8, 16, 14)
SPACING = (3.0, 0.8, 1.2)
INDEX = LabelSpec(classes=("liver", "tumour"), values=(1, 2), encoding="index")
BITMASK = LabelSpec(classes=("large_bowel", "small_bowel", "stomach"), values=(1, 2, 4), encoding="bitmask")


def blob(seed, fraction=0.3):
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=SHAPE), 1.5)
    return noise > np.quantile(noise, 1 - fraction)


def index_masks(seed, tumour=True):
    liver = blob(seed, 0.35)
    tumour_mask = liver & blob(seed + 1000, 0.3) if tumour else np.zeros(SHAPE, bool)
    return np.stack([liver & ~tumour_mask, tumour_mask])


def bitmask_masks(seed):
    return np.stack([blob(seed + k, 0.3) for k in range(3)])


def make_dataset(root, spec, cases, sidecar=True, ext=".nii.gz"):
    """Write labels, predictions, manifest (and sidecar); returns (manifest, pred_dir).

    cases: {case_id: (true_masks, pred, split, pred_meta)}; pred is masks (K, D, H, W), a raw label volume
    (D', H', W') written as is, or None for no prediction; pred_meta None means the label's geometry.
    """
    meta = synthetic_meta(SHAPE, SPACING)
    pred_dir = root / "pred"
    pred_dir.mkdir(parents=True)
    rows = []
    for case_id, (true_masks, pred_masks, split, pred_meta) in cases.items():
        image = write_mask(root / "images" / f"{case_id}{ext}", np.zeros(SHAPE), meta)
        label = write_mask(root / "labels" / f"{case_id}{ext}", spec.encode(true_masks), meta)
        if pred_masks is not None:
            pred_label = pred_masks if pred_masks.ndim == 3 else spec.encode(pred_masks)
            write_mask(pred_dir / f"{case_id}{ext}", pred_label, pred_meta or meta)
        rows.append({"case_id": case_id, "image": str(image), "label": str(label), "split": split})
    manifest = root / "manifest.csv"
    write_manifest(manifest, rows)
    if sidecar:
        write_label_spec(manifest, spec)
    return manifest, pred_dir


def assert_rows_match(frame, case_id, spec, true_masks, pred_masks, empty="nan"):
    for k, name in enumerate(spec.classes):
        row = frame[(frame["case_id"] == case_id) & (frame["class"] == name)]
        assert len(row) == 1, (case_id, name)
        expected = binary_metrics(pred_masks[k], true_masks[k], SPACING, empty=empty)
        for metric, value in expected.items():
            got = float(row[metric].iloc[0])
            if math.isnan(value):
                assert math.isnan(got), (case_id, name, metric)
            else:
                # rel=1e-6: NIfTI stores the spacing as float32
                assert got == pytest.approx(value, rel=1e-6, abs=1e-12), (case_id, name, metric)


def test_index_encoded_metrics_and_summary(tmp_path):
    truth = {"c1": index_masks(1), "c2": index_masks(2, tumour=False)}
    preds = {"c1": index_masks(11), "c2": index_masks(12, tumour=False)}
    cases = {cid: (truth[cid], preds[cid], "test", None) for cid in truth}
    manifest, pred_dir = make_dataset(tmp_path, INDEX, cases)
    out = tmp_path / "out"

    frame = evaluate(pred_dir, manifest, out)

    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 4 and frame["error"].isna().all()
    for cid in truth:
        assert_rows_match(frame, cid, INDEX, truth[cid], preds[cid])
    on_disk = pd.read_csv(out / "metrics.csv")
    assert list(on_disk.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(on_disk[list(METRICS)], frame[list(METRICS)].astype(float), rtol=1e-9)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["empty_policy"] == "nan" and summary["n_cases"] == 2 and summary["failures"] == []
    assert list(summary["classes"]) == ["liver", "tumour"]
    liver_dice = frame.loc[frame["class"] == "liver", "dice"]
    assert summary["classes"]["liver"]["dice"]["mean"] == pytest.approx(liver_dice.mean())
    assert summary["classes"]["liver"]["dice"]["n"] == 2
    # the tumour is absent from c2 in both: its dice is undefined and stays out of the mean
    tumour = summary["classes"]["tumour"]
    assert tumour["dice"]["n"] == 1 and tumour["dice"]["n_undefined"] == 1
    assert tumour["dice"]["sd"] is None  # NaN written as null
    assert tumour["dice"]["mean"] == pytest.approx(frame.loc[(frame["class"] == "tumour") & (frame.case_id == "c1"),
                                                             "dice"].item())
    assert summary["foreground_mean"]["dice"] == pytest.approx(
        (summary["classes"]["liver"]["dice"]["mean"] + tumour["dice"]["mean"]) / 2)


def test_empty_policy_one_scores_absent_class_as_perfect(tmp_path):
    cases = {"c1": (index_masks(3, tumour=False), index_masks(4, tumour=False), "test", None)}
    manifest, pred_dir = make_dataset(tmp_path, INDEX, cases)
    frame = evaluate(pred_dir, manifest, tmp_path / "out", empty="one")
    tumour = frame[frame["class"] == "tumour"].iloc[0]
    assert (tumour["dice"], tumour["hd95"]) == (1.0, 0.0)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["empty_policy"] == "one"


def test_bitmask_overlapping_classes(tmp_path):
    truth = {"k1": bitmask_masks(20), "k2": bitmask_masks(30)}
    preds = {"k1": bitmask_masks(40), "k2": bitmask_masks(50)}
    assert (truth["k1"].sum(axis=0) > 1).any()  # classes really overlap
    cases = {cid: (truth[cid], preds[cid], "val", None) for cid in truth}
    manifest, pred_dir = make_dataset(tmp_path, BITMASK, cases)
    frame = evaluate(pred_dir, manifest, tmp_path / "out")
    assert len(frame) == 6
    for cid in truth:
        assert_rows_match(frame, cid, BITMASK, truth[cid], preds[cid])


def test_bad_predictions_are_reported_while_the_others_are_scored(tmp_path):
    shifted = synthetic_meta(SHAPE, SPACING, origin=(0.0, 0.5, 0.0))
    small = synthetic_meta((8, 16, 13), SPACING)
    good_t, good_p = index_masks(5), index_masks(6)
    cases = {
        "good": (good_t, good_p, "test", None),
        "wrong_affine": (index_masks(7), index_masks(8), "test", shifted),
        "missing": (index_masks(9), None, "test", None),
        "wrong_shape": (index_masks(10), np.zeros((8, 16, 13), np.uint8), "test", small),
    }
    manifest, pred_dir = make_dataset(tmp_path, INDEX, cases)

    frame = evaluate(pred_dir, manifest, tmp_path / "out")

    assert_rows_match(frame, "good", INDEX, good_t, good_p)
    failed = frame[frame["error"].notna()].set_index("case_id")
    assert sorted(failed.index) == ["missing", "wrong_affine", "wrong_shape"]
    assert "geometry" in failed.loc["wrong_affine", "error"]
    assert "shape" in failed.loc["wrong_shape", "error"]
    assert "no prediction" in failed.loc["missing", "error"]
    assert failed[list(METRICS)].isna().all().all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["n_failed"] == 3
    assert sorted(f["case_id"] for f in summary["failures"]) == ["missing", "wrong_affine", "wrong_shape"]
    assert summary["classes"]["liver"]["n_cases"] == 1  # failures do not count as undefined values
    assert summary["classes"]["liver"]["dice"]["n_undefined"] == 0


def test_prediction_with_another_extension_is_found(tmp_path):
    truth, pred = index_masks(13), index_masks(14)
    manifest, pred_dir = make_dataset(tmp_path, INDEX, {"c1": (truth, None, "test", None)})
    write_mask(pred_dir / "c1.nrrd", INDEX.encode(pred), synthetic_meta(SHAPE, SPACING))
    frame = evaluate(pred_dir, manifest, tmp_path / "out")
    assert frame["error"].isna().all()
    assert_rows_match(frame, "c1", INDEX, truth, pred)


def test_classes_split_and_inferred_spec(tmp_path, caplog):
    truth = {"a": index_masks(15), "b": index_masks(16)}
    preds = {"a": index_masks(17), "b": index_masks(18)}
    cases = {"a": (truth["a"], preds["a"], "test", None), "b": (truth["b"], preds["b"], "train", None)}
    manifest, pred_dir = make_dataset(tmp_path, INDEX, cases, sidecar=False)

    with caplog.at_level(logging.INFO, logger="seg25d.pipeline.manifest"):
        frame = evaluate(pred_dir, manifest, tmp_path / "out", split="test", classes=["class_2"])
    assert "inferred an index encoding" in caplog.text
    assert list(frame["case_id"]) == ["a"] and list(frame["class"]) == ["class_2"]
    expected = binary_metrics(preds["a"][1], truth["a"][1], SPACING)
    assert frame["dice"].item() == pytest.approx(expected["dice"])
    assert frame["hd95"].item() == pytest.approx(expected["hd95"])

    with pytest.raises(InputError, match="valid classes: class_1, class_2"):
        evaluate(pred_dir, manifest, tmp_path / "out", classes=["liver"])
    with pytest.raises(InputError, match="no rows with a label"):
        evaluate(pred_dir, manifest, tmp_path / "out", split="val")


def test_cli_exit_codes(tmp_path, capsys):
    good = {"c1": (index_masks(21), index_masks(22), "test", None)}
    manifest, pred_dir = make_dataset(tmp_path / "ok", INDEX, good)
    out = tmp_path / "ok_out"
    assert main(["evaluate", "--pred", str(pred_dir), "--manifest", str(manifest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "liver" in printed and "tumour" in printed and str(out / "metrics.csv") in printed
    assert (out / "summary.json").is_file()

    bad = {"c1": (index_masks(23), index_masks(24), "test", None), "c2": (index_masks(25), None, "test", None)}
    manifest, pred_dir = make_dataset(tmp_path / "bad", INDEX, bad)
    args = ["evaluate", "--pred", str(pred_dir), "--manifest", str(manifest), "--out", str(tmp_path / "bad_out")]
    assert main(args + ["--empty-policy", "one", "--split", "test"]) == 1
    assert "failed c2" in capsys.readouterr().out
    assert main(args + ["--classes", "spleen"]) == 2
    assert "valid classes: liver, tumour" in capsys.readouterr().err
