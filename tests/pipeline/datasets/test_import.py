"""``seg25d dataset import`` for nnU-Net, Decathlon and plain-folder layouts: manifests, classes, channels,
folds, region labels as bitmasks, and one clear line for each broken layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from seg25d.pipeline.cli import main
from seg25d.pipeline.data import group_folds
from seg25d.pipeline.images import image_paths, read_image
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import read_label_spec, read_manifest


def _import(*args) -> int:
    return main(["dataset", "import", *map(str, args)])


def _error(capsys) -> str:
    """The one error line of the last command (progress bars aside)."""
    lines = [l for l in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error:" in l]
    assert len(lines) == 1, lines
    return lines[0]


def test_nnunet_regions_become_bitmasks(tmp_path, build):
    source = build.nnunet(tmp_path / "raw", n=6, tests=2, regions=True)
    out = tmp_path / "m" / "manifest.csv"
    assert _import("--from", "nnunet", source, "--out", out) == 0
    frame = read_manifest(out)
    assert list(pd.read_csv(out).columns) == ["case_id", "image_0", "image_1", "label", "split", "group"]
    assert len(frame) == 8 and (frame.split == "test").sum() == 2 and (frame.split == "val").sum() >= 1
    spec = read_label_spec(out)
    assert spec.classes == ("whole", "core") and spec.encoding == "bitmask" and spec.values == (1, 2)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["channels"] == ["CT", "T2"] and sidecar["regions"] == {"whole": [1, 2], "core": [2]}
    for row in frame[frame.label.notna()].itertuples():
        original = read_volume(source / "labelsTr" / f"{row.case_id}.nii.gz")
        converted = read_volume(row.label)
        assert np.allclose(converted.meta.affine, original.meta.affine)
        whole, core = spec.masks(converted.array)
        np.testing.assert_array_equal(whole, original.array > 0)
        np.testing.assert_array_equal(core, original.array == 2)
        image = read_image(image_paths(row))
        assert image.array.shape == (2, 16, 16, 16)
        np.testing.assert_array_equal(image.array[1], read_volume(source / "imagesTr" / f"{row.case_id}_0001.nii.gz").array)
    assert main(["manifest", "check", str(out)]) == 0  # two channels as the sidecar declares


def test_folds_are_seeded_group_folds(tmp_path, build):
    source = build.nnunet(tmp_path / "raw", n=6, tests=0, regions=False)
    out = tmp_path / "manifest.csv"
    assert _import("--from", "nnunet", source, "--out", out, "--seed", 3) == 0
    folds = json.loads((tmp_path / "manifest_folds.json").read_text())
    ids = sorted(read_manifest(out).case_id)
    assign = group_folds(ids, 5, 3)
    assert folds["seed"] == 3 and len(folds["folds"]) == 5
    for k, fold in enumerate(folds["folds"]):
        assert fold["val"] == sorted(c for c in ids if assign[c] == k)
        assert sorted(fold["train"] + fold["val"]) == ids
    frame = read_manifest(out)
    assert sorted(frame[frame.split == "val"].case_id) == folds["folds"][0]["val"]
    assert read_label_spec(out).encoding == "index"


def test_msd_4d_images(tmp_path, build):
    source = build.msd(tmp_path / "raw", n=5, tests=1)
    out = tmp_path / "manifest.csv"
    assert _import("--from", "msd", source, "--out", out) == 0
    frame = read_manifest(out)
    assert list(pd.read_csv(out).columns)[:3] == ["case_id", "image", "label"]
    assert read_label_spec(out).classes == ("shell", "core")
    row = frame.iloc[0]
    image = read_image(image_paths(row))
    ct, mr, _ = build.case_arrays(int(row.case_id.split("_")[1]))
    np.testing.assert_allclose(image.array[0], ct.transpose(2, 1, 0))
    np.testing.assert_allclose(image.array[1], mr.transpose(2, 1, 0))
    assert image.meta.shape == (16, 16, 16) and image.meta.spacing == (2.0, 1.0, 1.0)
    assert main(["manifest", "check", str(out)]) == 0


def test_folder_pairs_by_stem_and_groups_patients(tmp_path, build):
    root = build.folder(tmp_path / "data", n=6)
    out = tmp_path / "manifest.csv"
    assert _import("--from", "folder", "--images", root / "images" / "*.nii.gz", "--labels",
                   root / "labels" / "*.nii.gz", "--out", out, "--group-pattern", r"^(pat\d+)_", "--folds", 3) == 0
    frame = read_manifest(out)
    assert sorted(frame.group.unique()) == ["pat0", "pat1", "pat2"]
    assert frame.groupby("group").split.nunique().max() == 1  # a patient never straddles folds
    assert read_label_spec(out).values == (1, 2)
    assert all(r.label.endswith(f"labels/{r.case_id}.nii.gz") for r in frame.itertuples())


def _break(kind, source, tmp_path, build):
    """Damage a good layout; returns the file the error must name."""
    if kind == "missing label":
        (source / "labelsTr" / "ball_002.nii.gz").unlink()
        return "ball_002.nii.gz"
    if kind == "missing channel":
        (source / "imagesTr" / "ball_003_0001.nii.gz").unlink()
        return "ball_003_0001.nii.gz"
    if kind == "undeclared value":
        _, _, label = build.case_arrays(1)
        label[0, 0, 0] = 7
        build.save(source / "labelsTr" / "ball_001.nii.gz", label)
        return "ball_001.nii.gz"
    if kind == "channel shape":
        build.save(source / "imagesTr" / "ball_004_0001.nii.gz", np.zeros((16, 16, 15), np.float32))
        return "ball_004_0001.nii.gz"
    if kind == "channel affine":
        ct, mr, _ = build.case_arrays(4)
        build.save(source / "imagesTr" / "ball_004_0001.nii.gz", mr, np.diag([1.0, 1.0, 3.0, 1.0]))
        return "ball_004_0001.nii.gz"
    if kind == "label affine":
        _, _, label = build.case_arrays(5)
        build.save(source / "labelsTr" / "ball_005.nii.gz", label, np.diag([1.0, 1.0, 2.5, 1.0]))
        return "ball_005.nii.gz"
    if kind == "label shape":
        build.save(source / "labelsTr" / "ball_005.nii.gz", np.zeros((16, 15, 16), np.uint8))
        return "ball_005.nii.gz"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing label", "missing channel", "undeclared value", "channel shape",
                                  "channel affine", "label affine", "label shape"])
def test_bad_nnunet_layout_one_line_nothing_written(kind, tmp_path, build, capsys):
    source = build.nnunet(tmp_path / "raw", n=6, tests=0, regions=kind != "undeclared value")
    named = _break(kind, source, tmp_path, build)
    out = tmp_path / "out" / "manifest.csv"
    assert _import("--from", "nnunet", source, "--out", out) == 2
    err = _error(capsys)
    assert named in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_folder_and_msd_layouts(tmp_path, build, capsys):
    root = build.folder(tmp_path / "data", n=4)
    (root / "labels" / "pat1_scan0.nii.gz").unlink()
    out = tmp_path / "out" / "manifest.csv"
    assert _import("--from", "folder", "--images", root / "images" / "*.nii.gz", "--labels",
                   root / "labels" / "*.nii.gz", "--out", out) == 2
    err = _error(capsys)
    assert "pat1_scan0.nii.gz" in err and "no label" in err
    task = build.msd(tmp_path / "raw", n=3, tests=0)
    ct, _, label = build.case_arrays(1)
    build.save(task / "imagesTr" / "ball_1.nii.gz", ct)  # one channel where dataset.json declares two
    assert _import("--from", "msd", task, "--out", out) == 2
    err = _error(capsys)
    assert "ball_1.nii.gz" in err and "channel" in err
    assert not out.exists()


def test_manifest_channel_columns(tmp_path):
    from seg25d.pipeline.errors import InputError
    from seg25d.pipeline.manifest import write_manifest

    rows = [{"case_id": "a", "image_0": str(tmp_path / "a0.nii.gz"), "image_1": str(tmp_path / "a1.nii.gz"),
             "label": "", "split": "test"}]
    path = write_manifest(tmp_path / "m.csv", rows)
    assert pd.read_csv(path).columns.tolist() == ["case_id", "image_0", "image_1", "label", "split"]
    frame = read_manifest(path)
    assert frame.image[0] == str(tmp_path / "a0.nii.gz")  # image is the first channel
    assert image_paths(next(frame.itertuples())) == [str(tmp_path / "a0.nii.gz"), str(tmp_path / "a1.nii.gz")]
    assert image_paths(frame.iloc[0]) == image_paths(next(frame.itertuples()))
    (tmp_path / "gap.csv").write_text("case_id,image_0,image_2\na,x.nii.gz,y.nii.gz\n")
    with pytest.raises(InputError, match="image_0,image_1"):
        read_manifest(tmp_path / "gap.csv")
    (tmp_path / "empty.csv").write_text("case_id,image_0,image_1\na,x.nii.gz,\n")
    with pytest.raises(InputError, match=r"line 2 \(a\): empty path"):
        read_manifest(tmp_path / "empty.csv")
