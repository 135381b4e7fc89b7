"""Volume I/O: arrays, geometry and headers survive reading and writing, bad files fail with one-line errors.

Geometry is checked against nibabel and SimpleITK used directly (independent of seg25d's conversions):
a voxel index (d, h, w) of our array is the file's (i, j, k) = (w, h, d); nibabel's affine maps (i, j, k) to
RAS, SimpleITK's TransformContinuousIndexToPhysicalPoint maps it to LPS (x and y negated).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import (
    Volume,
    VolumeMeta,
    mask_name,
    read_volume,
    same_geometry,
    supported_extension,
    synthetic_meta,
    write_mask,
    write_volume,
)
from seg25d.pipeline.io.nifti import NibabelIO
from seg25d.pipeline.io.sitk import SimpleITKIO

REAL_CASES = [
    # (image, label) relative to the realdata folder
    ("nifti/mr_abdomen/example_mr_sm.nii.gz", "nifti/mr_abdomen/example_seg_mr.nii.gz"),  # LPS, int16
    ("nifti/ct_abdomen/example_ct_sm.nii.gz", "nifti/ct_abdomen/example_seg.nii.gz"),  # RAS, int16
    ("nifti/msd_spleen/sub-spleen2_ct.nii.gz", "nifti/msd_spleen/sub-spleen2_ct_seg-manual.nii.gz"),  # float, aniso
    ("nrrd/pyradiomics/brain1_image.nrrd", "nrrd/pyradiomics/brain1_label.nrrd"),
    ("nrrd/pyradiomics/breast1_image.nrrd", "nrrd/pyradiomics/breast1_label.nrrd"),
]
REAL_IDS = [Path(image).name for image, _ in REAL_CASES]
REAL_FILES = [f for case in REAL_CASES for f in case]


# ----------------------------------------------------------------------------------------------------------------
# independent references


def voxel_corners(shape) -> np.ndarray:
    """The 8 outer corners of the voxel grid as array indices (d, h, w, 1), shape (4, 8)."""
    return np.array([[*c, 1.0] for c in itertools.product(*[(-0.5, n - 0.5) for n in shape])]).T


def world_from_nibabel(path, dhw: np.ndarray) -> np.ndarray:
    """RAS of array indices (3, N) by nibabel's affine, which maps (i, j, k) = (w, h, d)."""
    ijk = np.vstack([dhw[::-1], np.ones(dhw.shape[1])])
    return (nib.load(str(path)).affine @ ijk)[:3]


def world_from_sitk(img: sitk.Image, dhw: np.ndarray) -> np.ndarray:
    """RAS of array indices (3, N) by SimpleITK's own index-to-physical transform (LPS)."""
    lps = np.array([img.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in dhw.T]).T
    return lps * np.array([[-1.0], [-1.0], [1.0]])


def world_from_meta(meta: VolumeMeta, dhw: np.ndarray) -> np.ndarray:
    return (meta.affine @ np.vstack([dhw, np.ones(dhw.shape[1])]))[:3]


def sample_indices(shape, n=6, seed=0) -> np.ndarray:
    """Array indices (3, 8 + n): the grid's outer corners and n random points inside."""
    rng = np.random.default_rng(seed)
    inside = rng.uniform(-0.5, np.asarray(shape, dtype=float)[:, None] - 0.5, (3, n))
    return np.hstack([voxel_corners(shape)[:3], inside])


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def oblique_affine(spacing=(2.5, 0.9, 0.6), origin=(12.0, -30.5, 7.25), flip=False) -> np.ndarray:
    """Array (d, h, w) axes along rotated (S, A, R), rotated 20 deg about x then 25 deg about z, anisotropic."""
    base = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)  # d->S, h->A, w->R (det -1, like NIfTI RAS)
    if flip:
        base[:, 1] *= -1  # a proper rotation instead
    affine = np.eye(4)
    affine[:3, :3] = rotation(2, 25) @ rotation(0, 20) @ base @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def assert_input_error(excinfo, path, *words):
    err = excinfo.value
    assert type(err) is InputError  # not a nibabel/SimpleITK exception type
    message = str(err)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    assert err.__cause__ is None  # raised "from None": no chained library traceback
    for word in words:
        assert word.lower() in message.lower(), message


# ----------------------------------------------------------------------------------------------------------------
# real volumes


@pytest.mark.parametrize("rel", REAL_FILES, ids=[Path(f).name for f in REAL_FILES])
def test_real_array_and_geometry_match_the_libraries(realdata, rel):
    path = realdata / rel
    vol = read_volume(path)
    img = sitk.ReadImage(str(path))
    reference = sitk.GetArrayFromImage(img)
    assert vol.array.shape == reference.shape == vol.meta.shape
    assert vol.array.dtype == reference.dtype
    np.testing.assert_array_equal(vol.array, reference)
    np.testing.assert_allclose(vol.meta.spacing, img.GetSpacing()[::-1], rtol=1e-6)
    points = sample_indices(vol.meta.shape)
    np.testing.assert_allclose(world_from_meta(vol.meta, points), world_from_sitk(img, points), atol=1e-3)
    if rel.endswith(".nii.gz"):
        np.testing.assert_array_equal(vol.array, nib.load(str(path)).get_fdata().transpose(2, 1, 0))
        np.testing.assert_allclose(world_from_meta(vol.meta, points), world_from_nibabel(path, points), atol=1e-4)


def test_real_orientations_are_what_the_readme_says(realdata):
    """The MR's voxel axes run to L, P, S and the CT's to R, A, S: guards the LPS/RAS sign conventions."""
    mr = read_volume(realdata / REAL_CASES[0][0]).meta.affine
    ct = read_volume(realdata / REAL_CASES[1][0]).meta.affine
    assert nib.aff2axcodes(mr[:, [2, 1, 0, 3]]) == ("L", "P", "S")
    assert nib.aff2axcodes(ct[:, [2, 1, 0, 3]]) == ("R", "A", "S")
    spleen = read_volume(realdata / REAL_CASES[2][0]).meta
    np.testing.assert_allclose(spleen.spacing, (5.0, 0.79492, 0.79492), atol=1e-5)
    assert spleen.shape == (26, 166, 164)


@pytest.mark.parametrize("image_rel, label_rel", REAL_CASES, ids=REAL_IDS)
def test_real_mask_round_trip(realdata, tmp_path, image_rel, label_rel):
    image = read_volume(realdata / image_rel)
    label = read_volume(realdata / label_rel)
    assert label.array.dtype.kind in "iu"
    out = write_mask(tmp_path / mask_name("case7", image.meta), label.array, image.meta)
    assert out.name == "case7" + (".nii.gz" if image_rel.endswith(".nii.gz") else ".nrrd")
    back = read_volume(out)
    assert back.array.shape == image.array.shape
    assert back.array.dtype.kind in "iu"
    np.testing.assert_array_equal(back.array, label.array)
    np.testing.assert_allclose(back.meta.affine, image.meta.affine, atol=1e-5)
    np.testing.assert_allclose(back.meta.spacing, image.meta.spacing, rtol=1e-6)
    assert same_geometry(back.meta, image.meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]

    if image_rel.endswith(".nii.gz"):  # header comparison with nibabel directly
        src, dst = nib.load(str(realdata / image_rel)).header, nib.load(str(out)).header
        assert dst.get_data_dtype() == np.uint8
        for getter in ("get_sform", "get_qform"):
            (src_m, src_code), (dst_m, dst_code) = getattr(src, getter)(coded=True), getattr(dst, getter)(coded=True)
            assert int(src_code) == int(dst_code), getter
            if src_m is None:
                assert dst_m is None
            else:
                np.testing.assert_allclose(dst_m, src_m, atol=1e-5)
        np.testing.assert_allclose(dst.get_zooms()[:3], src.get_zooms()[:3], rtol=1e-6)
        assert dst.get_xyzt_units() == src.get_xyzt_units()
    else:  # NRRD: compare with SimpleITK directly
        src, dst = sitk.ReadImage(str(realdata / image_rel)), sitk.ReadImage(str(out))
        assert dst.GetSize() == src.GetSize()
        np.testing.assert_allclose(dst.GetOrigin(), src.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(dst.GetSpacing(), src.GetSpacing(), rtol=1e-12)
        np.testing.assert_allclose(dst.GetDirection(), src.GetDirection(), atol=1e-12)
        assert dst.GetPixelID() == sitk.sitkUInt8
        source_label = sitk.GetArrayFromImage(sitk.ReadImage(str(realdata / label_rel)))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(dst), source_label)


@pytest.mark.parametrize("image_rel", [c[0] for c in REAL_CASES[:3]] + [REAL_CASES[4][0]], ids=lambda p: Path(p).name)
def test_real_image_round_trip_keeps_dtype_and_values(realdata, tmp_path, image_rel):
    image = read_volume(realdata / image_rel)
    out = write_volume(tmp_path / ("copy" + image.meta.extension), image.array, image.meta)
    back = read_volume(out)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert same_geometry(back.meta, image.meta, atol=1e-5)


@pytest.mark.parametrize("image_rel, out_name", [
    ("nifti/mr_abdomen/example_mr_sm.nii.gz", "mask.nrrd"),
    ("nifti/msd_spleen/sub-spleen2_ct.nii.gz", "mask.mha"),
    ("nrrd/pyradiomics/brain1_image.nrrd", "mask.nii.gz"),
    ("nrrd/pyradiomics/breast1_image.nrrd", "mask.nii"),
], ids=["nii-to-nrrd", "nii-to-mha", "nrrd-to-nii.gz", "nrrd-to-nii"])
def test_cross_format_keeps_world_corners(realdata, tmp_path, image_rel, out_name):
    source = realdata / image_rel
    image = read_volume(source)
    mask = (image.array > np.median(image.array)).astype(np.uint8)
    out = write_mask(tmp_path / out_name, mask, image.meta)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, mask)
    corners = voxel_corners(image.meta.shape)[:3]
    # world corners of the source, computed by the source's own library
    expected = world_from_nibabel(source, corners) if image_rel.endswith(".nii.gz") else \
        world_from_sitk(sitk.ReadImage(str(source)), corners)
    # ... and of the written file, by the target's own library
    got = world_from_nibabel(out, corners) if out_name.startswith("mask.nii") else \
        world_from_sitk(sitk.ReadImage(str(out)), corners)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    np.testing.assert_allclose(world_from_meta(back.meta, corners), expected, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# synthetic geometry


@pytest.mark.parametrize("flip", [False, True], ids=["improper", "proper"])
@pytest.mark.parametrize("name", ["o.nii.gz", "o.nii", "o.nrrd", "o.mha"])
def test_oblique_affine_round_trip(tmp_path, name, flip):
    affine = oblique_affine(flip=flip)
    meta = VolumeMeta(shape=(5, 6, 7), affine=affine)
    np.testing.assert_allclose(meta.spacing, (2.5, 0.9, 0.6))
    data = np.random.default_rng(1).normal(size=meta.shape).astype(np.float32)
    out = write_volume(tmp_path / name, data, meta)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, data)
    np.testing.assert_allclose(back.meta.affine, affine, atol=1e-5)
    points = sample_indices(meta.shape)
    expected = world_from_meta(meta, points)
    if ".nii" in name:
        independent = world_from_nibabel(out, points)
    else:
        independent = world_from_sitk(sitk.ReadImage(str(out)), points)
    np.testing.assert_allclose(independent, expected, atol=1e-4)
    if ".nii" in name:  # written as both qform and sform, code 1 (scanner)
        header = nib.load(str(out)).header
        for getter in ("get_sform", "get_qform"):
            matrix, code = getattr(header, getter)(coded=True)
            assert int(code) == 1
            np.testing.assert_allclose(matrix, affine[:, [2, 1, 0, 3]], atol=1e-5)


def test_sheared_affine_nrrd_raises_and_nifti_keeps_it(tmp_path):
    affine = np.array([[0.0, 0.3, 0.8, 1.0], [0.0, 0.9, 0.0, 2.0], [2.5, 0.0, 0.0, 3.0], [0, 0, 0, 1.0]])
    meta = VolumeMeta(shape=(4, 5, 6), affine=affine)
    data = np.zeros(meta.shape, np.uint8)
    with pytest.raises(InputError) as excinfo:
        write_mask(tmp_path / "shear.nrrd", data, meta)
    assert_input_error(excinfo, tmp_path, "shear")
    assert list(tmp_path.iterdir()) == []
    out = write_mask(tmp_path / "shear.nii.gz", data, meta)  # NIfTI's sform stores a general affine
    np.testing.assert_allclose(read_volume(out).meta.affine, affine, atol=1e-6)
    np.testing.assert_allclose(nib.load(str(out)).affine, affine[:, [2, 1, 0, 3]], atol=1e-6)


@pytest.mark.parametrize("sform_code, qform_code", [(2, 0), (0, 1), (1, 1), (4, 2), (0, 0)])
def test_nifti_header_codes_survive(tmp_path, sform_code, qform_code):
    """Scanner-written files use sform and/or qform with various codes; a mask keeps exactly those."""
    affine_ijk = np.eye(4)
    affine_ijk[:3, :3] = oblique_affine()[:3, :3][:, ::-1]
    affine_ijk[:3, 3] = (-90.0, 120.0, -45.5)
    img = nib.Nifti1Image(np.zeros((7, 6, 5), np.int16), None)
    img.set_sform(affine_ijk, sform_code)
    img.set_qform(affine_ijk, qform_code)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "src.nii.gz"))
    source = read_volume(tmp_path / "src.nii.gz")
    out = write_mask(tmp_path / "mask.nii.gz", np.ones(source.meta.shape, np.uint8), source.meta)
    src, dst = nib.load(str(tmp_path / "src.nii.gz")), nib.load(str(out))
    for getter in ("get_sform", "get_qform"):
        src_m, src_code = getattr(src.header, getter)(coded=True)
        dst_m, dst_code = getattr(dst.header, getter)(coded=True)
        assert int(dst_code) == int(src_code), getter
        if src_m is not None:
            np.testing.assert_allclose(dst_m, src_m, atol=1e-5)
    np.testing.assert_allclose(dst.affine, src.affine, atol=1e-5)
    assert dst.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(read_volume(out).meta.affine, source.meta.affine, atol=1e-5)


def test_synthetic_meta_is_axis_aligned_nifti(tmp_path):
    meta = synthetic_meta(shape=(4, 5, 6), spacing=(3.0, 0.5, 0.75), origin=(1.0, 2.0, 3.0))
    assert meta.shape == (4, 5, 6)
    assert meta.spacing == (3.0, 0.5, 0.75)
    out = write_mask(tmp_path / "s.nii.gz", np.ones(meta.shape, bool), meta)
    img = nib.load(str(out))
    assert img.shape == (6, 5, 4)
    np.testing.assert_allclose(img.affine, [[0.75, 0, 0, 1], [0, 0.5, 0, 2], [0, 0, 3.0, 3], [0, 0, 0, 1]])
    assert img.get_data_dtype() == np.uint8


def test_changed_meta_affine_wins_over_the_source_header(realdata, tmp_path):
    """A resampled volume keeps the source header (codes, units) but must get its own shape and affine."""
    image = read_volume(realdata / REAL_CASES[0][0])
    affine = image.meta.affine.copy()
    affine[:3, :3] *= 2.0
    affine[:3, 3] += (1.5, -2.0, 4.0)
    meta = image.meta.replace(shape=(10, 46, 59), affine=affine)
    out = write_mask(tmp_path / "small.nii.gz", np.ones(meta.shape, np.uint8), meta)
    back = read_volume(out)
    assert back.meta.shape == (10, 46, 59)
    np.testing.assert_allclose(back.meta.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.meta.spacing, (6.0, 6.0, 6.0), atol=1e-6)


def test_scaled_nifti_values_and_masks_are_not_rescaled(tmp_path):
    """A source with scl_slope/inter: image values come back scaled, masks written with its meta stay integer."""
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)
    img = nib.Nifti1Image(raw, np.diag([1.0, 2.0, 3.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    vol = read_volume(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(vol.array, raw.transpose(2, 1, 0) * 0.5 + 10.0)
    out = write_volume(tmp_path / "copy.nii.gz", vol.array, vol.meta)
    np.testing.assert_allclose(read_volume(out).array, vol.array)
    labels = (np.arange(vol.array.size).reshape(vol.array.shape) % 3).astype(np.uint8)
    mask_out = write_mask(tmp_path / "mask.nii.gz", labels, vol.meta)
    np.testing.assert_array_equal(nib.load(str(mask_out)).get_fdata().transpose(2, 1, 0), labels)
    np.testing.assert_array_equal(read_volume(mask_out).array, labels)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("values, dtype", [
    ([0, 1], np.uint8),
    ([0, 255], np.uint8),
    ([0, 300], np.int16),
    ([-1, 2], np.int16),
    ([0, 70000], np.int32),
])
def test_write_mask_integer_dtype(tmp_path, ext, values, dtype):
    meta = synthetic_meta((3, 4, 5))
    mask = np.resize(np.array(values, dtype=np.int64), meta.shape)
    back = read_volume(write_mask(tmp_path / f"m{ext}", mask, meta))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, mask)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, bool])
def test_write_volume_keeps_dtype(tmp_path, ext, dtype):
    meta = synthetic_meta((3, 4, 5), spacing=(2.0, 1.0, 0.5))
    data = (np.random.default_rng(2).normal(size=meta.shape) * 50).astype(dtype)
    back = read_volume(write_volume(tmp_path / f"v{ext}", data, meta))
    assert back.array.dtype == (np.uint8 if dtype is bool else dtype)
    np.testing.assert_array_equal(back.array, data)


def test_write_volume_rejects_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((3, 4, 5)), synthetic_meta((3, 4, 6)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", [".mhd", ".nhdr"])
def test_detached_header_formats_leave_no_temporary_files(tmp_path, ext):
    meta = VolumeMeta(shape=(5, 6, 7), affine=oblique_affine())
    data = np.random.default_rng(3).integers(0, 4, meta.shape).astype(np.uint8)
    out = write_mask(tmp_path / f"m{ext}", data, meta)
    write_mask(out, data, meta)  # rewriting must not pile up data files
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and f"m{ext}" in names and all(n.startswith("m.") for n in names), names
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, data)
    np.testing.assert_allclose(back.meta.affine, meta.affine, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# dimensionality, corrupt files, NaN


def _save_nifti(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([0.5, 0.6, 0.7, 1.0])), str(path))


def _save_sitk(path, data):
    data = np.asarray(data)
    img = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in data]) if data.ndim == 4 else sitk.GetImageFromArray(data)
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("ext, save", [(".nii.gz", _save_nifti), (".nrrd", _save_sitk)], ids=["nifti", "nrrd"])
def test_singleton_fourth_axis_is_accepted(tmp_path, ext, save):
    data = np.random.default_rng(4).integers(0, 100, (3, 4, 5)).astype(np.int16)
    path = tmp_path / f"v{ext}"
    if ext == ".nii.gz":
        save(path, data.transpose(2, 1, 0)[..., None])  # nibabel order (i, j, k, t=1)
    else:
        save(path, data[None])  # SimpleITK: a 4D image with one 3D volume
    vol = read_volume(path)
    assert vol.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.array, data)


@pytest.mark.parametrize("ext, save", [(".nii.gz", _save_nifti), (".nrrd", _save_sitk)], ids=["nifti", "nrrd"])
@pytest.mark.parametrize("shape, what", [((6, 5), "2D"), ((2, 4, 5, 6), "4D")], ids=["2d", "4d"])
def test_non_3d_raises_naming_the_file(tmp_path, ext, save, shape, what):
    path = tmp_path / f"bad{ext}"
    save(path, np.zeros(shape, np.int16))
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert_input_error(excinfo, path, what)


def _truncated(path):
    """A valid header whose voxel data stops at 60 %."""
    _save_nifti(path, np.random.default_rng(5).normal(size=(24, 24, 24)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _nrrd_short_data(path):
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8 8\nencoding: raw\nendian: little\n\n"
    path.write_bytes(header + b"\0" * 10)  # 10 of the 1024 data bytes


@pytest.mark.parametrize("name, make", [
    ("trunc.nii.gz", _truncated),
    ("trunc.nii", _truncated),
    ("noise.nii.gz", _random_bytes),
    ("noise.nrrd", _random_bytes),
    ("noise.mha", _random_bytes),
    ("short.nrrd", _nrrd_short_data),
])
def test_corrupt_file_raises_input_error(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert_input_error(excinfo, path)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "absent.nii.gz")
    assert_input_error(excinfo, tmp_path / "absent.nii.gz", "not found")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "empty")
    assert_input_error(excinfo, tmp_path / "empty", "DICOM")


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_raise(tmp_path, ext, bad):
    meta = synthetic_meta((3, 4, 5))
    data = np.zeros(meta.shape, np.float32)
    data[1, 2, 3] = bad
    data[0, 0, 0] = bad
    path = write_volume(tmp_path / f"nan{ext}", data, meta)
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert_input_error(excinfo, path, "2 voxels", "NaN")


# ----------------------------------------------------------------------------------------------------------------
# DICOM series


def write_dicom_series(folder: Path, array: np.ndarray, spacing_xyz, origin_lps, direction_lps: np.ndarray) -> None:
    """One .dcm per slice with the geometry tags (position, orientation, spacing) a series reader uses."""
    folder.mkdir(parents=True)
    uid = "1.2.826.0.1.3680043.2.1125.9.1"
    for k, plane in enumerate(array):
        img = sitk.GetImageFromArray(plane)
        img.SetSpacing(spacing_xyz[:2])
        position = np.asarray(origin_lps) + k * spacing_xyz[2] * direction_lps[:, 2]
        tags = {
            "0008|0060": "MR",
            "0020|000d": uid + ".1",  # study
            "0020|000e": uid + ".2",  # series
            "0020|0013": str(k + 1),  # instance number
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction_lps[:, 0], *direction_lps[:, 1])),
            "0028|0030": f"{spacing_xyz[1]}\\{spacing_xyz[0]}",  # row spacing, column spacing
            "0018|0050": str(spacing_xyz[2]),
        }
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(img)


def test_dicom_series_geometry_and_mask_as_nifti(tmp_path):
    array = (np.arange(5 * 6 * 7).reshape(5, 6, 7) * 7 % 1000).astype(np.int16)  # (D, H, W): 5 slices of 6x7
    direction = rotation(2, 20) @ rotation(0, 20)  # oblique, LPS
    spacing = (0.7, 0.8, 2.5)  # x (columns), y (rows), slice
    origin = (10.0, -20.0, 30.0)
    folder = tmp_path / "series"
    write_dicom_series(folder, array, spacing, origin, direction)
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.meta.spacing, spacing[::-1], rtol=1e-6)
    # hand-worked: RAS of array index (d, h, w) = flip_xy(origin + direction @ (w*sx, h*sy, d*sz))
    points = sample_indices(vol.meta.shape)
    lps = np.asarray(origin)[:, None] + direction @ (np.asarray(spacing)[:, None] * points[::-1])
    expected = lps * np.array([[-1.0], [-1.0], [1.0]])
    np.testing.assert_allclose(world_from_meta(vol.meta, points), expected, atol=1e-4)

    assert mask_name("case3", vol.meta) == "case3.nii.gz"
    mask = (array > 500).astype(np.uint8)
    out = write_mask(tmp_path / mask_name("case3", vol.meta), mask, vol.meta)
    np.testing.assert_allclose(world_from_nibabel(out, points), expected, atol=1e-4)
    np.testing.assert_array_equal(nib.load(str(out)).get_fdata().transpose(2, 1, 0), mask)


# ----------------------------------------------------------------------------------------------------------------
# names, atomicity


@pytest.mark.parametrize("name, expected", [
    ("img.nii.gz", "c1.nii.gz"),
    ("img.nii", "c1.nii"),
    ("IMG.NII.GZ", "c1.nii.gz"),
    ("img.nrrd", "c1.nrrd"),
    ("img.mha", "c1.mha"),
])
def test_mask_name_follows_input_extension(tmp_path, name, expected):
    meta = synthetic_meta((2, 3, 4))
    path = write_volume(tmp_path / name, np.zeros(meta.shape, np.int16), meta)
    assert mask_name("c1", read_volume(path).meta) == expected


@pytest.mark.parametrize("name, ok", [
    ("a.nii.gz", True), ("a.nii", True), ("a.NRRD", True), ("a.nhdr", True), ("a.mha", True), ("a.mhd", True),
    ("a.png", False), ("a.gz", False), ("a.json", False),
])
def test_supported_extension(name, ok):
    assert supported_extension(name) is ok


@pytest.mark.parametrize("backend, name", [
    (NibabelIO, "out.nii.gz"), (SimpleITKIO, "out.nrrd"), (SimpleITKIO, "out.mha"), (SimpleITKIO, "out.mhd"),
])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_failed_write_leaves_no_file(tmp_path, monkeypatch, backend, name, existing):
    meta = synthetic_meta((3, 4, 5))
    target = tmp_path / name
    if existing:
        write_mask(target, np.ones(meta.shape), meta)
    before = sorted(p.name for p in tmp_path.iterdir())

    def failing_write(self, path, array, meta):
        Path(path).write_bytes(b"partial")  # the backend had begun writing
        raise OSError("disk full")

    monkeypatch.setattr(backend, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_mask(target, np.zeros(meta.shape), meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.undo()
    if existing:
        np.testing.assert_array_equal(read_volume(target).array, 1)


def test_volume_type():
    meta = synthetic_meta((2, 3, 4), spacing=(1.0, 2.0, 3.0))
    vol = Volume(np.zeros(meta.shape), meta)
    assert vol.meta.spacing == (1.0, 2.0, 3.0)
    assert not same_geometry(meta, meta.replace(shape=(2, 3, 5)))
    shifted = meta.affine.copy()
    shifted[0, 3] += 0.01
    assert not same_geometry(meta, meta.replace(affine=shifted))
    assert same_geometry(meta, meta.replace(path="elsewhere.nrrd", format="sitk"))


# ----------------------------------------------------------------------------------------------------------------
# NIfTI spatial units


@pytest.mark.parametrize("unit, mm", [("micron", 0.001), ("meter", 1000.0), ("mm", 1.0), ("unknown", 1.0)])
def test_nifti_units_are_read_in_mm_as_simpleitk_reads_them(tmp_path, unit, mm):
    """Spacing and world positions in mm (SimpleITK converts too); a mask keeps the file's header and units."""
    affine_ijk = oblique_affine(spacing=(2.5, 0.9, 0.6)) @ np.array(
        [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    affine_ijk[:3] /= mm  # the same geometry written in the file's unit
    img = nib.Nifti1Image(np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5), affine_ijk)
    img.header.set_xyzt_units(unit, "sec")
    path = tmp_path / "src.nii.gz"
    nib.save(img, str(path))
    source = read_volume(path)
    reference = sitk.ReadImage(str(path))
    np.testing.assert_allclose(source.meta.spacing, (2.5, 0.9, 0.6), rtol=1e-6)
    np.testing.assert_allclose(source.meta.spacing, reference.GetSpacing()[::-1], rtol=1e-6)
    points = sample_indices(source.meta.shape)
    np.testing.assert_allclose(world_from_meta(source.meta, points), world_from_sitk(reference, points), atol=1e-3)

    out = write_mask(tmp_path / "mask.nii.gz", source.array > 50, source.meta)
    src, dst = nib.load(str(path)), nib.load(str(out))
    np.testing.assert_array_equal(dst.affine, src.affine)  # exactly: the header came back unchanged
    np.testing.assert_array_equal(dst.header.get_sform(), src.header.get_sform())
    np.testing.assert_array_equal(dst.header.get_qform(), src.header.get_qform())
    assert dst.header.get_xyzt_units() == src.header.get_xyzt_units()
    np.testing.assert_array_equal(read_volume(out).meta.affine, source.meta.affine)


def test_nifti_in_microns_written_as_nrrd_is_in_mm(tmp_path):
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.uint8), np.diag([400.0, 500.0, 600.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, str(tmp_path / "u.nii.gz"))
    source = read_volume(tmp_path / "u.nii.gz")
    out = write_mask(tmp_path / "u.nrrd", source.array, source.meta)
    np.testing.assert_allclose(sitk.ReadImage(str(out)).GetSpacing(), (0.4, 0.5, 0.6), rtol=1e-9)


def test_meta_without_a_nifti_header_is_written_in_mm(tmp_path):
    out = write_mask(tmp_path / "s.nii.gz", np.ones((2, 3, 4), np.uint8), synthetic_meta((2, 3, 4), (2.0, 1.0, 0.5)))
    assert nib.load(str(out)).header.get_xyzt_units()[0] == "mm"
