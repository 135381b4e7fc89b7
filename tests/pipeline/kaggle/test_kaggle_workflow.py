"""The UW-Madison GI Tract workflow: `seg25d kaggle train` (folds, fold scores), `kaggle submit` (ensembles,
small components, sample order), `kaggle cv`, on synthetic case-days and on the real one."""

from __future__ import annotations

import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from skimage.morphology import remove_small_objects

from seg25d.pipeline import predict as predict_module
from seg25d.pipeline.cli import main as cli_main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.kaggle import workflow
from seg25d.pipeline.kaggle.layout import CLASSES, read_train_csv, scan_case_days
from seg25d.pipeline.kaggle.rle import rle_decode
from seg25d.pipeline.kaggle.score import score_submission

TINY = ["model.options.backbone_options={depth=2, base_channels=4}", "train.max_steps=2", "train.progress=false",
        "train.val_every=2", "train.checkpoint_every=2", "train.slices_per_step=4", "train.warmup_steps=1"]
SMALL_SIZES = [(40, 32, 1.5, 1.5), (36, 36, 1.5, 1.5)]


def _sets(*extra: str) -> list[str]:
    args = []
    for text in (*TINY, *extra):
        args += ["--set", text]
    return args


@pytest.fixture(scope="module")
def no_curves():
    """Skip drawing curves.png: the slowest part of a two-step run and not what these tests look at."""
    from seg25d.pipeline import figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "training_curves", lambda metrics, path: path)
        yield


@pytest.fixture(scope="module")
def gi_root(tmp_path_factory) -> Path:
    from seg25d.pipeline.synth.gi import write_gi_dataset

    root = tmp_path_factory.mktemp("gi")
    write_gi_dataset(root, cases=3, seed=0, days=(1, 2), slices=(12, 16), sizes=SMALL_SIZES, progress=False)
    return root


@pytest.fixture(scope="module")
def fold_run(gi_root, tmp_path_factory, no_curves) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    assert cli_main(["kaggle", "train", "--root", str(gi_root), "--out", str(run), "--folds", "3", "--fold", "0",
                     *_sets()]) == 0
    return run


def _submission_checks(path: Path, root: Path, split: str = "train") -> pd.DataFrame:
    """Header, three rows per slice of every case-day in case-day/slice/class order, RLE inside each image."""
    assert path.read_text().splitlines()[0] == "id,class,predicted"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = [(f"{c.name}_slice_{n:04d}", cls) for c in scan_case_days(root, split) for n in c.slice_numbers
                for cls in CLASSES]
    assert list(zip(frame["id"], frame["class"])) == expected
    shapes = {c.name: c.shape[1:] for c in scan_case_days(root, split)}
    for sid, cls, rle in zip(frame["id"], frame["class"], frame["predicted"]):
        rle_decode(rle, shapes[sid.rsplit("_slice_", 1)[0]], where=f"{sid} {cls}")  # raises past the image
    return frame


# --- kaggle train / cv / submit on synthetic case-days ---------------------------------------------------------


def test_train_fold_writes_a_score(fold_run, gi_root):
    fold = fold_run / "fold0"
    assert {"best.pt", "last.pt", "config.json", "val_submission.csv", "val_truth.csv", "fold_score.json"} <= \
        {p.name for p in fold.iterdir()}
    assert not (fold_run / "fold1").exists()  # --fold 0 trains that fold only
    data = json.loads((fold / "fold_score.json").read_text())
    assert math.isfinite(data["score"]) and 0.0 <= data["score"] <= 1.0
    assert data["fold"] == 0 and data["folds"] == 3 and data["steps"] == 2
    assert data["checkpoint"] == str(fold / "best.pt")
    assert data["n_case_days"] == len(data["val_case_days"]) > 0
    # the score on file is the metric of the two CSVs beside it
    again = score_submission(fold / "val_submission.csv", fold / "val_truth.csv", gi_root)
    assert again["score"] == pytest.approx(data["score"])
    # the truth rows are train.csv's rows of the validation case-days, nothing else
    truth = pd.read_csv(fold / "val_truth.csv", dtype=str, keep_default_na=False)
    train_csv = pd.read_csv(gi_root / "train.csv", dtype=str, keep_default_na=False)
    expected = train_csv[train_csv["id"].str.rsplit("_slice_", n=1).str[0].isin(data["val_case_days"])]
    assert set(map(tuple, truth[["id", "class", "segmentation"]].to_numpy())) == \
        set(map(tuple, expected[["id", "class", "segmentation"]].to_numpy()))
    assert len(truth) == len(expected)
    # the fold submission covers the validation case-days, in the truth's row order
    sub = pd.read_csv(fold / "val_submission.csv", dtype=str, keep_default_na=False)
    assert list(zip(sub["id"], sub["class"])) == list(zip(truth["id"], truth["class"]))


def test_group_kfold_keeps_cases_whole(fold_run, gi_root):
    from seg25d.pipeline.data import split_manifest

    data = json.loads((fold_run / "fold0" / "fold_score.json").read_text())
    cases = lambda names: {n.split("_")[0] for n in names}  # noqa: E731
    train_cases, val_cases = cases(data["train_case_days"]), cases(data["val_case_days"])
    assert train_cases and val_cases and not train_cases & val_cases
    assert sorted(data["train_case_days"] + data["val_case_days"]) == sorted(c.name for c in scan_case_days(gi_root))
    assert set(data["val_cases"]) == val_cases and set(data["train_cases"]) == train_cases
    # the split is the one the trainer used (config.json of the fold)
    config = json.loads((fold_run / "fold0" / "config.json").read_text())
    assert config["data"]["folds"] == 3 and config["data"]["fold"] == 0
    assert config["model"]["name"] == "slicestack25d" and config["model"]["options"]["slices"] == 3
    assert config["data"]["manifest"] == str(fold_run / "data" / "manifest.csv")
    train_rows, val_rows = split_manifest(config["data"]["manifest"], config["data"], seed=config["train"]["seed"])
    assert list(val_rows.case_id) == data["val_case_days"] and list(train_rows.case_id) == data["train_case_days"]


def test_cv_aggregates_folds(fold_run, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    shutil.copy(fold_run / "fold0" / "fold_score.json", run / "fold0")
    first = json.loads((run / "fold0" / "fold_score.json").read_text())
    second = {**first, "fold": 1, "n_case_days": 3, "score": 0.5, "dice": 0.25, "hausdorff": 0.75,
              "dice_per_class": {"large_bowel": 0.1, "small_bowel": None, "stomach": 0.3}}
    (run / "fold1").mkdir()
    (run / "fold1" / "fold_score.json").write_text(json.dumps(second))
    assert cli_main(["kaggle", "cv", "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "large_bowel" in printed and "note: 2 of 3 folds" in printed
    result = json.loads((run / "cv.json").read_text())
    assert [f["fold"] for f in result["folds"]] == [0, 1]
    mean = result["mean"]
    assert mean["score"] == pytest.approx((first["score"] + 0.5) / 2)
    assert mean["hausdorff"] == pytest.approx((first["hausdorff"] + 0.75) / 2)
    assert mean["dice_stomach"] == pytest.approx((first["dice_per_class"]["stomach"] + 0.3) / 2)
    assert mean["dice_small_bowel"] == pytest.approx(first["dice_per_class"]["small_bowel"])  # NaN fold skipped
    assert mean["n_case_days"] == first["n_case_days"] + 3
    table = pd.read_csv(run / "cv.csv")
    assert list(table.fold) == ["0", "1", "mean"]
    assert table.score.iloc[-1] == pytest.approx(mean["score"])


def test_cv_without_scores_errors(tmp_path, capsys):
    assert cli_main(["kaggle", "cv", "--run", str(tmp_path)]) == 2
    assert "no fold has a score" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    assert cli_main(["kaggle", "cv", "--run", str(tmp_path)]) == 2
    assert "run without cross-validation" in capsys.readouterr().err
    assert cli_main(["kaggle", "cv", "--run", str(tmp_path / "absent")]) == 2
    assert not (tmp_path / "cv.json").exists()


def test_submit_then_score(fold_run, gi_root, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert cli_main(["kaggle", "submit", "--model", str(fold_run / "fold0" / "best.pt"), "--root", str(gi_root),
                     "--out", str(out), "--min-area", "4"]) == 0  # no test/ folder: the train split
    assert "row order: case-day, slice, class" in capsys.readouterr().out
    _submission_checks(out, gi_root)
    assert cli_main(["kaggle", "score", "--submission", str(out), "--truth", str(gi_root / "train.csv"),
                     "--root", str(gi_root), "--json", str(tmp_path / "score.json")]) == 0
    score = json.loads((tmp_path / "score.json").read_text())
    assert 0.0 <= score["score"] <= 1.0 and score["n_case_days"] == len(scan_case_days(gi_root))


def test_flip_tta_averages_the_flipped_predictions(fold_run, gi_root, tmp_path):
    checkpoint = fold_run / "fold0" / "best.pt"
    image = np.random.default_rng(0).random((6, 40, 32)).astype(np.float32) * 300
    spacing = (3.0, 1.5, 1.5)
    plain = workflow.Ensemble([checkpoint])
    # flips on the model's (resampled) grid: the predictor's TTA, whose flips are tested in test_predict
    volume = types.SimpleNamespace(array=image, meta=types.SimpleNamespace(shape=image.shape, spacing=spacing))
    want = predict_module.Predictor(checkpoint).probabilities(volume, tta=True)
    got = workflow.Ensemble([checkpoint], tta=True).probabilities(image, spacing)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, plain.probabilities(image, spacing), atol=1e-4)
    out = tmp_path / "tta.csv"
    assert cli_main(["kaggle", "submit", "--model", str(checkpoint), "--root", str(gi_root), "--out", str(out),
                     "--tta"]) == 0
    _submission_checks(out, gi_root)


def test_resume_and_reuse_of_the_import(fold_run, gi_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fold_run, run)
    manifest_time = (run / "data" / "manifest.csv").stat().st_mtime_ns
    args = ["kaggle", "train", "--root", str(gi_root), "--out", str(run), "--folds", "3", "--fold", "0"]
    assert cli_main([*args, *_sets()]) == 2  # a fold with last.pt needs --resume
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*args, "--resume", *_sets("train.max_steps=3")]) == 0
    metrics = pd.read_csv(run / "fold0" / "metrics.csv")
    assert list(metrics.step) == [0, 1, 2]
    assert json.loads((run / "fold0" / "fold_score.json").read_text())["steps"] == 3
    assert (run / "data" / "manifest.csv").stat().st_mtime_ns == manifest_time  # imported once


def test_import_once_refuses_another_dataset(gi_root, tmp_path):
    data = tmp_path / "data"
    manifest = workflow.import_once(gi_root, data)
    stamp = manifest.stat().st_mtime_ns
    assert workflow.import_once(gi_root, data) == manifest and manifest.stat().st_mtime_ns == stamp
    other = tmp_path / "other"
    shutil.copytree(gi_root, other)
    shutil.rmtree(other / "train" / scan_case_days(gi_root)[0].folder.parent.parent.name)
    with pytest.raises(InputError, match="other case-days"):
        workflow.import_once(other, data)
    (other / "train.csv").unlink()
    with pytest.raises(InputError, match="train.csv"):
        workflow.import_once(other, tmp_path / "data2")


def test_exclude_drops_case_days_and_cases(gi_root, tmp_path, no_curves):
    names = [c.name for c in scan_case_days(gi_root)]
    cases = sorted({n.split("_")[0] for n in names}, key=lambda c: int(c[4:]))
    two_days = next(c for c in cases if sum(n.startswith(c + "_") for n in names) == 2)
    whole = next(c for c in cases if c != two_days)
    day = next(n for n in names if n.startswith(two_days + "_"))
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"# flawed masks\n{day}  # one scan\n\n{whole}\n")
    run = tmp_path / "run"
    # no --fold: every fold in turn
    assert cli_main(["kaggle", "train", "--root", str(gi_root), "--out", str(run), "--folds", "2",
                     "--exclude", str(exclude), *_sets()]) == 0
    kept = {n for n in names if n != day and not n.startswith(whole + "_")}
    folds = [json.loads((run / f"fold{k}" / "fold_score.json").read_text()) for k in (0, 1)]
    for data in folds:
        assert set(data["train_case_days"]) | set(data["val_case_days"]) == kept
    assert sorted(folds[0]["val_case_days"] + folds[1]["val_case_days"]) == sorted(kept)  # each held out once
    assert folds[0]["train_case_days"] == folds[1]["val_case_days"]
    config = json.loads((run / "fold1" / "config.json").read_text())
    assert set(config["data"]["exclude"]) == {day, whole} and config["data"]["fold"] == 1
    assert cli_main(["kaggle", "cv", "--run", str(run)]) == 0
    assert json.loads((run / "cv.json").read_text())["n_folds"] == 2


@pytest.mark.parametrize("text, match", [
    ("case7_day0\ncase 8\n", "line 2"),
    ("case7_slice_0001\n", "line 1"),
    ("case7,case8\n", "one id per line"),
])
def test_bad_exclude_file(tmp_path, text, match):
    path = tmp_path / "exclude.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        workflow.read_exclude_file(path)
    with pytest.raises(InputError, match="not found"):
        workflow.read_exclude_file(tmp_path / "absent.txt")


def test_read_exclude_file(tmp_path):
    path = tmp_path / "exclude.txt"
    path.write_text("# comment\ncase7_day0\n  case81  # whole case\ncase7_day0\n\n")
    assert workflow.read_exclude_file(path) == ["case7_day0", "case81"]


@pytest.mark.parametrize("override, match", [
    ("data.manifest='x.csv'", "data.manifest is set by kaggle train"),
    ("data.fold=1", "use --fold"),
])
def test_workflow_keys_cannot_be_overridden(override, match):
    with pytest.raises(InputError, match=match):
        workflow.build_fold_config("gi", [override], "m.csv", 3)


def test_fold_config_layers():
    config = workflow.build_fold_config("gi", ["model.name=projection25d", "data.exclude=['case3']",
                                               "train.seed=5"], "m.csv", 4, exclude=["case1_day2"], seed=2)
    assert config["model"] == {"name": "projection25d", "options": {}}  # the slice-stack options are dropped
    assert config["data"]["manifest"] == "m.csv" and config["data"]["folds"] == 4
    assert config["data"]["exclude"] == ["case1_day2", "case3"]
    assert config["train"]["seed"] == 5  # --set wins over --seed
    assert config["loss"]["dice_weight"] == 3 * config["loss"]["ce_weight"]  # the gi preset underneath
    assert workflow.build_fold_config("gi", ["data.folds=0"], "m.csv", 4)["data"]["folds"] == 0


@pytest.mark.parametrize("flags, match", [
    (["--folds", "1"], "at least 2"),
    (["--folds", "4"], "cannot make 4 folds"),
    (["--folds", "3", "--fold", "3"], "0..2"),
])
def test_bad_fold_choices(gi_root, tmp_path, capsys, flags, match):
    assert cli_main(["kaggle", "train", "--root", str(gi_root), "--out", str(tmp_path / "run"), *flags,
                     *_sets()]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run" / "fold0").exists()


# --- real data: one case, no cross-validation ------------------------------------------------------------------


def test_realdata_end_to_end(realdata, tmp_path, capsys, no_curves):
    root = realdata / "gi_kaggle_mr"
    run = tmp_path / "run"
    assert cli_main(["kaggle", "train", "--root", str(root), "--out", str(run), *_sets("data.val_fraction=0")]) == 0
    printed = capsys.readouterr().out
    assert "only one case (case900" in printed and "no fold score" in printed
    assert (run / "full" / "best.pt").is_file() and not (run / "full" / "fold_score.json").exists()
    assert not list(run.glob("fold*"))
    assert (run / "data" / "images" / "case900_day0.nii.gz").is_file()
    out = tmp_path / "submission.csv"
    assert cli_main(["kaggle", "submit", "--model", str(run / "full" / "best.pt"), "--root", str(root),
                     "--out", str(out)]) == 0
    _submission_checks(out, root)
    assert cli_main(["kaggle", "score", "--submission", str(out), "--truth", str(root / "train.csv"),
                     "--root", str(root), "--json", str(tmp_path / "score.json")]) == 0
    score = json.loads((tmp_path / "score.json").read_text())
    assert 0.0 <= score["score"] <= 1.0 and score["n_rows"] == len(read_train_csv(root / "train.csv"))
    assert cli_main(["kaggle", "cv", "--run", str(run)]) == 2  # nothing to aggregate without folds


# --- submit with known probabilities -------------------------------------------------------------------------


def _write_scan(root: Path, case: int, day: int, depth: int, height: int, width: int, split: str = "test") -> None:
    scans = root / split / f"case{case}" / f"case{case}_day{day}" / "scans"
    scans.mkdir(parents=True)
    rng = np.random.default_rng(case * 100 + day)
    for k in range(depth):
        pixels = rng.integers(0, 1000, size=(height, width)).astype(np.uint16)
        sitk.WriteImage(sitk.GetImageFromArray(pixels), str(scans / f"slice_{k + 1:04d}_{width}_{height}_1.50_1.50.png"))


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    root = tmp_path / "root"
    _write_scan(root, 1, 0, 3, 8, 10)
    _write_scan(root, 1, 2, 2, 8, 10)
    _write_scan(root, 12, 1, 4, 6, 6)
    return root


def _known_probabilities(seed: int, classes: tuple[str, ...]):
    """Probabilities that depend on the volume's shape and the class name only, so any order can be matched."""
    def probabilities(volume):
        shape = volume.array.shape
        assert volume.meta.shape == shape and volume.meta.spacing == pytest.approx((3.0, 1.5, 1.5))
        return np.stack([np.random.default_rng([seed, *shape, sum(map(ord, c))]).random(shape, dtype=np.float32)
                         for c in classes])
    return probabilities


@pytest.fixture
def fake_models(monkeypatch):
    """``Predictor`` replaced by models with known outputs, keyed by checkpoint file name."""
    models: dict[str, tuple[tuple[str, ...], object]] = {}
    calls: list[tuple] = []

    class FakePredictor:
        def __init__(self, checkpoint, device="auto"):
            self.classes, self.function = models[Path(checkpoint).name]
            self.device = device
            self.spec = types.SimpleNamespace(classes=self.classes)
            self.sigmoid = True
            self.name = Path(checkpoint).name

        def probabilities(self, volume):
            calls.append((self.name, volume.array.shape))
            return self.function(volume)

    monkeypatch.setattr(predict_module, "Predictor", FakePredictor)
    return models, calls


def test_ensemble_averages_by_class_name(fake_models, tiny_root, tmp_path):
    models, _ = fake_models
    reordered = ("stomach", "liver", "large_bowel", "small_bowel")
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    models["b.pt"] = (reordered, _known_probabilities(2, reordered))
    ensemble = workflow.Ensemble(["a.pt", "b.pt"])
    assert [member.device for member, _ in workflow.Ensemble(["a.pt", "b.pt"], device="cpu").members] == ["cpu", "cpu"]
    image = np.zeros((3, 8, 10), dtype=np.float32)
    volume = types.SimpleNamespace(array=image, meta=types.SimpleNamespace(shape=image.shape, spacing=(3.0, 1.5, 1.5)))
    a, b = _known_probabilities(1, CLASSES)(volume), _known_probabilities(2, CLASSES)(volume)
    averaged = ensemble.probabilities(image, (3.0, 1.5, 1.5))
    np.testing.assert_allclose(averaged, (a + b) / 2, rtol=1e-6)

    out = tmp_path / "sub.csv"
    result = workflow.submit(["a.pt", "b.pt"], tiny_root, out, threshold=0.5, progress=False)
    assert result.split == "test" and result.case_days == ["case1_day0", "case1_day2", "case12_day1"]
    frame = _submission_checks(out, tiny_root, split="test")
    rows = frame[frame["id"].str.startswith("case1_day0_")]
    for k in range(3):
        for c, cls in enumerate(CLASSES):
            rle = rows[(rows["id"] == f"case1_day0_slice_{k + 1:04d}") & (rows["class"] == cls)]["predicted"].iat[0]
            np.testing.assert_array_equal(rle_decode(rle, (8, 10)), (a[c, k] + b[c, k]) / 2 >= 0.5)


def test_single_model_thresholds_its_own_probabilities(fake_models, tiny_root, tmp_path):
    models, _ = fake_models
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    out = tmp_path / "sub.csv"
    workflow.submit(["a.pt"], tiny_root, out, threshold=0.8, progress=False)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    image = types.SimpleNamespace(array=np.zeros((4, 6, 6)),
                                  meta=types.SimpleNamespace(shape=(4, 6, 6), spacing=(3.0, 1.5, 1.5)))
    probs = _known_probabilities(1, CLASSES)(image)
    rle = frame[(frame["id"] == "case12_day1_slice_0003") & (frame["class"] == "small_bowel")]["predicted"].iat[0]
    np.testing.assert_array_equal(rle_decode(rle, (6, 6)), probs[1, 2] >= 0.8)


def test_checkpoint_without_an_organ_is_named(fake_models, tiny_root, tmp_path, capsys):
    models, _ = fake_models
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    models["partial.pt"] = (("large_bowel", "stomach"), _known_probabilities(2, ("large_bowel", "stomach")))
    with pytest.raises(InputError, match=r"partial\.pt.*small_bowel"):
        workflow.Ensemble(["a.pt", "partial.pt"])
    assert cli_main(["kaggle", "submit", "--model", "a.pt", "--model", "partial.pt", "--root", str(tiny_root),
                     "--out", str(tmp_path / "sub.csv")]) == 2
    assert "partial.pt" in capsys.readouterr().err and not (tmp_path / "sub.csv").exists()


@pytest.mark.parametrize("min_area", [0, 1, 2, 3, 5, 6, 7])
def test_remove_small_components_matches_skimage(min_area):
    masks = np.random.default_rng(min_area).random((3, 4, 12, 14)) > 0.6
    got = workflow.remove_small_components(masks, min_area)
    expected = masks.copy()
    if min_area > 1:
        for index in np.ndindex(masks.shape[:2]):
            expected[index] = remove_small_objects(masks[index], max_size=min_area - 1, connectivity=1)
    np.testing.assert_array_equal(got, expected)


def test_remove_small_components_by_hand():
    plane = np.zeros((6, 7), dtype=bool)
    plane[0, 0:2] = True          # 2 pixels
    plane[3:5, 3:6] = True        # 6 pixels
    plane[1, 2] = True            # touches the pair only diagonally: its own component
    stack = np.stack([plane, np.roll(plane, 1, axis=0)])  # the slices never join each other
    kept = workflow.remove_small_components(stack, 3)
    expected = np.zeros_like(plane)
    expected[3:5, 3:6] = True
    np.testing.assert_array_equal(kept, np.stack([expected, np.roll(expected, 1, axis=0)]))
    without_single = plane.copy()
    without_single[1, 2] = False
    np.testing.assert_array_equal(workflow.remove_small_components(stack, 2)[0], without_single)
    np.testing.assert_array_equal(workflow.remove_small_components(stack, 7), np.zeros_like(stack))


def test_min_area_through_submit(fake_models, tiny_root, tmp_path):
    models, _ = fake_models

    def blobs(volume):
        probs = np.full((3, *volume.array.shape), 0.1, dtype=np.float32)
        probs[:, :, 0, 0:2] = 0.9      # 2-pixel component in every slice and class
        probs[:, :, 3:5, 2:5] = 0.9    # 6-pixel component
        return probs

    models["blobs.pt"] = (CLASSES, blobs)
    big = np.zeros((8, 10), dtype=bool)
    big[3:5, 2:5] = True
    small = np.zeros((8, 10), dtype=bool)
    small[0, 0:2] = True
    for min_area, expected in [(0, big | small), (2, big | small), (3, big), (6, big), (7, np.zeros_like(big))]:
        out = tmp_path / f"sub{min_area}.csv"
        assert cli_main(["kaggle", "submit", "--model", "blobs.pt", "--root", str(tiny_root), "--out", str(out),
                         "--min-area", str(min_area)]) == 0
        frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        for rle in frame[frame["id"].str.startswith("case1_")]["predicted"]:
            np.testing.assert_array_equal(rle_decode(rle, (8, 10)), expected)


def test_sample_submission_order(fake_models, tiny_root, tmp_path):
    models, calls = fake_models
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    natural = tmp_path / "natural.csv"
    workflow.submit(["a.pt"], tiny_root, natural, progress=False)
    reference = {(i, c): p for i, c, p in pd.read_csv(natural, dtype=str, keep_default_na=False).to_numpy()}

    keys = [k for k in reference if not k[0].startswith("case12_")]
    order = np.random.default_rng(0).permutation(len(keys))
    sample = pd.DataFrame({"id": [keys[i][0] for i in order], "class": [keys[i][1] for i in order],
                           "predicted": "1 1"})
    sample["id"] = sample["id"].str.replace("_slice_000", "_slice_", regex=False)  # unpadded ids are the same slice
    sample.to_csv(tiny_root / "sample_submission.csv", index=False)
    calls.clear()
    out = tmp_path / "ordered.csv"
    result = workflow.submit(["a.pt"], tiny_root, out, progress=False)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["id", "class", "predicted"]
    assert list(zip(frame["id"], frame["class"])) == [keys[i] for i in order]
    assert all(reference[(i, c)] == p for i, c, p in frame.to_numpy())
    assert result.order_source.endswith("sample_submission.csv")
    assert {shape for _, shape in calls} == {(3, 8, 10), (2, 8, 10)}  # case12 is not in the sample: not predicted


def test_sample_submission_row_that_cannot_be_produced(fake_models, tiny_root, tmp_path, capsys):
    models, _ = fake_models
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    rows = [("case1_day0_slice_0001", "stomach"), ("case1_day0_slice_0009", "stomach")]
    pd.DataFrame(rows, columns=["id", "class"]).to_csv(tiny_root / "sample_submission.csv", index=False)
    out = tmp_path / "sub.csv"
    assert cli_main(["kaggle", "submit", "--model", "a.pt", "--root", str(tiny_root), "--out", str(out)]) == 2
    assert "case1_day0_slice_0009 stomach: no such slice" in capsys.readouterr().err
    assert not out.exists()
    pd.DataFrame([("case5_day1_slice_0001", "stomach")], columns=["id", "class"]).to_csv(
        tiny_root / "sample_submission.csv", index=False)
    with pytest.raises(InputError, match="no case-day case5_day1"):
        workflow.submit(["a.pt"], tiny_root, out, progress=False)
    # the public competition file lists no rows: the natural order is used
    (tiny_root / "sample_submission.csv").write_text("id,class,predicted\n")
    result = workflow.submit(["a.pt"], tiny_root, out, progress=False)
    assert result.order_source == "case-day, slice, class" and result.n_rows == 3 * (3 + 2 + 4)


def test_split_choice_and_bad_arguments(fake_models, tiny_root, tmp_path):
    models, _ = fake_models
    models["a.pt"] = (CLASSES, _known_probabilities(1, CLASSES))
    _write_scan(tiny_root, 4, 3, 2, 6, 8, split="train")
    out = tmp_path / "sub.csv"
    assert workflow.submit(["a.pt"], tiny_root, out, split="train", progress=False).case_days == ["case4_day3"]
    assert workflow.submit(["a.pt"], tiny_root, out, progress=False).split == "test"
    with pytest.raises(InputError, match="threshold"):
        workflow.submit(["a.pt"], tiny_root, out, threshold=0.0, progress=False)
    with pytest.raises(InputError, match="min-area"):
        workflow.submit(["a.pt"], tiny_root, out, min_area=-1, progress=False)
    with pytest.raises(InputError, match="case9_day9"):
        workflow.submit(["a.pt"], tiny_root, out, case_days=["case9_day9"], progress=False)
    with pytest.raises(InputError, match="at least one checkpoint"):
        workflow.submit([], tiny_root, out, progress=False)
