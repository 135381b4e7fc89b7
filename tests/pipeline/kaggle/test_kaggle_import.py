"""The UW-Madison GI Tract layout: parsing, loading case-days, `seg25d kaggle import`."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from seg25d.pipeline.cli import main as cli_main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.kaggle.layout import (
    CLASSES,
    SliceId,
    import_kaggle,
    load_case_day,
    parse_slice_filename,
    parse_slice_id,
    read_train_csv,
    scan_case_days,
)
from seg25d.pipeline.kaggle.rle import rle_encode
from seg25d.pipeline.manifest import read_label_spec, read_manifest

# ---------------------------------------------------------------------------------------------------------------
# tiny layouts


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(pixels, dtype=np.uint16)), str(path))


def scans_dir(root: Path, case: int, day: int, split: str = "train") -> Path:
    return root / split / f"case{case}" / f"case{case}_day{day}" / "scans"


def make_scan(root: Path, case: int, day: int, depth: int, height: int, width: int, split: str = "train",
              pixel: str = "1.50", seed: int = 0) -> np.ndarray:
    """Write slices 1..depth as 16-bit PNGs; returns the (D, H, W) pixel stack."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 60000, size=(depth, height, width)).astype(np.uint16)
    for k in range(depth):
        write_png(scans_dir(root, case, day, split) / f"slice_{k + 1:04d}_{width}_{height}_{pixel}_{pixel}.png",
                  stack[k])
    return stack


def rows_from_masks(case: int, day: int, masks: np.ndarray) -> list[dict]:
    """train.csv rows (three per slice) from a (3, D, H, W) stack, slices numbered from 1."""
    return [{"id": f"case{case}_day{day}_slice_{k + 1:04d}", "class": cls, "segmentation": rle_encode(masks[c, k])}
            for k in range(masks.shape[1]) for c, cls in enumerate(CLASSES)]


def write_rows(path: Path, rows: list[dict], columns=("id", "class", "segmentation")) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def random_masks(depth: int, height: int, width: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((3, depth, height, width)) < 0.3


def tiny_dataset(root: Path, depth: int = 3, height: int = 5, width: int = 7) -> tuple[np.ndarray, np.ndarray]:
    stack = make_scan(root, 1, 0, depth, height, width)
    masks = random_masks(depth, height, width)
    write_rows(root / "train.csv", rows_from_masks(1, 0, masks))
    return stack, masks


# ---------------------------------------------------------------------------------------------------------------
# names


def test_parse_slice_id_and_filename():
    sid = parse_slice_id("case123_day20_slice_0065")
    assert sid == SliceId(123, 20, 65)
    assert (sid.case_day, sid.group, str(sid)) == ("case123_day20", "case123", "case123_day20_slice_0065")
    sf = parse_slice_filename("/x/slice_0065_310_266_1.63_1.50.png")
    assert (sf.slice, sf.width, sf.height, sf.pixel_width, sf.pixel_height) == (65, 310, 266, 1.63, 1.50)
    assert sf.shape == (266, 310)  # (H, W): the name lists width first


@pytest.mark.parametrize("bad", ["case1_slice_0001", "case1_day2_slice_", "day1_case2_slice_3", "case1_day2_slice_3x"])
def test_bad_id_is_rejected(bad):
    with pytest.raises(InputError, match="case\\{N\\}_day\\{M\\}_slice"):
        parse_slice_id(bad)


@pytest.mark.parametrize("bad", ["slice_0001_266_266_1.50.png", "slice_0001_266_266_1.50_1.50.jpg",
                                 "scan_0001_266_266_1.50_1.50.png", "slice_0001_0_266_1.50_1.50.png"])
def test_bad_slice_filename_is_rejected(bad):
    with pytest.raises(InputError) as info:
        parse_slice_filename(Path("/data") / bad)
    assert bad in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# real data


def test_real_case_day_loads(realdata):
    root = realdata / "gi_kaggle_mr"
    (case_day,) = scan_case_days(root)
    assert case_day.name == "case900_day0" and case_day.group == "case900"
    files = sorted((root / "train/case900/case900_day0/scans").glob("*.png"))
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(files[0])))
    volume = load_case_day(case_day, read_train_csv(root / "train.csv"))
    assert volume.image.shape == (len(files),) + first.shape == (20, 91, 117)
    assert volume.image.dtype == np.float32 and volume.spacing == (3.0, 3.0, 3.0)
    assert volume.slice_numbers == tuple(range(1, 21))
    np.testing.assert_array_equal(volume.image[0], first)
    assert volume.mask.shape == (3, 20, 91, 117)
    assert dict(zip(CLASSES, volume.mask.sum(axis=(1, 2, 3)).tolist())) == {
        "large_bowel": 1683, "small_bowel": 864, "stomach": 4221}


def test_real_import_reproduces_source(realdata, tmp_path):
    root = realdata / "gi_kaggle_mr"
    manifest = import_kaggle(root, tmp_path / "out")
    frame = read_manifest(manifest)
    assert list(frame["case_id"]) == ["case900_day0"]
    assert list(frame["group"]) == ["case900"] and list(frame["split"]) == ["train"]
    spec = read_label_spec(manifest)
    assert spec.classes == CLASSES and spec.values == (1, 2, 4) and spec.encoding == "bitmask"

    image = read_volume(frame["image"].iat[0])
    label = read_volume(frame["label"].iat[0])
    assert image.array.shape == label.array.shape == (20, 91, 117)
    assert image.meta.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert label.meta.spacing == pytest.approx((3.0, 3.0, 3.0))
    masks = spec.masks(label.array)
    assert masks.sum(axis=(1, 2, 3)).tolist() == [1683, 864, 4221]

    # Independent reference: the NIfTI the layout was derived from (array[k, j, i] = nifti[i, j, k]).
    seg = np.asarray(nib.load(realdata / "nifti/mr_abdomen/example_seg_mr.nii.gz").dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(masks[2], seg == 6)
    np.testing.assert_array_equal(masks[1], np.isin(seg, [13, 14]))
    np.testing.assert_array_equal(masks[0], seg == 15)
    src = np.asarray(nib.load(realdata / "nifti/mr_abdomen/example_mr_sm.nii.gz").dataobj).transpose(2, 1, 0)
    assert np.corrcoef(src.ravel().astype(float), image.array.ravel().astype(float))[0, 1] > 0.9999


# ---------------------------------------------------------------------------------------------------------------
# tiny layouts: import


def test_tiny_import_round_trip(tmp_path):
    stack, masks = tiny_dataset(tmp_path, depth=3, height=5, width=7)  # non-square: catches H/W swaps
    masks[:, 1, 2, 3] = True  # all three organs overlap on one voxel -> bitmask 7
    make_scan(tmp_path, 2, 4, 2, 6, 4, pixel="0.80", seed=3)
    write_rows(tmp_path / "train.csv",
               rows_from_masks(1, 0, masks) + rows_from_masks(2, 4, np.zeros((3, 2, 6, 4), dtype=bool)))
    frame = read_manifest(import_kaggle(tmp_path, tmp_path / "out"))
    assert list(frame["case_id"]) == ["case1_day0", "case2_day4"]
    assert list(frame["group"]) == ["case1", "case2"]
    image = read_volume(frame["image"].iat[0])
    np.testing.assert_array_equal(image.array, stack)
    assert image.meta.spacing == pytest.approx((3.0, 1.5, 1.5))
    label = read_volume(frame["label"].iat[0]).array
    expected = masks[0] * 1 + masks[1] * 2 + masks[2] * 4
    np.testing.assert_array_equal(label, expected)
    assert label[1, 2, 3] == 7
    other = read_volume(frame["image"].iat[1])
    assert other.array.shape == (2, 6, 4) and other.meta.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert not read_volume(frame["label"].iat[1]).array.any()


def test_test_split_without_csv_imports_images_only(tmp_path):
    make_scan(tmp_path, 5, 1, 2, 4, 3, split="test")
    frame = read_manifest(import_kaggle(tmp_path, tmp_path / "out", split="test"))
    assert list(frame["split"]) == ["test"] and frame["label"].iat[0] is None
    assert read_volume(frame["image"].iat[0]).array.shape == (2, 4, 3)
    assert not (tmp_path / "out" / "labels").exists()
    # The competition's test.csv lists ids without a segmentation column: still images only.
    write_rows(tmp_path / "test.csv", [{"id": "case5_day1_slice_0001", "class": "stomach", "predicted": ""}],
               columns=("id", "class", "predicted"))
    frame = read_manifest(import_kaggle(tmp_path, tmp_path / "out2", split="test"))
    assert frame["label"].iat[0] is None


def test_cli_import(tmp_path, capsys):
    tiny_dataset(tmp_path)
    assert cli_main(["kaggle", "import", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert "imported 1 case-days" in capsys.readouterr().out
    assert (tmp_path / "o" / "manifest.json").is_file()
    assert cli_main(["kaggle", "import", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "no 'train' folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# tiny layouts: the promised errors


def _import_error(root: Path) -> InputError:
    with pytest.raises(InputError) as info:
        import_kaggle(root, root / "out")
    return info.value


def test_gap_in_slices(tmp_path):
    tiny_dataset(tmp_path, depth=4)
    next(scans_dir(tmp_path, 1, 0).glob("slice_0003_*.png")).unlink()
    err = _import_error(tmp_path)
    assert "missing slice" in str(err) and "case1_day0_slice_0003" in str(err)
    assert "case1_day0" in err.where


def test_duplicate_slice(tmp_path):
    tiny_dataset(tmp_path, depth=3, height=5, width=7)
    write_png(scans_dir(tmp_path, 1, 0) / "slice_0002_7_5_1.60_1.60.png", np.zeros((5, 7)))
    err = _import_error(tmp_path)
    assert "duplicated slice 2" in str(err) and "slice_0002_" in str(err)


def test_mixed_sizes(tmp_path):
    tiny_dataset(tmp_path, depth=3, height=5, width=7)
    old = next(scans_dir(tmp_path, 1, 0).glob("slice_0003_*.png"))
    old.unlink()
    write_png(scans_dir(tmp_path, 1, 0) / "slice_0003_8_5_1.50_1.50.png", np.zeros((5, 8)))
    err = _import_error(tmp_path)
    assert "slice_0003_8_5_1.50_1.50.png" in err.where and "differs" in str(err)


def test_png_shape_disagrees_with_name(tmp_path):
    tiny_dataset(tmp_path, depth=2, height=5, width=7)
    path = next(scans_dir(tmp_path, 1, 0).glob("slice_0002_*.png"))
    write_png(path, np.zeros((7, 5)))  # transposed: 5 wide, 7 high, but the name says 7x5
    err = _import_error(tmp_path)
    assert err.where == str(path) and "name says 7x5" in str(err)


def test_id_without_image(tmp_path):
    _, masks = tiny_dataset(tmp_path, depth=2)
    rows = rows_from_masks(1, 0, masks)
    write_rows(tmp_path / "train.csv", rows + [{"id": "case1_day0_slice_0009", "class": "stomach",
                                                "segmentation": ""}])
    err = _import_error(tmp_path)
    assert err.where == "case1_day0_slice_0009" and "no image" in str(err)
    # A whole case-day that has no folder.
    write_rows(tmp_path / "train.csv", rows + [{"id": "case3_day1_slice_0001", "class": "stomach",
                                                "segmentation": "1 2"}])
    err = _import_error(tmp_path)
    assert err.where == "case3_day1_slice_0001" and "no image" in str(err)


def test_slice_without_rows(tmp_path):
    _, masks = tiny_dataset(tmp_path, depth=2)
    rows = [r for r in rows_from_masks(1, 0, masks) if not (r["id"].endswith("0002") and r["class"] == "stomach")]
    write_rows(tmp_path / "train.csv", rows)
    err = _import_error(tmp_path)
    assert err.where == "case1_day0_slice_0002" and "no 'stomach' row" in str(err)


@pytest.mark.parametrize("rle, problem", [("1 2 3", "odd number"), ("1 x", "not an integer"), ("0 2", "below 1"),
                                          ("30 10", "past the end"), ("5 3 6 1", "overlap")])
def test_malformed_rle(tmp_path, rle, problem):
    _, masks = tiny_dataset(tmp_path, depth=2, height=5, width=7)
    rows = rows_from_masks(1, 0, masks)
    rows[4]["segmentation"] = rle  # slice 2, small_bowel
    write_rows(tmp_path / "train.csv", rows)
    err = _import_error(tmp_path)
    assert err.where == "case1_day0_slice_0002 small_bowel" and problem in str(err)


@pytest.mark.parametrize(
    "header, rows, problem",
    [
        ("id,class", ["case1_day0_slice_0001,stomach"], "missing column(s) segmentation"),
        ("id,class,segmentation", ["case1_day0_slice_0001,liver,"], "unknown class 'liver'"),
        ("id,class,segmentation", ["case1_day0_slice_0001,stomach,", "case1_day0_slice_1,stomach,1 1"],
         "duplicate row for case1_day0_slice_0001 stomach"),
        ("id,class,segmentation", ["slice_0001,stomach,"], "not of the form"),
    ],
)
def test_bad_train_csv(tmp_path, header, rows, problem):
    path = tmp_path / "train.csv"
    path.write_text("\n".join([header] + rows) + "\n")
    with pytest.raises(InputError) as info:
        read_train_csv(path)
    assert problem in str(info.value) and str(path) in str(info.value)


def test_train_csv_empty_fields_are_empty_strings(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,class,segmentation\ncase1_day0_slice_0001,stomach,\ncase1_day0_slice_0001,small_bowel,3 4\n")
    frame = read_train_csv(path)
    assert list(frame["segmentation"]) == ["", "3 4"]
    assert list(frame["case_day"]) == ["case1_day0", "case1_day0"] and list(frame["slice"]) == [1, 1]
