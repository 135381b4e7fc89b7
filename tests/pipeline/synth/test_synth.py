"""Synthetic data generators: vessel volumes (dataset folder) and GI case-days (Kaggle layout)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from seg25d.pipeline.kaggle.rle import rle_encode
import pytest
import SimpleITK as sitk

from seg25d.pipeline.cli import main
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import LabelSpec, read_label_spec, read_manifest
from seg25d.pipeline.synth import gi, vessels
from seg25d.pipeline.synth.vessels import case_rng, render_tubes, split_counts, vessel_volume, write_vessel_dataset

SMALL = (24, 32, 32)


# --- helpers (independent references) -------------------------------------------------------------------


def _best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    truth = label > 0
    best = 0.0
    for threshold in np.quantile(image, np.linspace(0.5, 0.999, 200)):
        predicted = image > threshold
        best = max(best, 2.0 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    return best


def _long_run_fraction(label: np.ndarray, axis: int, min_run: int = 6) -> float:
    """Fraction of label voxels lying in runs of >= ``min_run`` consecutive voxels along ``axis``."""
    rows = np.moveaxis(label > 0, axis, -1).reshape(-1, label.shape[axis])
    total = 0
    for row in rows:
        run = 0
        for value in list(row) + [False]:
            if value:
                run += 1
            else:
                total += run if run >= min_run else 0
                run = 0
    return total / max(1, int((label > 0).sum()))


def _rle_decode(text: str, height: int, width: int) -> np.ndarray:
    """Row-major, 1-indexed start/length pairs -> (H, W) bool mask (written independently of the generator)."""
    flat = np.zeros(height * width, dtype=bool)
    numbers = [int(v) for v in text.split()]
    assert len(numbers) % 2 == 0
    previous_end = 0
    for start, length in zip(numbers[::2], numbers[1::2]):
        assert length > 0 and start > previous_end, "runs must be positive, sorted and disjoint"
        assert start + length - 1 <= height * width, "run leaves the image"
        flat[start - 1:start - 1 + length] = True
        previous_end = start + length - 1
    return flat.reshape(height, width)


def _segment_distance_reference(shape, spacing, p0, p1, r0, r1):
    """Brute force: signed distance from every voxel centre to one tapered tube, point by point."""
    out = np.empty(shape)
    for index in np.ndindex(*shape):
        point = np.array(index, dtype=float) * spacing
        axis = p1 - p0
        t = min(1.0, max(0.0, float(np.dot(point - p0, axis) / np.dot(axis, axis))))
        out[index] = np.linalg.norm(point - (p0 + t * axis)) - (r0 + t * (r1 - r0))
    return out


# --- vessels: geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0)])
def test_render_tubes_matches_brute_force_distance(spacing):
    shape = (10, 14, 12)
    spacing = np.array(spacing)
    starts = np.array([[2.0, 1.0, 1.0], [6.0, 4.0, 7.0]])
    ends = np.array([[10.0, 4.0, 6.0], [6.5, 1.0, 2.0]])
    r_start, r_end = np.array([1.5, 0.8]), np.array([0.9, 1.2])
    signed, owner = render_tubes(shape, spacing, starts, ends, r_start, r_end, reach=1.0)
    references = np.stack([_segment_distance_reference(shape, spacing, starts[i], ends[i], r_start[i], r_end[i])
                           for i in range(2)])
    nearest = references.min(axis=0)
    near = nearest <= 1.0 - 1e-4
    assert near.any() and (~near).any()
    np.testing.assert_allclose(signed[near], nearest[near], atol=1e-4)
    assert np.all(owner[near] == references.argmin(axis=0)[near])
    computed = np.isfinite(signed)
    assert np.all(signed[computed] >= nearest[computed] - 1e-4)   # never closer than the true distance
    assert (~computed).any()                                      # work stays near the pieces
    assert np.all(owner[~computed] == -1) and np.all(owner[computed] >= 0)


def test_vessel_volume_deterministic_by_seed():
    image_a, label_a = vessel_volume(SMALL, rng=np.random.default_rng(3))
    image_b, label_b = vessel_volume(SMALL, rng=np.random.default_rng(3))
    image_c, label_c = vessel_volume(SMALL, rng=np.random.default_rng(4))
    assert image_a.dtype == np.float32 and label_a.dtype == np.uint8
    assert image_a.shape == label_a.shape == SMALL
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    assert not np.array_equal(label_a, label_c)
    assert set(np.unique(label_a)) == {0, 1}


@pytest.mark.parametrize("index", range(4))
def test_vessel_fraction_in_range(index):
    image, label = vessel_volume(SMALL, rng=case_rng(0, index))
    assert 0.005 < label.mean() < 0.06
    assert np.isfinite(image).all() and image.min() >= 0


def test_vessel_fraction_at_default_shape():
    fractions = [vessel_volume(rng=case_rng(1, i))[1].mean() for i in range(2)]
    assert all(0.01 <= f <= 0.04 for f in fractions), fractions


@pytest.mark.parametrize("index", range(3))
def test_vessels_brighter_but_no_global_threshold_separates_them(index):
    image, label = vessel_volume((32, 48, 48), rng=case_rng(0, index))
    inside, outside = image[label > 0].mean(), image[label == 0].mean()
    assert inside > 1.8 * outside
    dice = _best_threshold_dice(image, label)
    assert 0.2 < dice < 0.95, dice


@pytest.mark.parametrize("seed", [0, 5])
def test_vessels_run_along_every_axis(seed):
    """Across a few volumes, many vessel voxels sit in long runs along D, along H and along W."""
    labels = [vessel_volume((32, 48, 48), rng=case_rng(seed, i))[1] for i in range(3)]
    total = sum(int(label.sum()) for label in labels)
    fractions = [sum(_long_run_fraction(label, axis) * label.sum() for label in labels) / total for axis in range(3)]
    assert min(fractions) > 0.08, fractions


def test_vessel_segment_directions_spread():
    directions = []
    for index in range(3):
        pieces = vessels._vessel_segments((48, 64, 64), (1.0, 1.0, 1.0), case_rng(2, index))
        directions.append(pieces["end"] - pieces["start"])
    unit = np.concatenate(directions)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    across_d = (np.abs(unit[:, 0]) < 0.5).mean()   # mostly in the H-W plane
    along_d = (np.abs(unit[:, 0]) > 0.8).mean()
    assert across_d > 0.3 and along_d > 0.08, (across_d, along_d)
    # the second moment of the directions is not dominated by one axis
    eigen = np.linalg.eigvalsh(unit.T @ unit / len(unit))
    assert eigen.min() > 0.15, eigen


def test_anisotropic_spacing_is_in_millimetres():
    """With 2 mm slices the trees fill the box in mm and radii stay >= 0.7 of the finest voxel size."""
    pieces = vessels._vessel_segments((24, 48, 48), (2.0, 1.0, 1.0), case_rng(0, 1))
    points = np.concatenate([pieces["start"], pieces["end"]])
    assert points[:, 0].max() > 30.0            # beyond 24 voxels: D is measured in mm (48 mm deep)
    assert np.all(points.min(axis=0) > -4.5) and np.all(points.max(axis=0) < np.array([52.5, 52.5, 52.5]))
    assert pieces["r_end"].min() >= 0.7 * 0.999 and pieces["r_start"].max() <= 3.5
    _, label = vessel_volume((24, 48, 48), (2.0, 1.0, 1.0), rng=case_rng(0, 1))
    assert 0.005 < label.mean() < 0.06


@pytest.mark.parametrize(
    "shape, spacing",
    [((2, 32, 32), (1, 1, 1)), ((16, 16), (1, 1, 1)), ((16, 16, 16), (0, 1, 1)), ((16, 16, 16), (1, -1, 1))],
)
def test_vessel_volume_rejects_bad_geometry(shape, spacing):
    with pytest.raises(InputError):
        vessel_volume(shape, spacing, rng=0)


# --- vessels: dataset -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, split, expected",
    [
        (16, (0.6, 0.15, 0.25), (10, 2, 4)),
        (3, (0.6, 0.15, 0.25), (1, 1, 1)),
        (4, (0.6, 0.15, 0.25), (2, 1, 1)),
        (2, (0.6, 0.15, 0.25), (1, 0, 1)),
        (1, (0.6, 0.15, 0.25), (1, 0, 0)),
        (10, (0.5, 0.0, 0.5), (5, 0, 5)),
        (5, (6, 1.5, 2.5), (3, 1, 1)),
    ],
)
def test_split_counts(n, split, expected):
    assert split_counts(n, split) == expected


@pytest.mark.parametrize("split", [(0.5, -0.1, 0.6), (0, 0, 0), (0.5, 0.5), (float("nan"), 0.5, 0.5)])
def test_split_counts_rejects_bad_fractions(split):
    with pytest.raises(InputError):
        split_counts(10, split)


def test_write_vessel_dataset(tmp_path):
    shape, spacing = (12, 20, 16), (2.0, 1.0, 0.5)
    manifest = write_vessel_dataset(tmp_path / "ds", n=4, shape=shape, seed=7, spacing=spacing, progress=False)
    assert manifest == tmp_path / "ds" / "manifest.csv"
    frame = read_manifest(manifest)
    assert list(frame["case_id"]) == [f"vessel_{i:03d}" for i in range(4)]
    assert list(frame["split"]) == ["train", "train", "val", "test"]
    assert read_label_spec(manifest) == LabelSpec(("vessel",), (1,), "index")
    for i, row in frame.iterrows():
        assert Path(row["image"]) == tmp_path / "ds" / "images" / f"vessel_{i:03d}.nii.gz"
        image, label = read_volume(row["image"]), read_volume(row["label"])
        assert image.array.shape == label.array.shape == shape
        np.testing.assert_allclose(image.meta.spacing, spacing)
        np.testing.assert_allclose(label.meta.spacing, spacing)
        expected_image, expected_label = vessel_volume(shape, spacing, case_rng(7, i))
        np.testing.assert_array_equal(image.array, expected_image)
        np.testing.assert_array_equal(label.array, expected_label)


def test_vessel_case_does_not_depend_on_n(tmp_path):
    few = write_vessel_dataset(tmp_path / "few", n=2, shape=SMALL, seed=1, progress=False)
    more = write_vessel_dataset(tmp_path / "more", n=3, shape=SMALL, seed=1, progress=False)
    other = write_vessel_dataset(tmp_path / "other", n=2, shape=SMALL, seed=2, progress=False)
    image = {name: read_volume(m.parent / "images" / "vessel_001.nii.gz").array
             for name, m in (("few", few), ("more", more), ("other", other))}
    np.testing.assert_array_equal(image["few"], image["more"])
    assert not np.array_equal(image["few"], image["other"])


def test_write_vessel_dataset_rejects_no_cases(tmp_path):
    with pytest.raises(InputError):
        write_vessel_dataset(tmp_path, n=0, shape=SMALL, progress=False)


# --- GI: RLE ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask, expected",
    [
        ([[0, 1, 1], [1, 0, 0]], "2 3"),
        ([[1, 0], [0, 1]], "1 1 4 1"),
        ([[0, 0], [0, 0]], ""),
        ([[1, 1], [1, 1]], "1 4"),
        ([[0, 0, 1], [0, 0, 1]], "3 1 6 1"),
    ],
)
def test_rle_encode_hand_worked(mask, expected):
    assert rle_encode(np.array(mask, dtype=bool)) == expected


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((7, 11)) < rng.uniform(0.05, 0.95)
        np.testing.assert_array_equal(_rle_decode(rle_encode(mask), 7, 11), mask)


def test_rle_encoding_matches_real_kaggle_rows(realdata):
    lines = (realdata / "gi_kaggle_mr" / "train.csv").read_text().splitlines()[1:]
    image = next((realdata / "gi_kaggle_mr" / "train").rglob("slice_*.png"))
    height, width = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
    checked = 0
    for line in lines:
        rle = line.split(",")[2]
        if rle:
            assert rle_encode(_rle_decode(rle, height, width)) == rle
            checked += 1
    assert checked > 10


# --- GI: dataset ------------------------------------------------------------------------------------------

_FILE = re.compile(r"slice_(\d{4})_(\d+)_(\d+)_(\d+\.\d{2})_(\d+\.\d{2})\.png")
_SIZES = ((64, 56, 1.50, 1.50), (56, 56, 1.63, 1.63))


@pytest.fixture(scope="module")
def gi_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gi")
    gi.write_gi_dataset(root, cases=2, seed=0, days=(2, 3), slices=(16, 20), sizes=_SIZES, progress=False)
    return root


def _read_csv(root: Path) -> list[list[str]]:
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "id,class,segmentation"
    return [line.split(",") for line in lines[1:]]


def _masks(root: Path) -> dict[str, np.ndarray]:
    """Decoded (slices, 3, H, W) mask stack per case-day, reading sizes from the file names."""
    sizes = {}
    for png in (root / "train").rglob("*.png"):
        number, width, height = (int(v) for v in _FILE.fullmatch(png.name).groups()[:3])
        sizes[(png.parts[-3], number)] = (height, width)
    stacks: dict[str, list] = {}
    for slice_id, _, rle in _read_csv(root):
        case_day, number = slice_id.rsplit("_slice_", 1)
        stacks.setdefault(case_day, []).append(_rle_decode(rle, *sizes[(case_day, int(number))]))
    return {k: np.array(v).reshape(-1, 3, *v[0].shape) for k, v in stacks.items()}


def test_gi_layout_and_png_format(gi_root):
    cases = sorted((gi_root / "train").iterdir())
    assert len(cases) == 2
    day_numbers = []
    for case in cases:
        assert re.fullmatch(r"case\d+", case.name)
        days = sorted(case.iterdir())
        assert 2 <= len(days) <= 3
        for day in days:
            match = re.fullmatch(rf"{case.name}_day(\d+)", day.name)
            assert match
            day_numbers.append(int(match.group(1)))
            files = sorted((day / "scans").iterdir())
            parsed = [_FILE.fullmatch(f.name) for f in files]
            assert all(parsed)
            numbers = [int(p.group(1)) for p in parsed]
            assert numbers == list(range(1, len(files) + 1)) and 16 <= len(files) <= 20
            for f, p in zip(files[:: max(1, len(files) // 4)], parsed[:: max(1, len(files) // 4)]):
                width, height, pixel_w, pixel_h = int(p.group(2)), int(p.group(3)), float(p.group(4)), float(p.group(5))
                assert (width, height, pixel_w, pixel_h) in _SIZES
                png = sitk.ReadImage(str(f))
                assert png.GetPixelID() == sitk.sitkUInt16
                array = sitk.GetArrayFromImage(png)
                assert array.dtype == np.uint16 and array.shape == (height, width)
    assert day_numbers != list(range(len(day_numbers)))  # days are not simply 0, 1, 2, ...


def test_gi_intensity_range(gi_root):
    maxima = [sitk.GetArrayFromImage(sitk.ReadImage(str(f))).max() for f in (gi_root / "train").rglob("*_0008_*.png")]
    assert 1000 < max(maxima) < 30000


def test_gi_train_csv_rows(gi_root):
    rows = _read_csv(gi_root)
    assert len(rows) % 3 == 0
    pngs = {f"{p.parts[-3]}_slice_{_FILE.fullmatch(p.name).group(1)}" for p in (gi_root / "train").rglob("*.png")}
    ids = [r[0] for r in rows]
    assert set(ids) == pngs and len(ids) == 3 * len(pngs)
    for k in range(0, len(rows), 3):
        assert [r[0] for r in rows[k:k + 3]] == [ids[k]] * 3
        assert [r[1] for r in rows[k:k + 3]] == ["large_bowel", "small_bowel", "stomach"]


def test_gi_masks_content(gi_root):
    masks = _masks(gi_root)
    for case_day, stack in masks.items():
        any_organ = stack.reshape(len(stack), -1).any(axis=1)
        assert not any_organ[0] and not any_organ[-1], case_day    # top and bottom slices empty
        assert any_organ.sum() >= 3
    per_class = np.array([[stack[:, c].any() for c in range(3)] for stack in masks.values()])
    assert per_class.any(axis=0).all()                               # every class appears somewhere


def test_gi_masks_lie_on_the_body(gi_root):
    masks = _masks(gi_root)
    case_day, stack = next(iter(masks.items()))
    case = case_day.split("_")[0]
    files = sorted((gi_root / "train" / case / case_day / "scans").iterdir())
    image = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in files])
    organ = stack.any(axis=1)
    air = np.median(image[:, :2, :])                                 # the first rows lie outside the body
    assert np.median(image[organ]) > 3 * air                         # organs are inside the body, not in air


def test_gi_days_of_a_case_differ(gi_root):
    masks = _masks(gi_root)
    by_case: dict[str, list] = {}
    for case_day, stack in masks.items():
        by_case.setdefault(case_day.split("_")[0], []).append(stack)
    for stacks in by_case.values():
        assert len({s.shape for s in stacks}) == 1                    # same scan geometry per case
        first = stacks[0]
        for other in stacks[1:]:
            assert not np.array_equal(first, other)
            # ... but the same anatomy: similar organ volumes, organs roughly where they were
            ratio = other.sum(axis=(0, 2, 3)) / np.maximum(first.sum(axis=(0, 2, 3)), 1)
            assert np.all((ratio > 0.25) & (ratio < 4)), ratio
            for c in range(3):
                if first[:, c].any() and other[:, c].any():
                    shift = np.subtract(np.argwhere(first[:, c]).mean(0), np.argwhere(other[:, c]).mean(0))
                    assert np.all(np.abs(shift[1:]) < 0.2 * np.array(first.shape[2:])), (c, shift)


def test_gi_deterministic_by_seed(tmp_path):
    kwargs = dict(cases=1, days=(2, 2), slices=(10, 10), sizes=_SIZES[:1], progress=False)
    a = gi.write_gi_dataset(tmp_path / "a", seed=3, **kwargs)
    b = gi.write_gi_dataset(tmp_path / "b", seed=3, **kwargs)
    c = gi.write_gi_dataset(tmp_path / "c", seed=4, **kwargs)
    assert a.read_bytes() == b.read_bytes()
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "train").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "train").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 20
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_gi_case_does_not_depend_on_case_count(tmp_path):
    kwargs = dict(seed=5, days=(2, 2), slices=(10, 12), sizes=_SIZES, progress=False)
    one = gi.write_gi_dataset(tmp_path / "one", cases=1, **kwargs).read_text().splitlines()
    two = gi.write_gi_dataset(tmp_path / "two", cases=2, **kwargs).read_text().splitlines()
    assert two[: len(one)] == one and len(two) > len(one)


@pytest.mark.parametrize(
    "kwargs",
    [{"cases": 0}, {"days": (3, 2)}, {"days": 0}, {"slices": (4, 6)}, {"sizes": [(8, 8, 1.5, 1.5)]}, {"sizes": []}],
)
def test_gi_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(InputError):
        gi.write_gi_dataset(tmp_path, progress=False, **kwargs)


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_synth_vessels(tmp_path, capsys):
    out = tmp_path / "vessels"
    assert main(["synth", "vessels", "--out", str(out), "--n", "3", "--shape", "12", "16", "16",
                 "--spacing", "2", "1", "1", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "manifest.csv" in printed and "3" in printed
    frame = read_manifest(out / "manifest.csv")
    assert sorted(frame["split"]) == ["test", "train", "val"]
    volume = read_volume(frame["image"][0])
    assert volume.array.shape == (12, 16, 16)
    np.testing.assert_allclose(volume.meta.spacing, (2.0, 1.0, 1.0))


def test_cli_synth_gi(tmp_path, capsys):
    out = tmp_path / "gi"
    assert main(["synth", "gi", "--out", str(out), "--cases", "1", "--days", "2", "2", "--slices", "8", "8"]) == 0
    printed = capsys.readouterr().out
    assert "train.csv" in printed and "2 case-days" in printed
    assert len(list((out / "train").rglob("*.png"))) == 16
    assert len((out / "train.csv").read_text().splitlines()) == 1 + 3 * 16


def test_cli_synth_bad_input_exits_2(tmp_path, capsys):
    assert main(["synth", "vessels", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "error" in capsys.readouterr().err
