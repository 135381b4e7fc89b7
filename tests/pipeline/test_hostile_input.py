"""Careless and hostile input through the CLI: each case exits with one line (exit 2) or reports the case,
never prints a traceback, writes nothing outside its output folder and changes no input."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from seg25d.pipeline.cli import main
from seg25d.pipeline.io import read_volume, synthetic_meta, write_mask, write_volume
from seg25d.pipeline.manifest import LabelSpec, write_label_spec, write_manifest

TINY = ["model.name=unet2d", "model.options={depth=2, base_channels=4}", "train.max_steps=1",
        "train.progress=false", "train.val_every=1", "train.checkpoint_every=1", "train.slices_per_step=2",
        "train.warmup_steps=1"]
SHAPE = (6, 10, 12)
META = synthetic_meta(SHAPE, spacing=(2.0, 1.0, 1.0), origin=(-5.0, 3.0, 7.0))
SPEC = LabelSpec(("vessel",), (1,))
HOSTILE_IDS = ["../../evil", "/tmp/evil_abs", "sub\\evil", "..", ".", "a\x01b", "x" * 300]


# --- helpers --------------------------------------------------------------------------------------------------

def sets(*overrides: str) -> list[str]:
    return [arg for text in overrides for arg in ("--set", text)]


def snapshot(root: Path) -> dict[Path, str]:
    """Every file under ``root`` with the hash of its content."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def run(capsys, caplog, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process; asserts no traceback reached stderr or the log."""
    caplog.clear()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    return code, out, err


def error_line(err: str) -> str:
    """The one error line of a refused command (and nothing else on stderr)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def assert_only_under(before: dict[Path, str], after: dict[Path, str], folder: Path | None) -> None:
    """Inputs unchanged; every new or changed file lies under ``folder`` (None: nothing new at all)."""
    changed = {p for p in before if after.get(p) != before[p]}
    created = set(after) - set(before)
    allowed = (lambda p: False) if folder is None else (lambda p: p.resolve().is_relative_to(folder.resolve()))
    assert not [p for p in changed if not allowed(p)], "inputs changed"
    assert not [p for p in created if not allowed(p)], f"written outside {folder}"


def blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    c = rng.uniform(2, 4, 3)
    return ((z - SHAPE[0] / 2) ** 2 / 4 + (y - c[1] * 2) ** 2 / 9 + (x - c[2] * 2) ** 2 / 9) < 1.5


def make_dataset(root: Path, ids=("c0", "c1", "c2"), splits=("train", "train", "val")) -> Path:
    """Tiny NIfTI images and labels, a manifest and its sidecar; case ids as given."""
    rows = []
    for k, (case, split) in enumerate(zip(ids, splits)):
        mask = blob(k)
        image = write_volume(root / "images" / f"img{k}.nii.gz",
                             (mask * 100 + np.random.default_rng(k).normal(0, 5, SHAPE)).astype(np.float32), META)
        label = write_mask(root / "labels" / f"lab{k}.nii.gz", mask, META)
        rows.append({"case_id": case, "image": str(image), "label": str(label), "split": split})
    manifest = root / "manifest.csv"
    write_label_spec(manifest, SPEC)
    write_manifest(manifest, rows)
    return manifest


def hostile_manifest(root: Path, case_id: str) -> Path:
    """A valid dataset whose manifest names one case with ``case_id`` (written by hand: writers refuse)."""
    manifest = make_dataset(root)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[1, "case_id"] = case_id
    frame.to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A one-step unet2d checkpoint for the dataset of :func:`make_dataset`."""
    from seg25d.pipeline import figures

    root = tmp_path_factory.mktemp("ckpt")
    manifest = make_dataset(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "training_curves", lambda metrics, path: path)
        assert main(["train", "--out", str(root / "run"), *sets(f"data.manifest={manifest}", *TINY)]) == 0
    return root / "run" / "last.pt"


# --- 1. case ids never become paths outside the output folder ------------------------------------------------

@pytest.mark.parametrize("case_id", HOSTILE_IDS, ids=["parent", "absolute", "backslash", "dotdot", "dot",
                                                     "control", "long"])
def test_manifest_check_refuses_case_ids_that_are_not_plain_names(tmp_path, capsys, caplog, case_id):
    manifest = hostile_manifest(tmp_path, case_id)
    before = snapshot(tmp_path)
    code, out, err = run(capsys, caplog, "manifest", "check", manifest)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"seg25d manifest: error: {manifest}: line 3: case_id ")
    assert "plain names" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case_id", ["../../evil", str(Path("/tmp/evil_abs"))])
def test_predict_refuses_a_hostile_manifest_before_writing(tmp_path, capsys, caplog, checkpoint, case_id):
    manifest = hostile_manifest(tmp_path / "data", case_id)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest,
                       "--out", tmp_path / "out", "--probabilities")
    assert code == 2 and "line 3: case_id" in error_line(err)
    assert not (tmp_path / "out").exists() and not Path("/tmp/evil_abs.nii.gz").exists()
    assert_only_under(before, snapshot(tmp_path), None)


def test_predict_overwrite_never_replaces_an_input(tmp_path, capsys, caplog, checkpoint):
    """--out is the images folder and a case id equals an image's name: that case fails, its image stays."""
    manifest = make_dataset(tmp_path, ids=("img0", "c1", "c2"))
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        code, out, err = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest,
                             "--out", tmp_path / "images", *extra)
        assert code == 1
        image = tmp_path / "images" / "img0.nii.gz"
        assert f"  failed img0: {image}: output {image} is an input of this batch; predict into another --out" \
            in out.splitlines()
    after = snapshot(tmp_path)
    assert all(after[p] == h for p, h in before.items())  # no input changed
    assert {p.name for p in set(after) - set(before)} == {"c1.nii.gz", "c2.nii.gz", "labels.json",
                                                          "labels.ctbl", "labels_itksnap.txt",
                                                          "prediction.json", "failures.csv"}


def test_evaluate_refuses_a_hostile_manifest(tmp_path, capsys, caplog):
    manifest = hostile_manifest(tmp_path / "data", "../outside")
    (tmp_path / "outside.nii.gz").write_bytes((tmp_path / "data" / "labels" / "lab1.nii.gz").read_bytes())
    (tmp_path / "pred").mkdir()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "evaluate", "--pred", tmp_path / "pred", "--manifest", manifest,
                       "--out", tmp_path / "eval")
    assert code == 2 and "line 3: case_id '../outside' holds a path separator" in error_line(err)
    assert_only_under(before, snapshot(tmp_path), None)


def test_report_refuses_case_ids_of_a_metrics_table_that_are_not_plain_names(tmp_path, capsys, caplog, checkpoint):
    manifest = make_dataset(tmp_path / "data")
    assert main(["predict", "--model", str(checkpoint), "--manifest", str(manifest), "--out", str(tmp_path / "p")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--manifest", str(manifest),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    metrics["case_id"] = metrics["case_id"].replace("c1", "../../evil")
    metrics.to_csv(tmp_path / "eval" / "metrics.csv", index=False)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "report", tmp_path / "eval")
    assert code == 2
    assert error_line(err).startswith(f"seg25d report: error: {tmp_path / 'eval' / 'metrics.csv'}: case_id "
                                      "'../../evil' holds a path separator")
    assert_only_under(before, snapshot(tmp_path), tmp_path / "eval")


# --- 2. NIfTI spatial units ------------------------------------------------------------------------------------

def _nifti_in(path: Path, unit: str | int, zooms=(500.0, 400.0, 300.0)) -> Path:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (-2000.0, 1000.0, 3000.0)
    img = nib.Nifti1Image(np.arange(np.prod(SHAPE[::-1]), dtype=np.int16).reshape(SHAPE[::-1]) % 7, affine)
    if isinstance(unit, str):
        img.header.set_xyzt_units(unit, "sec")
    else:
        img.header["xyzt_units"] = unit
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def test_micron_volumes_are_read_in_mm_and_masks_keep_the_header(tmp_path, capsys, caplog, checkpoint):
    """`manifest check` shows the spacing in mm as SimpleITK reads it; predicted masks keep the input's exact
    affine and units."""
    image = _nifti_in(tmp_path / "micron.nii.gz", "micron")
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,image,label,split\nu,micron.nii.gz,,test\n")
    write_label_spec(manifest, SPEC)
    before = snapshot(tmp_path)
    code, out, _ = run(capsys, caplog, "manifest", "check", manifest)
    assert code == 0
    reference = sitk.ReadImage(str(image)).GetSpacing()[::-1]  # (D, H, W), mm
    assert np.allclose(reference, (0.3, 0.4, 0.5))
    assert "x".join(f"{s:.3g}" for s in reference) in out.splitlines()[1]
    code, _, _ = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest, "--out", tmp_path / "o")
    assert code == 0
    src, dst = nib.load(str(image)), nib.load(str(tmp_path / "o" / "u.nii.gz"))
    assert np.array_equal(dst.affine, src.affine)
    assert np.array_equal(dst.header.get_sform(), src.header.get_sform())
    assert np.array_equal(dst.header.get_qform(), src.header.get_qform())
    assert dst.header.get_xyzt_units() == ("micron", "sec")
    assert_only_under(before, snapshot(tmp_path), tmp_path / "o")


def test_unrecognised_units_warn_once_per_file(tmp_path, caplog):
    path = _nifti_in(tmp_path / "odd.nii.gz", 5, zooms=(2.0, 3.0, 4.0))
    with caplog.at_level(logging.WARNING):
        first, second = read_volume(path), read_volume(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path}: spatial units code 5 (xyzt_units) is not metre, mm or micron; read as millimetres"]
    assert first.meta.spacing == (4.0, 3.0, 2.0) == second.meta.spacing


# --- 3. training and label geometry ------------------------------------------------------------------------------

def _shifted_label_dataset(root: Path) -> tuple[Path, Path]:
    manifest = make_dataset(root)
    label = root / "labels" / "lab1.nii.gz"
    shifted = synthetic_meta(SHAPE, spacing=(2.0, 1.0, 1.0), origin=(-5.0, 3.0, 12.0))  # 5 mm along x
    write_mask(label, read_volume(label).array, shifted)
    return manifest, label


def test_training_refuses_a_label_off_its_images_grid_as_manifest_check_does(tmp_path, capsys, caplog):
    manifest, label = _shifted_label_dataset(tmp_path / "data")
    code, out, _ = run(capsys, caplog, "manifest", "check", manifest)
    assert code == 1
    problem = f"{label}: label geometry (spacing/origin/direction) differs from the image's"
    assert f"  {problem}" in out.splitlines()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "train", "--out", tmp_path / "run", *sets(f"data.manifest={manifest}", *TINY))
    assert code == 2
    assert error_line(err) == (f"seg25d train: error: {problem} (data.resample_labels = true resamples labels onto "
                               "their images)")
    assert not (tmp_path / "run").exists()
    assert_only_under(before, snapshot(tmp_path), None)


def test_training_with_resample_labels_resamples_the_label_onto_the_image(tmp_path, capsys, caplog, monkeypatch):
    from seg25d.pipeline import data as data_module
    from seg25d.pipeline import figures

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)
    manifest, label = _shifted_label_dataset(tmp_path / "data")
    loaded = []
    original = data_module.load_cases

    def spy(rows, task, preprocessing, progress=True, resample_labels=False):
        cases = original(rows, task, preprocessing, progress, resample_labels)
        loaded.extend(cases)
        return cases

    monkeypatch.setattr(data_module, "load_cases", spy)
    before = snapshot(tmp_path)
    code, _, _ = run(capsys, caplog, "train", "--out", tmp_path / "run",
                     *sets(f"data.manifest={manifest}", "data.resample_labels=true", "data.cache=off", *TINY))
    assert code == 0
    # SimpleITK's nearest-neighbour resampling of the label onto the image grid is the reference
    image_itk = sitk.ReadImage(str(tmp_path / "data" / "images" / "img1.nii.gz"))
    expected = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(label)), image_itk, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0))
    case = next(c for c in loaded if c.case_id == "c1")
    np.testing.assert_array_equal(case.masks[0], expected == 1)
    assert 0 < expected.sum() < (read_volume(label).array == 1).sum()  # shifted: part of it left the grid
    assert_only_under(before, snapshot(tmp_path), tmp_path / "run")


# --- 4. configuration types and output folders, one line each -----------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("train.lr=abc", "train.lr: expected a number, got 'abc'"),
    ("data.spacing=2", 'data.spacing: expected "auto" or a list of numbers, got 2'),
    ("train.max_minutes=soon", "train.max_minutes: expected a number, got 'soon'"),
    ("train.weight_decay=[1]", "train.weight_decay: expected a number, got [1]"),
])
def test_config_types_are_checked_before_any_data_is_read(tmp_path, capsys, caplog, override, message):
    """The manifest does not exist: the type error comes first, so no data was read."""
    code, _, err = run(capsys, caplog, "train", "--out", tmp_path / "run",
                       *sets(f"data.manifest={tmp_path / 'absent.csv'}", override))
    assert code == 2 and error_line(err) == f"seg25d train: error: {message}"
    assert list(tmp_path.iterdir()) == []


def _bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "file").write_text("not a folder")
    return {"file": (tmp_path / "file", "--out is a file, not a folder"),
            "under_file": (tmp_path / "file" / "out", f"--out cannot be created: {tmp_path / 'file'} is a file, "
                                                      "not a folder")}


@pytest.mark.parametrize("where", ["file", "under_file"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "kaggle import"])
def test_unusable_out_is_one_line_before_work(tmp_path, capsys, caplog, checkpoint, command, where):
    manifest = make_dataset(tmp_path / "data")
    out, message = _bad_outs(tmp_path)[where]
    argv = {"predict": ["predict", "--model", checkpoint, "--manifest", manifest],
            "evaluate": ["evaluate", "--pred", tmp_path / "data" / "labels", "--manifest", manifest],
            "train": ["train", *sets(f"data.manifest={manifest}", *TINY)],
            "kaggle import": ["kaggle", "import", "--root", tmp_path / "no_such_root"]}[command]
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, *argv, "--out", out)
    assert code == 2
    assert error_line(err) == f"seg25d {command.split()[0]}: error: {out}: {message}"
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder(tmp_path, capsys, caplog, checkpoint):
    manifest = make_dataset(tmp_path / "data")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    code, _, err = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest,
                       "--out", tmp_path / "ro" / "out")
    assert code == 2 and "no write permission" in error_line(err)


def test_an_output_name_taken_by_a_folder_is_one_line_in_the_batch_report(tmp_path, capsys, caplog, checkpoint):
    manifest = make_dataset(tmp_path / "data")
    (tmp_path / "out" / "c1.nii.gz").mkdir(parents=True)
    before = snapshot(tmp_path)
    code, out, _ = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest,
                       "--out", tmp_path / "out", "--overwrite")
    assert code == 1
    assert (f"  failed c1: {tmp_path / 'data' / 'images' / 'img1.nii.gz'}: output {tmp_path / 'out' / 'c1.nii.gz'} "
            "exists as a folder") in out.splitlines()
    assert (tmp_path / "out" / "c0.nii.gz").is_file() and (tmp_path / "out" / "c2.nii.gz").is_file()
    assert_only_under(before, snapshot(tmp_path), tmp_path / "out")


# --- 5. stale temporary files --------------------------------------------------------------------------------------

def test_a_killed_predictions_temporary_files_are_removed_on_the_next_run(tmp_path, capsys, caplog, checkpoint):
    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint), "--manifest", str(manifest), "--out", str(out)]) == 0
    (out / "c1.nii.gz").unlink()  # killed while writing c1: its temporary is left, the mask is not there
    stale = [out / ".c1.0123abcd.tmp.nii.gz", out / "probabilities" / ".c2_vessel.89abcdef.tmp.nii.gz"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a volume")
    kept = [out / ".c10.0123abcd.tmp.nii.gz", out / ".c1.notes", out / "c1.0123abcd.tmp.nii.gz"]  # not c1's
    for path in kept:
        path.write_text("mine")
    capsys.readouterr()
    code, printed, _ = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest, "--out", out,
                           "--probabilities")
    assert code == 0 and printed.startswith("predicted 3, skipped 0")
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "mine" for p in kept)


# --- 6. label values -------------------------------------------------------------------------------------------------

def test_a_float_label_with_halves_is_reported_once_with_its_values(tmp_path, capsys, caplog):
    manifest = make_dataset(tmp_path / "data")
    label = tmp_path / "data" / "labels" / "lab1.nii.gz"
    array = read_volume(label).array.astype(np.float32)
    array[0, 0, :3] = (0.5, 0.25, 0.5)
    write_volume(label, array, META)
    code, out, _ = run(capsys, caplog, "manifest", "check", manifest)
    assert code == 1
    problems = [line.strip() for line in out.split("problem(s):")[1].splitlines() if line.strip()]
    assert problems == [f"{label}: label volume holds non-integer values 0.25, 0.5"]
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "train", "--out", tmp_path / "run", *sets(f"data.manifest={manifest}", *TINY))
    assert code == 2 and error_line(err) == f"seg25d train: error: {problems[0]}"
    assert_only_under(before, snapshot(tmp_path), None)


def test_evaluate_flags_undeclared_reference_values_per_case(tmp_path, capsys, caplog):
    manifest = make_dataset(tmp_path / "data")
    label = tmp_path / "data" / "labels" / "lab2.nii.gz"
    truth = read_volume(label).array.copy()
    assert truth[0, 0, 0] == 0
    truth[0, 0, 0] = 3
    write_mask(label, truth, META)
    pred = tmp_path / "pred"
    for k, case in enumerate(("c0", "c1", "c2")):
        write_mask(pred / f"{case}.nii.gz", read_volume(tmp_path / "data" / "labels" / f"lab{k}.nii.gz").array == 1,
                   META)
    halves = read_volume(pred / "c1.nii.gz").array.astype(np.float32)
    assert halves[0, 0, 0] == 0
    halves[0, 0, 0] = 0.5  # a float prediction: its 0.5 is reported as such, not as an undeclared 0
    write_volume(pred / "c1.nii.gz", halves, META)
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING):
        code, _, _ = run(capsys, caplog, "evaluate", "--pred", pred, "--manifest", manifest, "--out", tmp_path / "e")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert code == 0
    message = "label values [3] outside the declared classes {'vessel': 1} (index)"
    assert warnings == [f"{pred / 'c1.nii.gz'}: prediction: label volume holds non-integer values 0.5; scored as "
                        "background", f"{label}: {message}; scored as background"]
    frame = pd.read_csv(tmp_path / "e" / "metrics.csv", keep_default_na=False)
    assert dict(zip(frame.case_id, frame.label_warning)) == {"c0": "", "c1": "", "c2": message}
    assert frame.dice.tolist() == [1.0, 1.0, 1.0]  # the 3 counts as background, as the prediction has it
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["label_warnings"] == [{"case_id": "c2", "label_warning": message}]
    assert_only_under(before, snapshot(tmp_path), tmp_path / "e")


# --- 7. small things -------------------------------------------------------------------------------------------------

def test_a_header_only_manifest_has_no_cases(tmp_path, capsys, caplog, checkpoint):
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,image,label,split\n")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "predict", "--model", checkpoint, "--manifest", manifest,
                       "--out", tmp_path / "o")
    assert code == 2 and error_line(err) == f"seg25d predict: error: {manifest}: no cases (the CSV has a header only)"
    assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("size", [0, 100, -40])
def test_an_empty_or_truncated_checkpoint_is_refused_without_creating_out(tmp_path, capsys, caplog, checkpoint, size):
    data = checkpoint.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[:size])  # the first bytes, or all but the last
    manifest = make_dataset(tmp_path / "data")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, caplog, "predict", "--model", broken, "--manifest", manifest, "--out", tmp_path / "o")
    assert code == 2
    assert error_line(err) == f"seg25d predict: error: {broken}: not a seg25d checkpoint (empty/truncated file)"
    assert not (tmp_path / "o").exists() and snapshot(tmp_path) == before


def test_run_json_keeps_the_first_command_and_every_resume(tmp_path, monkeypatch):
    from seg25d.pipeline import figures

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)
    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    commands = []
    for steps, resume in ((1, []), (2, ["--resume"]), (3, ["--resume"])):
        argv = ["train", "--out", str(out), *sets(f"data.manifest={manifest}", *TINY, f"train.max_steps={steps}"),
                *resume]
        monkeypatch.setattr("sys.argv", ["seg25d", *argv])
        assert main(argv) == 0
        commands.append(" ".join(["seg25d", *argv]))
    recorded = json.loads((out / "run.json").read_text())
    assert [c.replace("'", "") for c in recorded["commands"]] == [c.replace("'", "") for c in commands]
    assert recorded["resumed_at_step"] == 2


# --- every command that writes files, with a hostile case id ---------------------------------------------------------

def test_no_command_writes_outside_its_output_folder_for_a_hostile_case_id(tmp_path, capsys, caplog, checkpoint):
    """predict, evaluate, report, kaggle import/submit, train and bench, each given data naming a case
    ``../../evil``: each refuses in one line or writes only under its --out."""
    from seg25d.pipeline.synth.gi import write_gi_dataset

    hostile = "../../evil"
    manifest = hostile_manifest(tmp_path / "data", hostile)
    good = make_dataset(tmp_path / "good")
    gi = tmp_path / "gi"
    write_gi_dataset(gi, cases=1, seed=0, days=(1, 1), slices=(8, 8), sizes=[(32, 32, 1.5, 1.5)], progress=False)
    train_csv = pd.read_csv(gi / "train.csv", dtype=str, keep_default_na=False)
    train_csv.loc[0, "id"] = hostile + "_slice_0001"
    train_csv.to_csv(gi / "train.csv", index=False)
    (gi / "sample_submission.csv").write_text(f"id,class,predicted\n{hostile}_slice_0001,stomach,\n")
    assert main(["predict", "--model", str(checkpoint), "--manifest", str(good), "--out", str(tmp_path / "p")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--manifest", str(good),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    metrics.loc[metrics.case_id == "c1", "case_id"] = hostile
    metrics.to_csv(tmp_path / "eval" / "metrics.csv", index=False)
    capsys.readouterr()

    def out(name):
        return tmp_path / "outs" / name

    commands = {
        "predict": (["predict", "--model", checkpoint, "--manifest", manifest, "--out", out("predict"),
                     "--probabilities", "--overwrite"], out("predict")),
        "evaluate": (["evaluate", "--pred", tmp_path / "p", "--manifest", manifest, "--out", out("evaluate")],
                     out("evaluate")),
        "report": (["report", tmp_path / "eval"], tmp_path / "eval"),
        "kaggle import": (["kaggle", "import", "--root", gi, "--out", out("import")], out("import")),
        "kaggle submit": (["kaggle", "submit", "--model", checkpoint, "--root", gi, "--split", "train",
                           "--out", out("submit") / "s.csv"], out("submit")),
        "train": (["train", "--out", out("train"), *sets(f"data.manifest={manifest}", *TINY)], out("train")),
        "bench oracle": (["bench", "oracle", "--manifest", manifest, "--split", "train",
                          "--out", out("oracle") / "o.csv"], out("oracle")),
        "bench compare": (["bench", "compare", "--manifest", manifest, "--budget-minutes", "0.01", "--models",
                           "unet2d", "--out", out("compare"), *sets(*TINY[1:])], out("compare")),
    }
    for name, (argv, folder) in commands.items():
        before = snapshot(tmp_path)
        code, _, err = run(capsys, caplog, *argv)
        assert code == 2, name
        assert hostile in error_line(err) or "evil" in error_line(err), name
        assert_only_under(before, snapshot(tmp_path), folder)
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("evil*"))
