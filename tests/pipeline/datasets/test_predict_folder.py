"""Your own data in three commands: import -> train -> predict a folder -> evaluate, for nnU-Net (two channels,
region labels), Decathlon (4D images) and plain folders; ensembles, largest-component post-processing, label
tables for viewers, and the shared real volumes through an nnU-Net layout with exact geometry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from seg25d.pipeline.checkpoint import load_checkpoint, save_checkpoint
from seg25d.pipeline.cli import main
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import LabelSpec, read_manifest
from seg25d.pipeline.postprocess import decide_largest_component, largest_component
from seg25d.pipeline.predict_inputs import jobs_from_paths

UNET3D = ["model.name='unet3d'", "model.options={depth=2, base_channels=4}"]


def _train(manifest: Path, out: Path, *sets) -> Path:
    args = ["train", "--out", str(out)]
    for s in [f"data.manifest='{manifest}'", "train.max_steps=2", "train.progress=false", "train.threads=1",
              "train.val_every=1", "train.checkpoint_every=1", "train.warmup_steps=1", "train.precision='fp32'",
              "loss.kind='dice'", *UNET3D, *sets]:
        args += ["--set", s]
    assert main(args) == 0
    return out


def _same_geometry(output: Path, source: Path):
    out, src = read_volume(output), read_volume(source)
    assert out.meta.shape == src.meta.shape
    np.testing.assert_allclose(out.meta.affine, src.meta.affine, atol=1e-5)


@pytest.fixture(scope="module")
def nnunet_run(tmp_path_factory, build):
    root = tmp_path_factory.mktemp("nnunet")
    source = build.nnunet(root / "raw", n=6, tests=2, regions=True)
    manifest = root / "manifest.csv"
    assert main(["dataset", "import", "--from", "nnunet", str(source), "--out", str(manifest)]) == 0
    return source, manifest, _train(manifest, root / "run")


def test_nnunet_import_train_predict_folder_evaluate(nnunet_run, tmp_path, capsys):
    source, manifest, run = nnunet_run
    payload = load_checkpoint(run / "best.pt")
    assert payload["model_config"]["in_channels"] == 2 and payload["plan"]["normalize"] == ["ct", "case_zscore"]
    assert set(payload["postprocessing"]["largest_component"]) <= {"whole", "core"}
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "best.pt"), "--input", str(source / "imagesTr"),
                 str(source / "imagesTs"), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == [f"ball_{i:03d}.nii.gz" for i in range(8)]  # channel files grouped, suffix dropped
    for i in range(8):
        split = "Tr" if i < 6 else "Ts"
        _same_geometry(out / f"ball_{i:03d}.nii.gz", source / f"images{split}" / f"ball_{i:03d}_0000.nii.gz")
        assert set(np.unique(read_volume(out / f"ball_{i:03d}.nii.gz").array)) <= {0, 1, 2, 3}  # bitmask values
    labels = json.loads((out / "labels.json").read_text())
    assert LabelSpec.from_dict(labels) == LabelSpec(("whole", "core"), (1, 2), "bitmask")
    assert labels["labels"] == {"0": "background", "1": "whole", "2": "core", "3": "whole+core"}
    table = [line.split() for line in (out / "labels.ctbl").read_text().splitlines() if not line.startswith("#")]
    assert [(int(v), name) for v, name, *_ in table] == [(0, "background"), (1, "whole"), (2, "core"), (3, "whole+core")]
    assert all(len(row) == 6 and all(0 <= int(x) <= 255 for x in row[2:]) for row in table)
    assert '"whole+core"' in (out / "labels_itksnap.txt").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--manifest", str(manifest), "--out", str(tmp_path / "eval")]) == 0
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert set(metrics.case_id) == set(read_manifest(manifest).dropna(subset=["label"]).case_id)


def test_ensemble_averages_probabilities(nnunet_run, tmp_path):
    source, _, run = nnunet_run
    maps = {}
    for name, models in {"best": ["best.pt"], "last": ["last.pt"], "both": ["best.pt", "last.pt"]}.items():
        out = tmp_path / name
        assert main(["predict", "--model", *[str(run / m) for m in models], "--input", str(source / "imagesTs"),
                     "--out", str(out), "--probabilities"]) == 0
        maps[name] = [nib.load(out / "probabilities" / f"ball_006_{c}.nii.gz").get_fdata() for c in ("whole", "core")]
    for k in range(2):
        np.testing.assert_allclose(maps["both"][k], (maps["best"][k] + maps["last"][k]) / 2, atol=1e-6)
    prediction = json.loads((tmp_path / "both" / "prediction.json").read_text())
    assert len(prediction["checkpoints"]) == 2


def test_largest_component_choice_and_auto_vote(nnunet_run, tmp_path, capsys):
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[5:8, 5:8, 5:8] = True  # 27 voxels
    kept = largest_component(mask)
    assert kept.sum() == 27 and kept[6, 6, 6] and not kept[1, 1, 1]
    truth = np.zeros((2, 10, 10, 10), bool)
    truth[0, 5:8, 5:8, 5:8] = True
    truth[1] = mask  # the second class really has two components
    decision = decide_largest_component([np.stack([mask, mask])], [truth], ["a", "b"])
    assert decision["largest_component"] == ["a"]
    # auto: a class is kept where most checkpoints chose it
    source, _, run = nnunet_run
    paths = []
    for i, chosen in enumerate((["core"], ["core", "whole"], [])):
        payload = load_checkpoint(run / "best.pt")
        payload["postprocessing"] = {**payload["postprocessing"], "largest_component": chosen}
        paths.append(save_checkpoint(tmp_path / f"m{i}.pt", payload))
    out = tmp_path / "auto"
    assert main(["predict", "--model", *map(str, paths), "--input", str(source / "imagesTs"), "--out", str(out),
                 "--largest-component", "auto"]) == 0
    assert json.loads((out / "prediction.json").read_text())["largest_component"] == ["core"]
    assert main(["predict", "--model", str(paths[0]), "--input", str(source / "imagesTs"), "--out", str(out),
                 "--largest-component", "liver"]) == 2
    assert "unknown class(es) liver" in capsys.readouterr().err


def test_predict_folder_missing_channel_is_one_line(nnunet_run, tmp_path, capsys):
    source, _, run = nnunet_run
    folder = tmp_path / "in"
    shutil.copytree(source / "imagesTs", folder)
    (folder / "ball_007_0001.nii.gz").unlink()
    assert main(["predict", "--model", str(run / "best.pt"), "--input", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
    assert len(err) == 1 and "ball_007_0001.nii.gz" in err[0] and "channel 1" in err[0]


@pytest.mark.parametrize("layout", ["msd", "folder"])
def test_msd_and_folder_three_commands(layout, tmp_path, build):
    if layout == "msd":
        source = build.msd(tmp_path / "raw", n=5, tests=1)
        imp = ["--from", "msd", str(source)]
        inputs = source / "imagesTr"
    else:
        source = build.folder(tmp_path / "raw", n=6)
        imp = ["--from", "folder", "--images", str(source / "images" / "*.nii.gz"), "--labels",
               str(source / "labels" / "*.nii.gz"), "--group-pattern", r"^(pat\d+)_", "--channels", "CT"]
        inputs = source / "images"
    manifest = tmp_path / "manifest.csv"
    assert main(["dataset", "import", *imp, "--out", str(manifest)]) == 0
    run = _train(manifest, tmp_path / "run", "loss.kind='ce_dice'")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "best.pt"), "--input", str(inputs), "--out", str(out),
                 "--largest-component", "all"]) == 0
    frame = read_manifest(manifest)
    for row in frame[frame.label.notna()].itertuples():
        _same_geometry(out / f"{row.case_id}.nii.gz", Path(row.label))
    assert main(["evaluate", "--pred", str(out), "--manifest", str(manifest), "--split", "val",
                 "--out", str(tmp_path / "eval")]) == 0
    assert len(pd.read_csv(tmp_path / "eval" / "metrics.csv")) >= 1
    assert main(["report", str(tmp_path / "eval")]) == 0  # draws the first channel of multi-modal images
    assert (tmp_path / "eval" / "report.html").is_file()


def _dicom_series(folder: Path, array: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> Path:
    """One .dcm per slice of a (D, H, W) array, axial, with the tags a series reader needs."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    uid = "1.2.826.0.1.3680043.2.1125.9.7"
    for k, plane in enumerate(array):
        img = sitk.GetImageFromArray(plane)
        img.SetSpacing(spacing[:2])
        for tag, value in {"0008|0060": "MR", "0020|000d": uid + ".1", "0020|000e": uid + ".2",
                           "0020|0013": str(k + 1), "0020|0032": f"1.5\\-2.0\\{k * spacing[2]:.6f}",
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": f"{spacing[1]}\\{spacing[0]}",
                           "0018|0050": str(spacing[2])}.items():
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(img)
    return folder


def test_input_discovery_rules(tmp_path):
    for name in ("a_0000.nii.gz", "b_0000.nrrd", "c_0001.nii.gz", "c_0002.nii.gz"):
        (tmp_path / "mixed" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "mixed" / name).write_bytes(b"")
    (tmp_path / "mixed" / "patient7").mkdir()
    (tmp_path / "mixed" / "patient7" / "IM0001").write_bytes(b"")
    jobs = {j.case_id: j for j in jobs_from_paths([tmp_path / "mixed"], channels=1)}
    # not every file is a _0000 file: each file is a case named by its stem; the subfolder is a DICOM series
    assert sorted(jobs) == ["a_0000", "b_0000", "c_0001", "c_0002", "patient7"]
    assert jobs["patient7"].name == "patient7.nii.gz" and jobs["patient7"].paths == [str(tmp_path / "mixed" / "patient7")]
    for path in (tmp_path / "mixed").glob("c_*"):
        path.unlink()
    jobs = {j.case_id: j for j in jobs_from_paths([tmp_path / "mixed"], channels=1)}
    assert sorted(jobs) == ["a", "b", "patient7"] and jobs["b"].name == "b.nrrd"  # nnU-Net single-channel names
    series = {j.case_id: j for j in jobs_from_paths([tmp_path / "mixed" / "patient7"], channels=1)}
    assert list(series) == ["patient7"]  # a folder of non-volume files is one series
    (tmp_path / "mixed" / "a_0001.nii.gz").write_bytes(b"")
    (tmp_path / "mixed" / "b_0001.nrrd").write_bytes(b"")
    jobs = {j.case_id: j for j in jobs_from_paths([tmp_path / "mixed"], channels=2)}
    assert [Path(p).name for p in jobs["a"].paths] == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_real_volumes_through_an_nnunet_layout_keep_their_geometry(realdata, tmp_path):
    folder = tmp_path / "Dataset002_Real"
    sources = {"mr_abdomen": ("nifti/mr_abdomen/example_mr_sm.nii.gz", "nifti/mr_abdomen/example_seg_mr.nii.gz"),
               "ct_abdomen": ("nifti/ct_abdomen/example_ct_sm.nii.gz", "nifti/ct_abdomen/example_seg.nii.gz"),
               "msd_spleen": ("nifti/msd_spleen/sub-spleen2_ct.nii.gz",
                              "nifti/msd_spleen/sub-spleen2_ct_seg-manual.nii.gz")}
    for case, (image, label) in sources.items():
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        shutil.copy(realdata / image, folder / "imagesTr" / f"{case}_0000.nii.gz")
        seg = nib.load(realdata / label)
        nib.save(nib.Nifti1Image((np.asanyarray(seg.dataobj) > 0).astype(np.uint8), seg.affine, seg.header),
                 folder / "labelsTr" / f"{case}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0,
                                                     "organ": 1}, "numTraining": 3, "file_ending": ".nii.gz"}))
    manifest = tmp_path / "manifest.csv"
    assert main(["dataset", "import", "--from", "nnunet", str(folder), "--out", str(manifest)]) == 0
    run = _train(manifest, tmp_path / "run", "train.max_steps=1")
    inputs = tmp_path / "inputs"
    shutil.copytree(folder / "imagesTr", inputs)
    shutil.copy(realdata / "nrrd/pyradiomics/breast1_image.nrrd", inputs / "breast1_0000.nrrd")
    mr = read_volume(realdata / sources["mr_abdomen"][0]).array
    series = _dicom_series(inputs / "scan7", mr[:6].astype(np.int16))  # a DICOM series in a subfolder
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "best.pt"), "--input", str(inputs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.endswith((".nii.gz", ".nrrd"))) == [
        "breast1.nrrd", "ct_abdomen.nii.gz", "mr_abdomen.nii.gz", "msd_spleen.nii.gz", "scan7.nii.gz"]
    for case in sources:
        _same_geometry(out / f"{case}.nii.gz", realdata / sources[case][0])
    _same_geometry(out / "breast1.nrrd", realdata / "nrrd/pyradiomics/breast1_image.nrrd")
    _same_geometry(out / "scan7.nii.gz", series)
