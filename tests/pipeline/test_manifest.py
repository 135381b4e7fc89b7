"""Manifests (CSV + class sidecar), LabelSpec encodings and ``seg25d manifest check``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from seg25d.pipeline.cli import main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import synthetic_meta, write_mask, write_volume
from seg25d.pipeline.manifest import (
    LabelSpec,
    check_manifest,
    geometry_problem,
    label_on_image_grid,
    label_value_problem,
    read_label_spec,
    read_manifest,
    sidecar_path,
    write_label_spec,
    write_manifest,
)

SHAPE = (6, 7, 8)
META = synthetic_meta(SHAPE, spacing=(2.0, 0.75, 0.75), origin=(-3.0, 4.0, 10.0))
INDEX_SPEC = LabelSpec(("liver", "spleen"), (1, 2))


# ----------------------------------------------------------------------------------------------------------------
# reading and writing the CSV


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_csv_folder(tmp_path, monkeypatch):
    write_text(tmp_path / "data" / "m.csv",
               "case_id,image,label,split,group\n"
               "a,images/a.nii.gz,labels/a.nii.gz,train,p1\n"
               " b ,../elsewhere/b.nrrd,,val,\n"
               f"c,{tmp_path / 'abs' / 'c.nii'},,test,p1\n")
    (tmp_path / "cwd").mkdir()  # the working folder differs from the CSV's folder
    monkeypatch.chdir(tmp_path / "cwd")
    frame = read_manifest(Path("..") / "data" / "m.csv")
    assert list(frame.columns) == ["case_id", "image", "label", "split", "group"]
    root = tmp_path.resolve()
    assert list(frame.case_id) == ["a", "b", "c"]  # whitespace stripped
    assert list(frame.image) == [str(root / "data/images/a.nii.gz"), str(root / "elsewhere/b.nrrd"),
                                 str(root / "abs/c.nii")]
    assert list(frame.label) == [str(root / "data/labels/a.nii.gz"), None, None]
    assert list(frame.split) == ["train", "val", "test"]
    assert list(frame.group) == ["p1", "b", "p1"]  # empty group = its own case


def test_optional_columns_may_be_absent(tmp_path):
    frame = read_manifest(write_text(tmp_path / "m.csv", "case_id,image\nx,x.nii.gz\n"))
    assert frame.label.tolist() == [None]
    assert frame.split.tolist() == [""]
    assert frame.group.tolist() == ["x"]


@pytest.mark.parametrize("as_frame", [False, True], ids=["dicts", "dataframe"])
def test_write_manifest_writes_relative_paths_and_round_trips(tmp_path, as_frame):
    rows = [
        {"case_id": "a", "image": str(tmp_path / "ds/images/a.nii.gz"), "label": str(tmp_path / "ds/labels/a.nii.gz"),
         "split": "train", "group": "p1"},
        {"case_id": "b", "image": str(tmp_path / "other/b.nrrd"), "label": None, "split": "test", "group": "p2"},
    ]
    path = tmp_path / "ds" / "manifest.csv"
    assert write_manifest(path, pd.DataFrame(rows) if as_frame else rows) == path
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    assert [r["image"] for r in raw] == ["images/a.nii.gz", os.path.join("..", "other", "b.nrrd")]
    assert [r["label"] for r in raw] == ["labels/a.nii.gz", ""]
    assert list(raw[0]) == ["case_id", "image", "label", "split", "group"]
    frame = read_manifest(path)
    root = tmp_path.resolve()
    assert frame.image.tolist() == [str(root / "ds/images/a.nii.gz"), str(root / "other/b.nrrd")]
    assert frame.label.tolist() == [str(root / "ds/labels/a.nii.gz"), None]
    assert frame.split.tolist() == ["train", "test"] and frame.group.tolist() == ["p1", "p2"]
    write_manifest(tmp_path / "copy" / "m2.csv", frame)  # what was read can be written elsewhere and read again
    again = read_manifest(tmp_path / "copy" / "m2.csv")
    pd.testing.assert_frame_equal(again, frame)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["manifest.csv"]  # no temporary files


@pytest.mark.parametrize("text, problem", [
    ("image,split\nx.nii.gz,train\n", "missing column(s) case_id"),
    ("case_id,label\na,x.nii.gz\n", "missing column(s) image"),
    ("case_id,image,label,split,site\na,x.nii.gz,,train,B\n", "unknown column(s) site"),
    ("case_id,image\na,x.nii.gz\nb,y.nii.gz\na,z.nii.gz\n", "duplicate case_id a"),
    ("case_id,image\na,x.nii.gz\n,y.nii.gz\n", "line 3: empty case_id"),
    ("case_id,image\na,\n", "empty image path"),
    ("case_id,image,split\na,x.nii.gz,training\n", "split 'training' is not one of train, val, test"),
    ("case_id,image,split\na,x.nii.gz,Train\n", "split 'Train'"),
    ("case_id,image,label,split\n", "no cases (the CSV has a header only)"),
    ("case_id,image\na,x.nii.gz\n../../evil,y.nii.gz\n", "line 3: case_id '../../evil' holds a path separator"),
    ("case_id,image\n/abs/evil,y.nii.gz\n", "line 2: case_id '/abs/evil' holds a path separator"),
    ("case_id,image\nsub\\evil,y.nii.gz\n", "line 2: case_id 'sub\\\\evil' holds a path separator"),
    ("case_id,image\n..,y.nii.gz\n", "line 2: case_id '..' is '.' or '..'"),
    ("case_id,image\n\"a\nb\",y.nii.gz\n", "line 2: case_id 'a\\nb' holds a control character"),
    ("case_id,image\n" + "x" * 201 + ",y.nii.gz\n", "is longer than 200 bytes"),
])
def test_invalid_manifest_raises_naming_the_csv(tmp_path, text, problem):
    path = write_text(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as excinfo:
        read_manifest(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_label_value_problem_reports_non_integer_values_alone():
    spec = LabelSpec(("liver",), (1,))
    assert label_value_problem(np.array([0.0, 1.0, 0.5, 0.5, 0.25]), spec) == \
        "label volume holds non-integer values 0.25, 0.5"
    assert label_value_problem(np.array([0, 1, 3, 7], np.uint8), spec) == \
        "label values [3, 7] outside the declared classes {'liver': 1} (index)"
    assert label_value_problem(np.array([0.0, 1.0]), spec) is None
    assert LabelSpec.infer([0.0, 0.5, 2.0]).values == (2,)  # non-integer values name no class


def test_label_on_image_grid_matches_simpleitk_nearest_resampling(tmp_path):
    """A label 5 mm off its image: refused with manifest check's message, or resampled like SimpleITK does."""
    from seg25d.pipeline.io import read_volume

    label = np.zeros(SHAPE, np.uint8)
    label[1:5, 2:6, 1:7] = 2
    label[2:4, 3:5, 2:4] = 1
    moved = synthetic_meta(SHAPE, spacing=(2.0, 0.75, 0.75), origin=(-1.5, 4.0, 10.0))  # 1.5 mm along R
    write_volume(tmp_path / "image.nii.gz", np.zeros(SHAPE, np.float32), META)
    write_mask(tmp_path / "label.nii.gz", label, moved)
    image, moved_label = read_volume(tmp_path / "image.nii.gz"), read_volume(tmp_path / "label.nii.gz")
    with pytest.raises(InputError) as excinfo:
        label_on_image_grid(moved_label, image.meta)
    problem = geometry_problem(moved_label.meta, image.meta)
    assert problem == "label geometry (spacing/origin/direction) differs from the image's"
    assert str(excinfo.value).startswith(f"{tmp_path / 'label.nii.gz'}: {problem} (data.resample_labels")
    resampled = label_on_image_grid(moved_label, image.meta, resample=True)
    expected = sitk.Resample(sitk.ReadImage(str(tmp_path / "label.nii.gz")),
                             sitk.ReadImage(str(tmp_path / "image.nii.gz")), sitk.Transform(),
                             sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(resampled, sitk.GetArrayFromImage(expected))
    assert resampled.dtype == label.dtype and 0 < (resampled > 0).sum() < (label > 0).sum()
    assert label_on_image_grid(image, image.meta) is image.array  # same grid: untouched


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "absent.csv")


# ----------------------------------------------------------------------------------------------------------------
# LabelSpec


def test_index_masks_and_encode_round_trip():
    spec = LabelSpec(("a", "b", "c"), (1, 2, 5))
    label = np.random.default_rng(0).choice([0, 1, 2, 5], size=SHAPE).astype(np.uint8)
    masks = spec.masks(label)
    assert masks.shape == (3, *SHAPE) and masks.dtype == bool
    for k, v in enumerate((1, 2, 5)):
        np.testing.assert_array_equal(masks[k], label == v)
    assert not (masks.sum(axis=0) > 1).any()
    encoded = spec.encode(masks)
    assert encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded, label)
    assert spec.invalid_values(label) == []
    assert spec.invalid_values(np.array([0, 1, 3, 5, 7])) == [3, 7]
    assert not spec.multilabel


def test_index_encode_later_class_wins_on_overlap():
    spec = LabelSpec(("a", "b"), (1, 2))
    masks = np.zeros((2, 1, 1, 3), bool)
    masks[0, 0, 0, :2] = True
    masks[1, 0, 0, 1:] = True
    np.testing.assert_array_equal(spec.encode(masks)[0, 0], [1, 2, 2])


def test_bitmask_overlapping_round_trip():
    spec = LabelSpec(("large_bowel", "small_bowel", "stomach"), (1, 2, 4), encoding="bitmask")
    assert spec.multilabel
    rng = np.random.default_rng(1)
    masks = rng.random((3, *SHAPE)) < 0.4
    assert (masks.sum(axis=0) >= 2).any()  # overlaps present
    label = spec.encode(masks)
    np.testing.assert_array_equal(label, masks[0] * 1 + masks[1] * 2 + masks[2] * 4)  # hand-worked sum of bits
    np.testing.assert_array_equal(spec.masks(label), masks)
    assert spec.invalid_values(label) == []
    assert spec.invalid_values(np.array([0, 3, 7, 8, 9, -1])) == [-1, 8, 9]
    sparse = LabelSpec(("a", "b", "c"), (1, 4, 8), encoding="bitmask")  # bit 2 unused: 2, 3, 6 hold an unknown bit
    assert sparse.invalid_values(np.array([0, 1, 2, 3, 5, 6, 12, 13, 16])) == [2, 3, 6, 16]


def test_bitmask_with_high_bits_uses_a_wide_dtype():
    spec = LabelSpec(tuple("abcdefghi"), tuple(2 ** k for k in range(9)), encoding="bitmask")
    masks = np.zeros((9, 2, 2, 2), bool)
    masks[:, 0, 0, 0] = True
    masks[8, 1, 1, 1] = True
    label = spec.encode(masks)
    assert label[0, 0, 0] == 511 and label[1, 1, 1] == 256
    np.testing.assert_array_equal(spec.masks(label), masks)


@pytest.mark.parametrize("classes, values, encoding", [
    (("a", "b"), (1, 3), "bitmask"),  # 3 is not a power of two
    (("a", "b", "c"), (1, 2, 6), "bitmask"),
    (("a", "b"), (1, 1), "index"),  # duplicate value
    (("a", "a"), (1, 2), "index"),  # duplicate name
    (("a",), (0,), "index"),  # 0 is background
    (("a",), (0,), "bitmask"),
    (("a",), (-2,), "index"),
    (("a", "b"), (1,), "index"),  # lengths differ
    ((), (), "index"),
    (("a",), (1,), "onehot"),
])
def test_label_spec_validation(classes, values, encoding):
    with pytest.raises(ValueError):
        LabelSpec(classes, values, encoding)


def test_sidecar_round_trip(tmp_path):
    manifest = tmp_path / "set" / "manifest.csv"
    assert read_label_spec(manifest) is None
    spec = LabelSpec(["large_bowel", "small_bowel", "stomach"], [1, 2, 4], "bitmask")
    path = write_label_spec(manifest, spec)
    assert path == tmp_path / "set" / "manifest.json" == sidecar_path(manifest)
    assert json.loads(path.read_text()) == {"classes": ["large_bowel", "small_bowel", "stomach"], "values": [1, 2, 4],
                                            "encoding": "bitmask"}
    back = read_label_spec(manifest)
    assert back == spec and back.classes == ("large_bowel", "small_bowel", "stomach")
    assert LabelSpec.from_dict({"classes": ["v"], "values": [1]}) == LabelSpec(("v",), (1,), "index")


@pytest.mark.parametrize("content", [
    '{"classes": ["a", "b"], "values": [1, 3], "encoding": "bitmask"}',
    '{"classes": ["a"]}',
    '{"classes": ["a"], "values": [1]',  # broken JSON
])
def test_invalid_sidecar_raises_naming_it(tmp_path, content):
    write_text(tmp_path / "m.json", content)
    with pytest.raises(InputError) as excinfo:
        read_label_spec(tmp_path / "m.csv")
    assert str(excinfo.value).startswith(f"{tmp_path / 'm.json'}: ")


@pytest.mark.parametrize("values, classes, numbers", [
    ([0, 1], ("foreground",), (1,)),
    ([1, 1, 0], ("foreground",), (1,)),
    ([], ("foreground",), (1,)),
    (np.array([0, 5, 2, 5], np.uint8), ("class_2", "class_5"), (2, 5)),
    ([0, 1, 2], ("class_1", "class_2"), (1, 2)),
])
def test_label_spec_infer(values, classes, numbers):
    spec = LabelSpec.infer(values)
    assert spec.classes == classes and spec.values == numbers and spec.encoding == "index"


# ----------------------------------------------------------------------------------------------------------------
# manifest check on a small dataset


def make_dataset(root: Path, cases=("c0", "c1", "c2"), spec: LabelSpec | None = INDEX_SPEC) -> Path:
    rng = np.random.default_rng(2)
    rows = []
    for i, case in enumerate(cases):
        image = rng.normal(size=SHAPE).astype(np.float32)
        label = np.zeros(SHAPE, np.uint8)
        label[1:4, 2:5, 2:6] = 1
        label[4:, :2, :3] = 2
        write_volume(root / "images" / f"{case}.nii.gz", image, META)
        write_mask(root / "labels" / f"{case}.nii.gz", label, META)
        rows.append({"case_id": case, "image": str(root / "images" / f"{case}.nii.gz"),
                     "label": str(root / "labels" / f"{case}.nii.gz"), "split": ("train", "val", "test")[i % 3]})
    manifest = write_manifest(root / "manifest.csv", rows)
    if spec is not None:
        write_label_spec(manifest, spec)
    return manifest


def run_check(capsys, *argv) -> tuple[int, str]:
    code = main(["manifest", "check", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_good_dataset(tmp_path, capsys):
    manifest = make_dataset(tmp_path)
    code, output = run_check(capsys, manifest)
    assert code == 0, output
    assert "3 case(s), no problems" in output
    header = next(line for line in output.splitlines() if "case_id" in line)
    for column in ("split", "shape", "spacing_mm", "classes", "status"):
        assert column in header
    for case in ("c0", "c1", "c2"):
        row = next(line for line in output.splitlines() if line.split() and line.split()[0] == case)
        assert "6x7x8" in row and "2x0.75x0.75" in row and "liver,spleen" in row and row.split()[-1] == "ok"
    assert "note:" not in output  # the sidecar exists
    table, problems = check_manifest(manifest)
    assert problems == [] and table.status.tolist() == ["ok"] * 3


def _image(root, case="c1"):
    return root / "images" / f"{case}.nii.gz"


def _label(root, case="c1"):
    return root / "labels" / f"{case}.nii.gz"


def _missing(root):
    _image(root).unlink()
    return _image(root), "not found"


def _corrupt(root):
    _image(root).write_bytes(np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return _image(root), "cannot read"


def _label_size(root):
    write_mask(_label(root), np.zeros((6, 7, 9), np.uint8), synthetic_meta((6, 7, 9), spacing=(2.0, 0.75, 0.75)))
    return _label(root), "differs from image shape"


def _label_geometry(root):
    shifted = synthetic_meta(SHAPE, spacing=(2.0, 0.75, 0.75), origin=(-3.0, 4.0, 12.5))  # same shape, moved 2.5 mm
    write_mask(_label(root), np.ones(SHAPE, np.uint8), shifted)
    return _label(root), "geometry"


def _label_values(root):
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, :4] = [1, 2, 3, 7]
    write_mask(_label(root), label, META)
    return _label(root), "label values [3, 7] outside the declared classes"


def _nan(root):
    image = np.zeros(SHAPE, np.float32)
    image[2, 3, 4] = np.nan
    write_volume(_image(root), image, META)
    return _image(root), "1 voxels are NaN"


def _two_d(root):
    nib.save(nib.Nifti1Image(np.zeros((8, 7), np.float32), np.eye(4)), str(_image(root)))
    return _image(root), "2D"


def _four_d(root):
    nib.save(nib.Nifti1Image(np.zeros((8, 7, 6, 3), np.float32), np.eye(4)), str(_image(root)))
    return _image(root), "4D"


@pytest.mark.parametrize("break_case", [_missing, _corrupt, _label_size, _label_geometry, _label_values, _nan, _two_d,
                                        _four_d], ids=lambda f: f.__name__.strip("_"))
def test_check_reports_each_problem_in_one_line(tmp_path, capsys, break_case):
    manifest = make_dataset(tmp_path)
    bad_file, words = break_case(tmp_path)
    code, output = run_check(capsys, manifest)
    assert code == 1, output
    assert "Traceback" not in output
    assert "1 problem(s):" in output
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(str(bad_file.resolve()))]
    assert len(lines) == 1, output
    assert words in lines[0], lines[0]
    table, problems = check_manifest(manifest)
    assert problems == [lines[0]]
    assert table.set_index("case_id").status.to_dict() == {"c0": "ok", "c1": "problem", "c2": "ok"}


def test_check_without_sidecar_infers_classes(tmp_path, capsys):
    manifest = make_dataset(tmp_path, spec=None)
    code, output = run_check(capsys, manifest)
    assert code == 0, output
    assert "note: no class sidecar" in output
    assert "class_1,class_2" in output
    code, output = run_check(capsys, manifest, "--classes", "liver=1")  # declares fewer classes than present
    assert code == 1 and "label values [2] outside the declared classes" in output
    code, output = run_check(capsys, manifest, "--classes", "liver=1", "spleen=2")
    assert code == 0, output


@pytest.mark.parametrize("argv_tail, words", [
    (["--classes", "liver"], "--classes: takes NAME=VALUE"),
    (["--classes", "liver=one"], "--classes: takes NAME=VALUE"),
])
def test_check_bad_classes_option(tmp_path, capsys, argv_tail, words):
    manifest = make_dataset(tmp_path)
    code, output = run_check(capsys, manifest, *argv_tail)
    assert code == 2 and words in output and "Traceback" not in output


def test_check_invalid_csv_exits_2_naming_it(tmp_path, capsys):
    path = write_text(tmp_path / "m.csv", "case_id,image,extra\na,x.nii.gz,1\n")
    code, output = run_check(capsys, path)
    assert code == 2
    assert f"error: {path}: unknown column(s) extra" in output
    assert "Traceback" not in output


REAL_ROWS = [
    ("mr", "nifti/mr_abdomen/example_mr_sm.nii.gz", "nifti/mr_abdomen/example_seg_mr.nii.gz", "20x91x117"),
    ("ct", "nifti/ct_abdomen/example_ct_sm.nii.gz", "nifti/ct_abdomen/example_seg.nii.gz", "30x101x122"),
    ("spleen", "nifti/msd_spleen/sub-spleen2_ct.nii.gz", "nifti/msd_spleen/sub-spleen2_ct_seg-manual.nii.gz",
     "26x166x164"),
    ("brain1", "nrrd/pyradiomics/brain1_image.nrrd", "nrrd/pyradiomics/brain1_label.nrrd", "25x256x256"),
    ("breast1", "nrrd/pyradiomics/breast1_image.nrrd", "nrrd/pyradiomics/breast1_label.nrrd", "21x120x45"),
]


def test_check_real_data(realdata, tmp_path, capsys):
    rows = [{"case_id": case, "image": str(realdata / image), "label": str(realdata / label), "split": "test"}
            for case, image, label, _ in REAL_ROWS]
    manifest = write_manifest(tmp_path / "real.csv", rows)
    assert not Path(pd.read_csv(manifest).image[0]).is_absolute()  # relative to tmp_path, resolved on read
    code, output = run_check(capsys, manifest)
    assert code == 0, output
    assert "5 case(s), no problems" in output
    for case, _, _, shape in REAL_ROWS:
        row = next(line for line in output.splitlines() if line.split() and line.split()[0] == case)
        assert shape in row, row
    # a real label paired with another case's image is caught
    rows[0]["label"] = str(realdata / REAL_ROWS[1][2])
    write_manifest(manifest, rows)
    code, output = run_check(capsys, manifest)
    assert code == 1 and "differs from image shape" in output


# --- assign_splits / seg25d manifest split ----------------------------------------------------------------------

def _grouped_manifest(tmp_path, groups=8, per_group=3):
    from seg25d.pipeline.manifest import LabelSpec, write_label_spec, write_manifest

    rows = [{"case_id": f"g{g}_c{c}", "image": str(tmp_path / f"g{g}_c{c}.nii.gz"), "label": "", "split": "train",
             "group": f"g{g}"} for g in range(groups) for c in range(per_group)]
    path = tmp_path / "all.csv"
    write_manifest(path, rows)
    write_label_spec(path, LabelSpec(("a", "b"), (1, 2), "bitmask"))
    return path


def test_assign_splits_by_group(tmp_path):
    from seg25d.pipeline.manifest import assign_splits, read_label_spec

    source = _grouped_manifest(tmp_path)
    frame = assign_splits(source, tmp_path / "split.csv", val=0.15, test=0.25, seed=0)
    assert set(frame.split) == {"train", "val", "test"}
    assert (frame.groupby("group").split.nunique() == 1).all()  # no group straddles two splits
    shares = frame.split.value_counts(normalize=True)
    assert 0.2 <= shares["test"] <= 0.4 and 0.1 <= shares["val"] <= 0.3
    written = read_manifest(tmp_path / "split.csv")
    assert list(written.split) == list(frame.split)
    assert read_label_spec(tmp_path / "split.csv") == read_label_spec(source)
    again = assign_splits(source, tmp_path / "again.csv", val=0.15, test=0.25, seed=0)
    assert list(again.split) == list(frame.split)  # seeded
    other = assign_splits(source, tmp_path / "other.csv", val=0.15, test=0.25, seed=1)
    assert list(other.split) != list(frame.split)


def test_assign_splits_needs_a_training_group(tmp_path, capsys):
    from seg25d.pipeline.cli import main as cli_main

    source = _grouped_manifest(tmp_path, groups=2, per_group=1)
    assert cli_main(["manifest", "split", str(source), "--out", str(tmp_path / "s.csv"), "--val", "0.3",
                     "--test", "0.3"]) == 2
    assert "cannot fill the requested splits" in capsys.readouterr().err
    source = _grouped_manifest(tmp_path, groups=3, per_group=1)
    assert cli_main(["manifest", "split", str(source), "--out", str(tmp_path / "s.csv"), "--val", "0.3",
                     "--test", "0.3"]) == 0
    assert "wrote" in capsys.readouterr().out
