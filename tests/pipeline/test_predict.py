"""Batch prediction (`seg25d predict`): exact geometry on real volumes, failures, re-runs, probabilities,
multi-label encoding, evaluation of the outputs and torchrun sharding."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from seg25d.pipeline.checkpoint import load_checkpoint, save_checkpoint
from seg25d.pipeline.cli import main
from seg25d.pipeline.config import load_config
from seg25d.pipeline.io import Volume, read_volume, synthetic_meta, write_mask, write_volume
from seg25d.pipeline.manifest import LabelSpec, read_manifest, write_label_spec, write_manifest
from seg25d.pipeline.predict import Predictor
from seg25d.pipeline.preprocess import Preprocessing
from seg25d.pipeline.synth.vessels import write_vessel_dataset
from seg25d.pipeline.training import train

REAL = {  # name -> path inside realdata
    "mr": "nifti/mr_abdomen/example_mr_sm.nii.gz",  # LPS, int16
    "spleen": "nifti/msd_spleen/sub-spleen2_ct.nii.gz",  # anisotropic, float32, flipped axes
    "breast": "nrrd/pyradiomics/breast1_image.nrrd",
}
TINY_PROJECTION = ["model.options.directions=2", "model.options.train_directions=2",
                   "model.options.unet={depth=2, base_channels=4}", "model.options.head_channels=4",
                   "model.options.filter_size=7"]
TINY_UNET2D = ["model.name=unet2d", "model.options={depth=2, base_channels=4}"]
RESAMPLING = ["data.spacing=[2.0, 1.5, 1.5]"]
METADATA = {"labels.json", "labels.ctbl", "labels_itksnap.txt", "prediction.json"}


# --- checkpoints ------------------------------------------------------------------------------------------------

def _train(manifest: Path, run_dir: Path, overrides: list[str]) -> Path:
    config = load_config("vessels", [f"data.manifest={manifest}", "train.max_steps=2", "train.progress=false",
                                     *overrides])
    return train(config, run_dir).last_checkpoint


def _sharpen(checkpoint: Path, out: Path, volume: Volume, gain: float = 200.0) -> Path:
    """A copy of a (sigmoid) checkpoint whose logits are ``gain * (logit - median logit on volume)`` per class.

    Two training steps leave every probability on one side of 0.5 (empty masks prove little); scaling the
    last 1x1 convolution and centring its bias gives masks covering about half of ``volume`` instead.
    """
    payload = load_checkpoint(checkpoint)
    assert payload["sigmoid"]
    probs = np.clip(Predictor(checkpoint).probabilities(volume).astype(np.float64), 1e-7, 1 - 1e-7)
    median = np.median(np.log(probs) - np.log1p(-probs), axis=(1, 2, 3))
    state = payload["model_state"]
    bias = [k for k in state if k.endswith(".bias")][-1]
    weight = bias[: -len("bias")] + "weight"
    assert state[bias].shape == (len(median),) and state[weight].shape[0] == len(median)
    state[weight] = state[weight] * gain
    state[bias] = (state[bias] - torch.tensor(median, dtype=state[bias].dtype)) * gain
    return save_checkpoint(out, payload)


@pytest.fixture(scope="module")
def vessels(tmp_path_factory) -> Path:
    """Manifest of 4 synthetic vessel volumes (12x16x16), one class 'vessel'."""
    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=4, shape=(12, 16, 16), seed=0, progress=False)


@pytest.fixture(scope="module")
def projection_ckpt(vessels, tmp_path_factory) -> Path:
    """Tiny projection25d, native spacing."""
    root = tmp_path_factory.mktemp("projection")
    last = _train(vessels, root / "run", TINY_PROJECTION)
    return _sharpen(last, root / "sharp.pt", read_volume(read_manifest(vessels).image[0]))


@pytest.fixture(scope="module")
def resampling_ckpt(vessels, tmp_path_factory) -> Path:
    """Tiny unet2d trained on a 2 x 1.5 x 1.5 mm working grid: slice-wise inference plus resampling."""
    root = tmp_path_factory.mktemp("resampling")
    last = _train(vessels, root / "run", RESAMPLING + TINY_UNET2D)
    assert Preprocessing.from_dict(load_checkpoint(last)["preprocessing"]).spacing == [2.0, 1.5, 1.5]
    return _sharpen(last, root / "sharp.pt", read_volume(read_manifest(vessels).image[0]))


@pytest.fixture(scope="module")
def checkpoints(projection_ckpt, resampling_ckpt) -> dict[str, Path]:
    return {"projection": projection_ckpt, "resampling": resampling_ckpt}


def _box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, checkpoint) of a bitmask task with two overlapping classes 'a' (bit 1) and 'b' (bit 2)."""
    root = tmp_path_factory.mktemp("multilabel")
    shape, spec = (12, 16, 16), LabelSpec(("a", "b"), (1, 2), "bitmask")
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        rng = np.random.default_rng(i)
        a = _box(shape, (2 + i % 2, 3, 3), (8, 10 + i % 3, 10))
        b = _box(shape, (5, 7, 6 - i % 2), (11, 14, 13))
        assert (a & b).any()
        image = rng.normal(0, 0.5, shape) + 2.0 * a + 3.0 * b
        meta = synthetic_meta(shape, spacing=(2.0, 1.0, 1.0), origin=(5.0, -3.0, 7.0))
        write_volume(root / "images" / f"ml_{i}.nii.gz", image.astype(np.float32), meta)
        write_mask(root / "labels" / f"ml_{i}.nii.gz", spec.encode(np.stack([a, b])), meta)
        rows.append({"case_id": f"ml_{i}", "image": root / "images" / f"ml_{i}.nii.gz",
                     "label": root / "labels" / f"ml_{i}.nii.gz", "split": split})
    manifest = write_manifest(root / "manifest.csv", rows)
    write_label_spec(manifest, spec)
    last = _train(manifest, root / "run", TINY_UNET2D)
    assert load_checkpoint(last)["task"] == spec.to_dict()
    return manifest, _sharpen(last, root / "sharp.pt", read_volume(rows[0]["image"]))


# --- helpers ----------------------------------------------------------------------------------------------------

def _predict(*args) -> int:
    return main(["predict", *map(str, args)])


def _files(folder: Path) -> set[str]:
    """Every file below ``folder`` (hidden ones included), as relative paths."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _suffix(path) -> str:
    name = str(path)
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _sitk_geometry(path) -> tuple:
    img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _assert_same_geometry(output: Path, source: Path, integer: bool = True):
    """Shape, spacing, origin, direction (SimpleITK) and for NIfTI the affine and its codes (nibabel) of
    ``output`` equal ``source``'s; NIfTI stays NIfTI, NRRD stays NRRD."""
    out_size, out_spacing, out_origin, out_direction = _sitk_geometry(output)
    src_size, src_spacing, src_origin, src_direction = _sitk_geometry(source)
    assert out_size == src_size
    np.testing.assert_allclose(out_spacing, src_spacing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out_origin, src_origin, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(out_direction, src_direction, atol=1e-6)
    pixel = sitk.ReadImage(str(output)).GetPixelID()
    if integer:
        assert pixel in (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
                         sitk.sitkInt32), sitk.GetPixelIDValueAsString(pixel)
    else:
        assert pixel == sitk.sitkFloat32, sitk.GetPixelIDValueAsString(pixel)
    head = output.read_bytes()[:8]
    if _suffix(source) == ".nrrd":
        assert head.startswith(b"NRRD")
    else:
        assert head[:2] == b"\x1f\x8b"  # gzip
        with gzip.open(output) as f:
            header = f.read(348)
        assert int.from_bytes(header[:4], "little") == 348 and header[344:347] == b"n+1"
        out, src = nib.load(output), nib.load(source)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
        assert out.header.get_qform(coded=True)[1] == src.header.get_qform(coded=True)[1]
        assert out.header.get_sform(coded=True)[1] == src.header.get_sform(coded=True)[1]
        assert out.get_data_dtype().kind in ("iu" if integer else "f")


def _independent_prediction(checkpoint: Path, source: Path) -> np.ndarray:
    """The label the checkpoint gives for ``source`` read by SimpleITK (not our reader), ``(D, H, W)``."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    ours = read_volume(source)
    np.testing.assert_array_equal(ours.array, array)  # same voxel order and values as SimpleITK
    predictor = Predictor(checkpoint)
    return predictor.label(predictor.probabilities(Volume(array, ours.meta)))


# --- 1. geometry ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["input", "manifest"])
@pytest.mark.parametrize("kind", ["resampling", "projection"])
def test_masks_have_the_exact_geometry_and_format_of_real_inputs(realdata, checkpoints, tmp_path, route, kind):
    checkpoint = checkpoints[kind]
    sources = {case: realdata / rel for case, rel in REAL.items()}
    out = tmp_path / "out"
    if route == "input":
        assert _predict("--model", checkpoint, "--input", *sources.values(), "--out", out) == 0
        names = {case: src.name for case, src in sources.items()}
    else:
        manifest = write_manifest(tmp_path / "m.csv", [{"case_id": c, "image": s} for c, s in sources.items()])
        assert _predict("--model", checkpoint, "--manifest", manifest, "--out", out) == 0
        names = {case: f"{case}{_suffix(src)}" for case, src in sources.items()}
    assert names["breast"].endswith(".nrrd") and names["mr"].endswith(".nii.gz")
    assert _files(out) == set(names.values()) | METADATA
    prep = Preprocessing.from_dict(load_checkpoint(checkpoint)["preprocessing"])
    for case, source in sources.items():
        mask = out / names[case]
        _assert_same_geometry(mask, source)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        assert set(np.unique(label)) <= {0, 1}
        src = read_volume(source)
        if kind == "resampling":
            assert prep.grid(src.meta.shape, src.meta.spacing) != tuple(src.meta.shape)  # the restore path ran
            np.testing.assert_array_equal(label, _independent_prediction(checkpoint, source))


def test_input_names_keep_the_file_name_and_clash_is_an_error(realdata, resampling_ckpt, tmp_path, capsys):
    mr = realdata / REAL["mr"]
    copy = tmp_path / "other" / mr.name
    copy.parent.mkdir()
    shutil.copy(mr, copy)
    out = tmp_path / "out"
    assert _predict("--model", resampling_ckpt, "--input", mr, copy, "--out", out) == 2
    assert "example_mr_sm.nii.gz" in capsys.readouterr().err
    assert not any(out.glob("*.nii.gz"))


# --- 2. failures ------------------------------------------------------------------------------------------------

def _bad_cases(root: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """case_id -> (image, a word the failure reason must contain)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = read_volume(good).meta
    corrupt = root / "corrupt.nii.gz"
    data = good.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])  # truncated: the header reads, the voxels do not
    flat = root / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), flat)
    series = root / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 12, 2), np.float32), np.eye(4)), series)
    holes = root / "holes.nii.gz"
    array = read_volume(good).array.astype(np.float32)
    array[3, 4, 5] = np.nan
    array[0, 0, 0] = np.inf
    write_volume(holes, array, meta)
    return {"corrupt": (corrupt, "cannot read"), "flat": (flat, "2D"), "series": (series, "4D"),
            "holes": (holes, "NaN"), "missing": (root / "missing.nii.gz", "not found")}


def test_failed_cases_are_listed_and_leave_nothing_behind(vessels, resampling_ckpt, tmp_path, capsys):
    good = Path(read_manifest(vessels).image[0])
    bad = _bad_cases(tmp_path / "images", good)
    rows = [{"case_id": "good", "image": good}] + [{"case_id": c, "image": p} for c, (p, _) in bad.items()]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    assert _predict("--model", resampling_ckpt, "--manifest", manifest, "--out", out) == 1
    printed = capsys.readouterr().out
    assert "predicted 1" in printed and "failed 5" in printed

    assert _files(out) == {"good.nii.gz", "failures.csv"} | METADATA  # no temporary or partial files
    _assert_same_geometry(out / "good.nii.gz", good)
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["case_id", "image", "reason"]
    assert sorted(failures.case_id) == sorted(bad)
    for row in failures.itertuples():
        path, word = bad[row.case_id]
        assert Path(row.image) == path.resolve()
        assert word in row.reason, (row.case_id, row.reason)
        assert "\n" not in row.reason


def test_a_broken_checkpoint_is_an_input_error(vessels, tmp_path, capsys):
    broken = tmp_path / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    assert _predict("--model", broken, "--manifest", vessels, "--out", tmp_path / "out") == 2
    assert "best.pt" in capsys.readouterr().err


# --- 3. re-runs -------------------------------------------------------------------------------------------------

def test_rerun_skips_done_cases_overwrite_redoes_them_and_stale_failures_go(vessels, resampling_ckpt, tmp_path,
                                                                            capsys):
    images = list(read_manifest(vessels).image)
    late = tmp_path / "late.nii.gz"
    rows = [{"case_id": "v0", "image": images[0]}, {"case_id": "v1", "image": images[1]},
            {"case_id": "late", "image": late}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    run = ("--model", resampling_ckpt, "--manifest", manifest, "--out", out)

    assert _predict(*run) == 1
    assert list(pd.read_csv(out / "failures.csv").case_id) == ["late"]
    old = 1_000_000_000
    for name in ("v0.nii.gz", "v1.nii.gz"):
        os.utime(out / name, (old, old))
    capsys.readouterr()

    shutil.copy(images[2], late)
    assert _predict(*run) == 0
    assert "predicted 1, skipped 2" in capsys.readouterr().out
    assert [os.stat(out / n).st_mtime for n in ("v0.nii.gz", "v1.nii.gz")] == [old, old]
    assert _files(out) == {"v0.nii.gz", "v1.nii.gz", "late.nii.gz"} | METADATA  # stale failures.csv removed
    _assert_same_geometry(out / "late.nii.gz", late)

    os.utime(out / "late.nii.gz", (old, old))
    assert _predict(*run, "--overwrite") == 0
    assert "predicted 3, skipped 0" in capsys.readouterr().out
    assert all(os.stat(out / n).st_mtime != old for n in ("v0.nii.gz", "v1.nii.gz", "late.nii.gz"))


def test_probabilities_requested_on_a_rerun_are_written(vessels, resampling_ckpt, tmp_path, capsys):
    """A mask from a plain run does not make a later ``--probabilities`` run skip the case's probability maps."""
    images = list(read_manifest(vessels).image)
    manifest = write_manifest(tmp_path / "m.csv", [{"case_id": "v0", "image": images[0]}])
    out = tmp_path / "out"
    assert _predict("--model", resampling_ckpt, "--manifest", manifest, "--out", out) == 0
    assert _predict("--model", resampling_ckpt, "--manifest", manifest, "--out", out, "--probabilities") == 0
    assert (out / "probabilities" / "v0_vessel.nii.gz").is_file()
    _assert_same_geometry(out / "probabilities" / "v0_vessel.nii.gz", Path(images[0]), integer=False)
    capsys.readouterr()
    assert _predict("--model", resampling_ckpt, "--manifest", manifest, "--out", out, "--probabilities") == 0
    assert "predicted 0, skipped 1" in capsys.readouterr().out


# --- 4. probabilities, TTA, labels.json -------------------------------------------------------------------------

def _check_probabilities(mask_path: Path, prob_paths: list[Path], source: Path, spec: LabelSpec):
    """Float32 maps in [0, 1] with the source's geometry; the mask decodes to them thresholded at 0.5."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
    masks = spec.masks(label)
    for k, path in enumerate(prob_paths):
        _assert_same_geometry(path, source, integer=False)
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
        clear = np.abs(p - 0.5) > 1e-6  # float32 rounding may move a value across 0.5 only right at it
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(masks[k][clear], (p >= 0.5)[clear])
        assert 0 < masks[k].mean() < 1, "degenerate test: the mask is empty or full"


@pytest.mark.parametrize("kind", ["projection", "resampling"])
@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_have_the_input_geometry_and_match_the_label(vessels, realdata, checkpoints, tmp_path, kind,
                                                                   tta):
    """Synthetic volumes for the projection model, a real NIfTI and NRRD for the resampling one."""
    if kind == "projection":
        frame = read_manifest(vessels)
        sources = {c: Path(p) for c, p in zip(frame.case_id[:2], frame.image[:2])}
    else:
        sources = {c: realdata / REAL[c] for c in ("mr", "breast")}
    manifest = write_manifest(tmp_path / "m.csv", [{"case_id": c, "image": p} for c, p in sources.items()])
    out = tmp_path / "out"
    args = ["--model", checkpoints[kind], "--manifest", manifest, "--out", out, "--probabilities"]
    assert _predict(*args, *(["--tta"] if tta else [])) == 0
    spec = LabelSpec.from_dict(json.loads((out / "labels.json").read_text()))
    assert spec == LabelSpec(("vessel",), (1,), "index") and spec.to_dict() == json.loads(
        vessels.with_suffix(".json").read_text())
    expected = {f"{c}{_suffix(p)}" for c, p in sources.items()}
    expected |= {f"probabilities/{c}_vessel{_suffix(p)}" for c, p in sources.items()}
    assert _files(out) == expected | METADATA
    assert json.loads((out / "prediction.json").read_text())["tta"] is tta
    for case, source in sources.items():
        ext = _suffix(source)
        _check_probabilities(out / f"{case}{ext}", [out / "probabilities" / f"{case}_vessel{ext}"], source, spec)


def test_tta_changes_the_probabilities(vessels, projection_ckpt, tmp_path):
    image = read_manifest(vessels).image[1]
    outs = {}
    for tta in (False, True):
        out = tmp_path / f"tta_{tta}"
        assert _predict("--model", projection_ckpt, "--input", image, "--out", out, "--probabilities",
                        *(["--tta"] if tta else [])) == 0
        outs[tta] = nib.load(out / "probabilities" / f"{Path(image).name[:-7]}_vessel.nii.gz").get_fdata()
    assert not np.allclose(outs[False], outs[True], atol=1e-4)


# --- 5. multi-label ---------------------------------------------------------------------------------------------

def test_multilabel_bitmask_prediction_decodes_to_the_thresholded_probabilities(multilabel, tmp_path):
    manifest, checkpoint = multilabel
    out = tmp_path / "out"
    assert _predict("--model", checkpoint, "--manifest", manifest, "--out", out, "--probabilities") == 0
    spec = LabelSpec(("a", "b"), (1, 2), "bitmask")
    labels = json.loads((out / "labels.json").read_text())
    assert LabelSpec.from_dict(labels) == spec and labels["labels"] == {"0": "background", "1": "a", "2": "b", "3": "a+b"}
    overlap = 0
    for row in read_manifest(manifest).itertuples():
        mask = out / f"{row.case_id}.nii.gz"
        probs = [out / "probabilities" / f"{row.case_id}_{c}.nii.gz" for c in spec.classes]
        _check_probabilities(mask, probs, Path(row.image), spec)
        label = np.asarray(nib.load(mask).dataobj)
        assert set(np.unique(label)) <= {0, 1, 2, 3}
        overlap += int((label == 3).sum())
    assert overlap > 0  # both classes in one voxel: only a bitmask can say so


# --- 6. evaluate ------------------------------------------------------------------------------------------------

def _dice(pred: np.ndarray, true: np.ndarray) -> float:
    total = pred.sum() + true.sum()
    return float("nan") if total == 0 else 2.0 * (pred & true).sum() / total


@pytest.mark.parametrize("task", ["vessels", "multilabel"])
def test_evaluate_scores_the_prediction_folder(vessels, projection_ckpt, multilabel, tmp_path, task):
    manifest, checkpoint = (vessels, projection_ckpt) if task == "vessels" else multilabel
    out, scores = tmp_path / "pred", tmp_path / "scores"
    assert _predict("--model", checkpoint, "--manifest", manifest, "--out", out) == 0
    assert main(["evaluate", "--pred", str(out), "--manifest", str(manifest), "--out", str(scores)]) == 0
    frame = pd.read_csv(scores / "metrics.csv")
    spec = LabelSpec.from_dict(json.loads(manifest.with_suffix(".json").read_text()))
    cases = read_manifest(manifest)
    assert len(frame) == len(cases) * len(spec.classes)
    assert sorted(zip(frame.case_id, frame["class"])) == sorted((c, k) for c in cases.case_id for k in spec.classes)
    assert frame.error.isna().all()
    for row in cases.itertuples():
        pred = spec.masks(np.asarray(nib.load(out / f"{row.case_id}.nii.gz").dataobj))
        true = spec.masks(np.asarray(nib.load(row.label).dataobj))
        for k, name in enumerate(spec.classes):
            got = frame[(frame.case_id == row.case_id) & (frame["class"] == name)].dice.item()
            np.testing.assert_allclose(got, _dice(pred[k], true[k]), equal_nan=True)


# --- 7. sharding ------------------------------------------------------------------------------------------------

def test_torchrun_shards_cases_and_gathers_failures(vessels, resampling_ckpt, tmp_path):
    images = list(read_manifest(vessels).image)
    holes = tmp_path / "holes.nii.gz"
    volume = read_volume(images[3])
    array = volume.array.astype(np.float32)
    array[1, 1, 1] = np.nan
    write_volume(holes, array, volume.meta)
    # Two ranks take every other job: rank 0 gets v0, holes, v2; rank 1 gets missing, v1.
    rows = [{"case_id": "v0", "image": images[0]}, {"case_id": "missing", "image": tmp_path / "missing.nii.gz"},
            {"case_id": "holes", "image": holes}, {"case_id": "v1", "image": images[1]},
            {"case_id": "v2", "image": images[2]}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seg25d",
               "predict", "--model", str(resampling_ckpt), "--manifest", str(manifest), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace",
                            timeout=180)
    assert result.returncode != 0, result.stdout + result.stderr  # some cases failed
    # Rank 0 reports its own shard (2 predicted) and the failures of both.
    assert "predicted 2, skipped 0 (already done), failed 2" in result.stdout, result.stdout + result.stderr
    assert _files(out) == {"v0.nii.gz", "v1.nii.gz", "v2.nii.gz", "failures.csv"} | METADATA
    failures = pd.read_csv(out / "failures.csv")
    assert sorted(failures.case_id) == ["holes", "missing"]
    assert "NaN" in failures.set_index("case_id").reason["holes"]
    for case in ("v0", "v1", "v2"):
        source = images[int(case[1])]
        _assert_same_geometry(out / f"{case}.nii.gz", Path(source))
        np.testing.assert_array_equal(np.asarray(nib.load(out / f"{case}.nii.gz").dataobj).transpose(2, 1, 0),
                                      _independent_prediction(resampling_ckpt, Path(source)))
