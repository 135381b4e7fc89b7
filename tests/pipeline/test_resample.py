"""Resampling on edge-aligned grids, against hand-worked values, scipy's map_coordinates and torch's interpolate.

Edge-aligned convention (``align_corners=False``): output voxel ``o`` of an axis resampled from ``n_in`` to ``n_out``
voxels sits at input coordinate ``(o + 0.5) * n_in / n_out - 0.5``; outside ``[0, n_in - 1]`` the edge value holds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seg25d.pipeline.resample import resample_image, resample_labels, resample_masks, target_shape


def source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


def reference_map_coordinates(array: np.ndarray, shape, order: int) -> np.ndarray:
    """Independent reference: scipy's map_coordinates at explicitly computed edge-aligned coordinates."""
    grids = np.meshgrid(*[source_coordinates(n, m) for n, m in zip(array.shape, shape)], indexing="ij")
    return ndimage.map_coordinates(array.astype(np.float64), grids, order=order, mode="nearest")


def smooth_volume(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.0, mode="nearest").astype(np.float32) * 10


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels whose centres lie inside a sphere given in mm."""
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


@pytest.mark.parametrize("shape, spacing, new_spacing, expected", [
    ((10, 20, 30), (1, 1, 1), (2, 2, 2), (5, 10, 15)),
    ((26, 166, 164), (5.0, 0.7949, 0.7949), (1.0, 1.0, 1.0), (130, 132, 130)),  # 131.96 -> 132, 130.36 -> 130
    ((10, 10, 10), (1, 1, 1), (3, 3, 3), (3, 3, 3)),  # 3.33 rounds down
    ((3, 7, 100), (1, 1, 0.8), (1, 0.5, 1.5), (3, 14, 53)),  # 53.33
    ((1, 2, 3), (1, 1, 1), (10, 10, 10), (1, 1, 1)),  # at least one voxel
])
def test_target_shape(shape, spacing, new_spacing, expected):
    assert target_shape(shape, spacing, new_spacing) == expected


@pytest.mark.parametrize("shape, spacing, new_spacing", [
    ((13, 17, 19), (2.5, 0.8, 0.8), (1.0, 1.0, 1.0)),
    ((13, 17, 19), (1.0, 1.0, 1.0), (3.0, 1.7, 2.2)),  # coarser: 13 -> 4 -> 13
    ((5, 31, 30), (5.0, 0.7949, 0.7949), (1.5, 1.5, 1.5)),
])
def test_round_trip_returns_original_shape(shape, spacing, new_spacing):
    image = smooth_volume(shape)
    new_shape = target_shape(shape, spacing, new_spacing)
    there = resample_image(image, new_shape)
    assert there.shape == new_shape
    back = resample_image(there, shape)
    assert back.shape == shape and back.dtype == np.float32
    labels = (image > 0).astype(np.uint8) * 3
    assert resample_labels(resample_labels(labels, new_shape), shape).shape == shape
    assert resample_masks(resample_masks(labels[None] > 0, new_shape), shape).shape == (1, *shape)
    if min(n / m for n, m in zip(new_shape, shape)) >= 1:  # upsampling then back loses little of a smooth volume
        assert np.abs(back - image).max() < 0.1 * np.abs(image).max()


@pytest.mark.parametrize("shape", [(7, 9, 11), (20, 5, 8), (9, 9, 9)])
def test_linear_ramp_is_exact(shape):
    """A linear function is reproduced exactly where the source coordinate is inside the grid, clamped outside."""
    src = (6, 7, 8)
    a, b, c, e = 1.5, -0.75, 0.25, 3.0
    d, h, w = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in src], indexing="ij")
    ramp = (a * d + b * h + c * w + e).astype(np.float32)
    out = resample_image(ramp, shape, order=1)
    cd, ch, cw = np.meshgrid(*[source_coordinates(n, m) for n, m in zip(src, shape)], indexing="ij")
    inside = (cd >= 0) & (cd <= src[0] - 1) & (ch >= 0) & (ch <= src[1] - 1) & (cw >= 0) & (cw <= src[2] - 1)
    assert inside.sum() > 0.3 * inside.size
    exact = a * cd + b * ch + c * cw + e
    np.testing.assert_allclose(out[inside], exact[inside], atol=1e-5)
    clamped = a * np.clip(cd, 0, src[0] - 1) + b * np.clip(ch, 0, src[1] - 1) + c * np.clip(cw, 0, src[2] - 1) + e
    np.testing.assert_allclose(out, clamped, atol=1e-5)


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("shape", [(14, 5, 17), (3, 9, 30)])
def test_matches_map_coordinates_reference(order, shape):
    image = np.random.default_rng(7).random((7, 9, 11)).astype(np.float32)
    expected = reference_map_coordinates(image, shape, order)
    np.testing.assert_allclose(resample_image(image, shape, order=order), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(14, 5, 17), (3, 9, 30), (7, 18, 4)])
def test_linear_matches_torch_interpolate(shape):
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(8).random((7, 9, 11)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=shape, mode="trilinear",
                                               align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(resample_image(image, shape, order=1), expected, atol=1e-5)


def test_cubic_reproduces_a_quadratic_better_than_linear():
    n_in, n_out = 40, 57
    x = np.arange(n_in, dtype=np.float64)
    volume = np.broadcast_to(((x - 20) ** 2 / 40)[:, None, None], (n_in, 3, 3)).astype(np.float32)
    coords = source_coordinates(n_in, n_out)
    exact = (coords - 20) ** 2 / 40
    interior = slice(8, -8)  # away from the edges, where the spline prefilter's boundary handling matters
    cubic = resample_image(volume, (n_out, 3, 3), order=3)[:, 1, 1]
    linear = resample_image(volume, (n_out, 3, 3), order=1)[:, 1, 1]
    cubic_error = np.abs(cubic - exact)[interior].max()
    linear_error = np.abs(linear - exact)[interior].max()
    assert cubic_error < 1e-3
    assert linear_error > 10 * cubic_error


def test_channel_stack_resamples_each_channel():
    stack = np.stack([smooth_volume((6, 7, 8), seed=s) for s in range(3)])
    out = resample_image(stack, (9, 5, 12))
    assert out.shape == (3, 9, 5, 12)
    for c in range(3):
        np.testing.assert_array_equal(out[c], resample_image(stack[c], (9, 5, 12)))


def test_same_shape_is_a_copy():
    image = smooth_volume((4, 5, 6))
    out = resample_image(image, image.shape)
    np.testing.assert_array_equal(out, image)
    out[0, 0, 0] += 1
    assert out[0, 0, 0] != image[0, 0, 0]


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_labels_keep_values_and_sphere_volume(method):
    spacing = (1.0, 1.0, 1.0)
    shape = (48, 48, 48)
    labels = np.zeros(shape, np.int16)
    labels[ball(shape, (24, 24, 24), 14)] = 3
    labels[ball(shape, (24, 24, 24), 5)] = 7  # a small nested structure; non-contiguous label values
    shell = 4 / 3 * np.pi * (14 ** 3 - 5 ** 3)  # mm^3 of label 3
    for new_spacing in [(2.5, 0.7, 1.3), (0.8, 1.6, 1.6), (3.0, 3.0, 3.0)]:
        new_shape = target_shape(shape, spacing, new_spacing)
        out = resample_labels(labels, new_shape, method=method)
        assert out.shape == new_shape and out.dtype == labels.dtype
        assert set(np.unique(out)) == {0, 3, 7}  # nothing invented (no 5 = mean of 3 and 7), nothing lost
        voxel = np.prod([n * s / m for n, s, m in zip(shape, spacing, new_shape)])  # actual new voxel volume
        assert abs((out == 3).sum() * voxel - shell) / shell < 0.03, new_spacing
        back = resample_labels(out, shape, method=method)
        assert set(np.unique(back)) <= {0, 3, 7}
        assert (back == labels).mean() > 0.97


def test_labels_linear_constant_and_unknown_method():
    constant = np.full((4, 5, 6), 9, np.uint8)
    out = resample_labels(constant, (8, 3, 6), method="linear")
    assert out.shape == (8, 3, 6) and out.dtype == np.uint8 and (out == 9).all()
    with pytest.raises(ValueError, match="method"):
        resample_labels(constant, (8, 3, 6), method="cubic")


def test_labels_match_reference():
    """'linear' takes the label with the largest interpolated indicator; 'nearest' the nearest voxel's label."""
    rng = np.random.default_rng(9)
    labels = ndimage.median_filter(rng.integers(0, 3, (8, 9, 10)), size=3).astype(np.uint8)
    shape = (13, 5, 17)
    scores = np.stack([reference_map_coordinates((labels == v).astype(np.float32), shape, 1) for v in (0, 1, 2)])
    expected = np.argmax(scores, axis=0)
    out = resample_labels(labels, shape, method="linear")
    ties = np.sort(scores, axis=0)[-1] - np.sort(scores, axis=0)[-2] < 1e-5
    np.testing.assert_array_equal(out[~ties], expected[~ties])
    nearest = resample_labels(labels, shape, method="nearest")
    np.testing.assert_array_equal(nearest, reference_map_coordinates(labels, shape, 0).astype(np.uint8))


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_masks_overlapping(method):
    shape = (36, 36, 36)
    masks = np.stack([ball(shape, (18, 14, 18), 10), ball(shape, (18, 22, 18), 10)])  # overlapping spheres
    overlap = masks.all(axis=0)
    assert overlap.sum() > 500
    new_shape = (15, 45, 30)
    out = resample_masks(masks, new_shape, method=method)
    assert out.shape == (2, *new_shape) and out.dtype == bool
    voxel = np.prod([n / m for n, m in zip(shape, new_shape)])
    for k in range(2):
        assert abs(out[k].sum() * voxel - masks[k].sum()) / masks[k].sum() < 0.05
    assert abs(out.all(axis=0).sum() * voxel - overlap.sum()) / overlap.sum() < 0.1  # overlap is kept
    if method == "linear":  # each mask independently: threshold of its own trilinear interpolation
        reference = reference_map_coordinates(masks[1].astype(np.float32), new_shape, 1)
        decided = np.abs(reference - 0.5) > 1e-5
        np.testing.assert_array_equal(out[1][decided], (reference >= 0.5)[decided])
