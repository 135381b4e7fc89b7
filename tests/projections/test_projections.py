"""Tests of the projection operators (radon, its adjoint, MIP, slab means) against independent references.

References used: the dot-product test for adjointness, mass conservation, plain ``amax`` along volume axes for
MIP at axis-aligned angles, hand-computed Joseph interpolation at half-voxel offsets, finite differences for
the MIP gradient, analytic line integrals of Gaussians, and ``skimage.transform.radon``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seg25d.projections import (
    Geometry, MaxIntensityProjection, RayBackprojection, RayTransform, SlabMeanProjection,
    as_geometry, axis_geometry, direction_geometry, fibonacci_directions, multi_axis_geometry, project,
    projector_plan, sphere_geometry, uniform_angles,
)
from seg25d.reconstruction import backproject

pytestmark = [  # torch's notes on its beta sparse CSR tensors and on wrapping read-only numpy arrays
    pytest.mark.filterwarnings("ignore:Sparse:UserWarning"),
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

PI = math.pi


def _angles(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, PI, n)


# name -> factory; every kind of geometry, non-cubic volumes, anisotropic spacing, random angles
GEOMETRIES = {
    "axis-D": lambda: axis_geometry((5, 7, 9), _angles(5, 1), axis=0, spacing=(2.5, 1.0, 1.0)),
    "axis-H": lambda: axis_geometry((5, 7, 9), _angles(4, 2), axis=1, spacing=(1.5, 1.0, 0.8)),
    "axis-W": lambda: axis_geometry((8, 12, 10), _angles(3, 3), axis=2),
    "multi-axis": lambda: multi_axis_geometry((5, 7, 9), {0: _angles(3, 4), 1: 5, 2: _angles(2, 5)},
                                              spacing=(2.0, 1.0, 0.7)),
    "sphere": lambda: sphere_geometry((5, 7, 9), 4, spacing=(1.2, 1.0, 0.9)),
    "directions": lambda: direction_geometry(
        (6, 5, 7), [[0.0, 1.0, 0.2], [0.3, 0.5, 0.8], [1.0, 0.0, 1.0], [-0.4, 0.9, 0.0], [0.7, -0.2, 0.1]],
        spacing=(1.0, 1.1, 1.3)),
}
DTYPES = {torch.float32: 1e-5, torch.float64: 1e-12}


def _geometry(name: str) -> Geometry:
    return GEOMETRIES[name]()


def _rand(*shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _detector(geometry: Geometry, b: int, c: int, dtype=torch.float64, seed=1) -> torch.Tensor:
    return _rand(b, c, len(geometry), *geometry.detector_shape, dtype=dtype, seed=seed)


def _dot_error(lhs: torch.Tensor, rhs: torch.Tensor) -> float:
    """Relative error ``|lhs - rhs| / |lhs|`` of the two sides of a dot-product test (fixed seeds: no cancellation)."""
    assert float(lhs.abs()) > 1e-3
    return float((lhs - rhs).abs() / lhs.abs())


# ----------------------------------------------------------------------------------------------- geometry kinds


def test_geometry_factories_make_the_documented_kinds():
    kinds = {name: _geometry(name) for name in GEOMETRIES}
    assert kinds["axis-D"].axes == (0,) * 5 and kinds["axis-H"].axes == (1,) * 4
    assert kinds["axis-W"].axes == (2,) * 3
    assert kinds["multi-axis"].axes == (0,) * 3 + (1,) * 5 + (2,) * 2
    assert kinds["sphere"].axes == (-1,) * 4
    # (0, 1, .2) is perpendicular to D, (1, 0, 1) to H, (-.4, .9, 0) to W; the others are general
    assert kinds["directions"].axes == (0, -1, 1, 2, -1)
    for g in kinds.values():
        np.testing.assert_allclose(np.linalg.norm(g.rays, axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.einsum("pi,pi->p", g.rays, g.u_axes), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.einsum("pi,pi->p", g.rays, g.v_axes), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.einsum("pi,pi->p", g.u_axes, g.v_axes), 0.0, atol=1e-12)


def test_direction_geometry_axis_view_reproduces_its_direction():
    g = direction_geometry((6, 5, 7), [[-0.4, 0.9, 0.0]])
    assert g.axes == (2,)
    direction = np.array([-0.4, 0.9, 0.0]) / math.hypot(0.4, 0.9)
    # theta in [0, pi): the stored ray is the direction or its mirror image -direction
    assert 0.0 <= g.angles[0] < PI
    assert abs(abs(g.rays[0] @ direction) - 1.0) < 1e-12


# ------------------------------------------------------------------------------------------------- adjointness


@pytest.mark.parametrize("dtype", list(DTYPES), ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_ray_transform_dot_product_test(name, dtype):
    g = _geometry(name)
    x = _rand(2, 3, *g.shape, dtype=dtype)
    y = _detector(g, 2, 3, dtype)
    R = RayTransform(g)
    rx, rty = R(x), R.adjoint(y)
    assert rx.shape == y.shape and rx.dtype == dtype
    assert rty.shape == x.shape and rty.dtype == dtype
    assert _dot_error((rx * y).double().sum(), (x * rty).double().sum()) < DTYPES[dtype]
    # and through the public one-call functions
    lhs = (project(x, g, mode="radon") * y).double().sum()
    rhs = (x * backproject(y, g, shape=g.shape)).double().sum()
    assert _dot_error(lhs, rhs) < DTYPES[dtype]


@pytest.mark.parametrize("dtype", list(DTYPES), ids=["float32", "float64"])
@pytest.mark.parametrize("angles", [_angles(6, 7), 4, torch.tensor([0.3, 2.0])], ids=["array", "count", "tensor"])
def test_project_and_backproject_with_angles_are_adjoint(angles, dtype):
    shape, spacing = (4, 8, 6), (3.0, 0.9, 1.2)
    x = _rand(2, 2, *shape, dtype=dtype)
    rx = project(x, angles, mode="radon", spacing=spacing)
    g = as_geometry(angles, shape, spacing)
    assert g.spacing == spacing and set(g.axes) == {0}
    y = _detector(g, 2, 2, dtype)
    rty = backproject(y, angles, shape=shape, spacing=spacing)
    assert _dot_error((rx * y).double().sum(), (x * rty).double().sum()) < DTYPES[dtype]


def test_spacing_may_be_a_numpy_array():
    """Spacings read from image headers are often numpy arrays (no truth value)."""
    x = _rand(1, 1, 3, 4, 5)
    spacing = np.array([2.0, 0.5, 0.8])
    y = project(x, 3, mode="radon", spacing=spacing)
    torch.testing.assert_close(y, project(x, 3, mode="radon", spacing=(2.0, 0.5, 0.8)), rtol=0, atol=0)
    assert backproject(y, 3, shape=(3, 4, 5), spacing=spacing).shape == x.shape
    assert as_geometry(3, (3, 4, 5), None).spacing == (1.0, 1.0, 1.0)


def test_adjoint_of_adjoint_is_the_original_type():
    g = _geometry("multi-axis")
    R = RayTransform(g)
    assert isinstance(R.adjoint, RayBackprojection) and R.adjoint.geometry == g
    assert isinstance(R.adjoint.adjoint, RayTransform) and R.adjoint.adjoint.geometry == g
    assert isinstance(RayBackprojection(g).adjoint, RayTransform)
    with pytest.raises(NotImplementedError):
        MaxIntensityProjection(g).adjoint


def test_radon_matches_dense_matrix_of_its_own_adjoint():
    """Every column of R (R applied to unit voxels) equals the corresponding row of R* (R* on unit cells)."""
    g = multi_axis_geometry((2, 3, 4), {0: _angles(2, 8), 2: 1})
    n = int(np.prod(g.shape))
    m = len(g) * g.detector_shape[0] * g.detector_shape[1]
    forward = RayTransform(g)(torch.eye(n, dtype=torch.float64).view(n, 1, *g.shape)).reshape(n, m)
    backward = RayBackprojection(g)(torch.eye(m, dtype=torch.float64).view(m, 1, len(g), *g.detector_shape))
    torch.testing.assert_close(forward, backward.reshape(m, n).T, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------- mass conservation


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_radon_conserves_mass_at_every_view(name):
    g = _geometry(name)
    x = _rand(2, 3, *g.shape).abs() + 0.1
    y = RayTransform(g)(x)
    mass = x.sum(dim=(2, 3, 4)) * float(np.prod(g.spacing))
    for view in range(len(g)):
        got = y[:, :, view].sum(dim=(2, 3)) * g.du * g.row_spacing(view)
        torch.testing.assert_close(got, mass, rtol=1e-10, atol=0)


def test_radon_float32_conserves_mass():
    g = _geometry("multi-axis")
    x = _rand(1, 2, *g.shape, dtype=torch.float32).abs()
    y = RayTransform(g)(x)
    mass = x.double().sum(dim=(2, 3, 4)) * float(np.prod(g.spacing))
    for view in range(len(g)):
        got = y[:, :, view].double().sum(dim=(2, 3)) * g.du * g.row_spacing(view)
        torch.testing.assert_close(got, mass, rtol=1e-5, atol=0)


def test_radon_axis_views_leave_rows_outside_the_volume_zero():
    g = multi_axis_geometry((3, 7, 5), {0: 2, 1: 2, 2: 2})  # rows: 7 = longest rotation axis
    y = RayTransform(g)(torch.rand(1, 1, *g.shape, dtype=torch.float64) + 1)
    rows = g.detector_shape[0]
    for view, axis in enumerate(g.axes):
        offset = g.row_offset(axis)
        inside = np.zeros(rows, bool)
        inside[offset:offset + g.shape[axis]] = True
        assert bool((y[0, 0, view, ~inside] == 0).all())
        assert bool((y[0, 0, view, inside].sum(-1) > 0).all())


def test_radon_row_sums_are_the_volume_row_masses():
    """About D each detector row images one D-slice: its sum times du is that slice's mass."""
    g = axis_geometry((4, 6, 5), _angles(3, 9), spacing=(2.0, 0.5, 0.8))
    x = torch.rand(1, 1, *g.shape, dtype=torch.float64)
    y = RayTransform(g)(x)
    slice_mass = x[0, 0].sum(dim=(1, 2)) * 0.5 * 0.8
    torch.testing.assert_close(y[0, 0].sum(-1) * g.du, slice_mass.expand(3, 4), rtol=1e-12, atol=0)


def test_radon_at_zero_degrees_is_the_sum_along_h():
    shape, spacing = (3, 5, 7), (1.0, 1.4, 0.6)  # du = 0.6: one column per W voxel
    x = _rand(2, 1, *shape)
    y = project(x, [0.0], mode="radon", spacing=spacing)
    off = (y.shape[-1] - shape[2]) // 2
    torch.testing.assert_close(y[:, :, 0, :, off:off + shape[2]], x.sum(dim=3) * 1.4, rtol=1e-12, atol=1e-12)
    assert bool((y[..., :off] == 0).all()) and bool((y[..., off + shape[2]:] == 0).all())


def _gaussian_line_integrals(u: np.ndarray, theta: float, blobs) -> np.ndarray:
    """Exact line integrals of a sum of isotropic 2D Gaussians ``(a, ch, cw, sigma)`` about D at ``theta``."""
    out = np.zeros_like(u)
    for a, ch, cw, sigma in blobs:
        uc = -math.sin(theta) * ch + math.cos(theta) * cw
        out += a * math.sqrt(2 * PI) * sigma * np.exp(-((u - uc) ** 2) / (2 * sigma**2))
    return out


BLOBS = [(1.0, 3.0, -5.0, 4.0), (0.5, -8.0, 6.0, 6.0)]  # (amplitude, h, w offsets from the centre, sigma)


def _blob_image(n: int) -> np.ndarray:
    h, w = np.mgrid[:n, :n] - (n - 1) / 2
    return sum(a * np.exp(-((h - ch) ** 2 + (w - cw) ** 2) / (2 * s**2)) for a, ch, cw, s in BLOBS)


def _radon_error_vs_analytic(theta: float) -> float:
    image = _blob_image(65)
    y = project(torch.from_numpy(image)[None, None, None], [theta], mode="radon")[0, 0, 0, 0].numpy()
    u = np.arange(y.size) - (y.size - 1) / 2
    exact = _gaussian_line_integrals(u, theta, BLOBS)
    return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))


@pytest.mark.parametrize("theta", [0.0, 0.35, 1.05, PI / 2, 2.2, 2.9])
def test_radon_approximates_analytic_line_integrals(theta):
    """Smooth Gaussians: within 0.5% of the exact line integrals (skimage's radon: 0.3% on the same image)."""
    assert _radon_error_vs_analytic(theta) < 0.005


@pytest.mark.parametrize("theta", [PI / 4, 3 * PI / 4, math.atan(0.5)], ids=["45", "135", "atan-half"])
def test_radon_approximates_analytic_line_integrals_at_rational_slopes(theta):
    """Where voxel centres project onto a coarse lattice (45 degrees), splatting centres onto the two nearest
    columns ripples by ~7%; integrating each voxel's exact footprint over the columns does not."""
    assert _radon_error_vs_analytic(theta) < 0.005


# ------------------------------------------------------------------------------------------ skimage's radon


def _shepp_logan(n: int = 64) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


def test_radon_matches_skimage_radon():
    """Our radon of one D-slice against ``skimage.transform.radon(image, theta=degrees, circle=False)``.

    Convention mapping (worked out from both definitions and confirmed here):

    - Angles: our ``theta`` (radians, about D) is skimage's ``theta`` in degrees, with no detector flip. Both
      have the detector coordinate ``u = cos(theta) w - sin(theta) h`` of pixel ``(h, w)`` (rows h, columns
      w) relative to the rotation centre; at 0 both sum over rows (our H), at 90 degrees both sum over
      columns (our W) with the column index decreasing in h.
    - Centres: skimage rotates about pixel ``(N // 2, N // 2)`` and puts it at sinogram row ``L // 2`` of
      its ``L = ceil(sqrt(2) N)`` rows; we rotate about ``((N-1)/2, (N-1)/2)``, i.e. detector position
      ``(U-1)/2``. For even ``N`` the two centres differ by half a pixel along both axes, which shifts the
      sinograms by an angle-dependent ``(cos - sin) / 2``. Zero-padding the image by one row and column at
      the end (``N + 1``, odd) moves our centre onto skimage's pixel ``N // 2`` without changing any line
      sum; then for N = 64: L = 91 with centre 45, our U = 93 with centre 46, so our column ``k + 1`` is
      skimage's row ``k`` (our outermost two columns are empty).
    - Discretisation: skimage rotates with bilinear interpolation and sums; we integrate each voxel's exact
      footprint over the detector cells. Both are exact sums at 0 and 90 degrees (agree to rounding). At
      other angles they differ by interpolation: measured 0.64% at worst per angle and 0.31% over the
      whole sinogram, so 1% and 0.5% are the tolerances asserted.
    """
    from skimage.transform import radon

    image = _shepp_logan(64)
    degrees = np.arange(180) * 1.0
    reference = radon(image, theta=degrees, circle=False)  # (91, 180)
    padded = np.zeros((65, 65))
    padded[:64, :64] = image
    ours = project(torch.from_numpy(padded)[None, None, None], np.deg2rad(degrees), mode="radon")[0, 0, :, 0]
    ours = ours.numpy()
    assert reference.shape == (91, 180) and ours.shape == (180, 93)
    assert np.abs(ours[:, [0, -1]]).max() == 0.0
    ours = ours[:, 1:-1].T
    per_angle = np.linalg.norm(ours - reference, axis=0) / np.linalg.norm(reference, axis=0)
    for exact in (0, 90):
        np.testing.assert_allclose(ours[:, exact], reference[:, exact], rtol=1e-12, atol=1e-12)
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 0.005
    assert per_angle.max() < 0.01
    # a flipped detector would be far off: the convention above is not a tolerance artefact
    flipped = np.linalg.norm(ours[::-1, 30] - reference[:, 30]) / np.linalg.norm(reference[:, 30])
    assert flipped > 0.1


# --------------------------------------------------------------------------------------------------------- MIP


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,spacing", [((5, 7, 9), (2.5, 1.0, 1.0)), ((8, 12, 10), (1.0, 1.0, 1.0))])
def test_mip_at_zero_about_d_is_the_max_along_h(shape, spacing, dtype):
    g = axis_geometry(shape, [0.0], spacing=spacing)
    x = _rand(2, 3, *shape, dtype=dtype)
    y = MaxIntensityProjection(g)(x)
    U, W = g.detector_shape[1], shape[2]
    off = (U - W) // 2
    assert (U - W) % 2 == 0 and y.shape == (2, 3, 1, shape[0], U)
    assert torch.equal(y[:, :, 0, :, off:off + W], x.amax(dim=3))
    fill = x.amin(dim=(2, 3, 4))[:, :, None, None]
    assert torch.equal(y[:, :, 0, :, :off], fill.expand(-1, -1, shape[0], off))
    assert torch.equal(y[:, :, 0, :, off + W:], fill.expand(-1, -1, shape[0], U - off - W))


@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 12, 10)])
def test_mip_at_right_angle_about_d_is_the_max_along_w_reversed_in_h(shape):
    """At pi/2: r = e_W and e_u = -e_H, so column j holds h = (U+H)/2 - 1 - j (H, W of equal parity)."""
    g = axis_geometry(shape, [PI / 2])
    np.testing.assert_allclose(g.u_axes[0], [0.0, -1.0, 0.0], atol=1e-15)
    x = _rand(2, 2, *shape)
    y = MaxIntensityProjection(g)(x)
    U, H = g.detector_shape[1], shape[1]
    off = (U - H) // 2
    assert torch.equal(y[:, :, 0, :, off:off + H], x.amax(dim=4).flip(-1))


def test_mip_at_right_angle_with_half_voxel_offset_interpolates():
    """H and W of different parity: the rays run between two H rows; Joseph takes their mean (edges: the edge row)."""
    shape = (3, 6, 9)
    g = axis_geometry(shape, [PI / 2])
    x = _rand(1, 1, *shape)[0, 0]
    y = MaxIntensityProjection(g)(x[None, None])[0, 0, 0]
    U, H = g.detector_shape[1], shape[1]
    for j in range(U):
        h = (U - 1) / 2 + (H - 1) / 2 - j  # half-integer
        if h < -0.5 or h > H - 0.5:
            expected = x.min().expand(shape[0])
        else:
            h0, h1 = max(0, math.floor(h)), min(H - 1, math.ceil(h))
            expected = ((x[:, h0, :] + x[:, h1, :]) / 2).amax(dim=-1)
        torch.testing.assert_close(y[:, j], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("axis", [1, 2])
def test_mip_at_zero_about_h_and_w_is_the_max_along_d(axis):
    shape = (6, 7, 9) if axis == 1 else (6, 8, 5)
    g = axis_geometry(shape, [0.0], axis=axis)
    x = _rand(2, 1, *shape)
    y = MaxIntensityProjection(g)(x)[:, :, 0]
    expected = x.amax(dim=2)  # (B, C, H, W)
    if axis == 2:  # detector rows are W rows, columns run along H
        expected = expected.transpose(-1, -2)
    rows, cols = expected.shape[-2:]
    off = (g.detector_shape[1] - cols) // 2
    assert g.detector_shape[0] == rows
    assert torch.equal(y[..., off:off + cols], expected)


@pytest.mark.parametrize("negative", [False, True], ids=["mixed", "all-negative"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_mip_stays_within_the_volume_range(name, negative):
    g = _geometry(name)
    x = _rand(2, 3, *g.shape) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1, 1)
    if negative:
        x = -x.abs() - 2.0
    y = MaxIntensityProjection(g)(x)
    assert y.shape == (2, 3, len(g), *g.detector_shape)
    hi = x.amax(dim=(2, 3, 4))[:, :, None, None, None]
    lo = x.amin(dim=(2, 3, 4))[:, :, None, None, None]
    assert bool((y <= hi).all()) and bool((y >= lo).all())
    # no view is blank: some ray meets a voxel above the minimum
    assert bool((y.amax(dim=(3, 4)) > lo[..., 0, 0]).all())


def _miss_mask(g: Geometry, view: int) -> np.ndarray:
    """Detector cells whose ray passes farther than the volume's half-voxel-padded bounding sphere."""
    rows, cols = g.detector_shape
    axis = g.axes[view]
    radius_axes = [a for a in range(3) if a != axis] if axis >= 0 else [0, 1, 2]
    radius = 0.5 * math.sqrt(sum(((g.shape[a] + 1) * g.spacing[a]) ** 2 for a in radius_axes))
    u = (np.arange(cols) - (cols - 1) / 2) * g.du
    if axis >= 0:
        miss = np.broadcast_to(np.abs(u)[None, :] > radius, (rows, cols)).copy()
        outside_rows = np.ones(rows, bool)
        outside_rows[g.row_offset(axis):g.row_offset(axis) + g.shape[axis]] = False
        miss[outside_rows] = True
        return miss
    v = (np.arange(rows) - (rows - 1) / 2) * g.du
    return np.hypot(u[None, :], v[:, None]) > radius


@pytest.mark.parametrize("name", ["multi-axis", "sphere", "directions"])
def test_mip_rays_missing_the_volume_hold_its_minimum(name):
    g = _geometry(name)
    for sign in (1.0, -1.0):
        x = sign * (torch.rand(2, 2, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 1)
        y = MaxIntensityProjection(g)(x)
        lo = x.amin(dim=(2, 3, 4))
        checked = 0
        for view in range(len(g)):
            miss = torch.from_numpy(_miss_mask(g, view))
            checked += int(miss.sum())
            got = y[:, :, view][:, :, miss]
            assert torch.equal(got, lo[:, :, None].expand_as(got))
        assert checked > 0


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_shadows_hold_everything_the_volume_projects_and_lift_reads(name):
    """Outside each view's shadow box: Radon line sums vanish, MIPs hold the fill value (the volume's minimum)
    and lift reads nothing; with no margin the boxes are tight (their border cells see the volume)."""
    g = _geometry(name)
    x = torch.rand(1, 1, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 1
    sums = RayTransform(g)(x)[0, 0]
    y, argmax = MaxIntensityProjection(g).with_argmax(x)
    values = _detector(g, 1, 1)
    for margin in (0, 1):
        inside = torch.zeros(sums.shape, dtype=torch.bool)
        for view, (r0, r1, c0, c1) in enumerate(g.shadows(margin).tolist()):
            inside[view, r0:r1, c0:c1] = True
            if margin == 0:  # tight: the box's first and last rows and columns see the volume
                box = sums[view, r0:r1, c0:c1]
                assert min(box[0].max(), box[-1].max(), box[:, 0].max(), box[:, -1].max()) > 1e-6
        assert float(torch.where(inside, 0.0, sums).abs().max()) < 1e-9
        assert bool((y[0, 0][~inside] == x.min()).all())
        masked = torch.where(inside, values, torch.full_like(values, 1e6))
        torch.testing.assert_close(MaxIntensityProjection(g).lift(masked, argmax),
                                   MaxIntensityProjection(g).lift(values, argmax))
    assert g.shadows(0).shape == (len(g), 4) and (g.shadows(1)[:, ::2] <= g.shadows(0)[:, ::2]).all()


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_mip_bright_voxel_appears_in_every_view(name):
    g = _geometry(name)
    x = torch.zeros(1, 1, *g.shape, dtype=torch.float64)
    x[0, 0, g.shape[0] // 2, 1, g.shape[2] - 2] = 3.0
    y = MaxIntensityProjection(g)(x)
    peaks = y[0, 0].amax(dim=(1, 2))
    assert bool((peaks > 0).all()) and bool((peaks <= 3.0).all())


def test_mip_bright_voxel_is_exact_at_axis_aligned_angles():
    shape = (5, 7, 9)  # all odd: every axis-aligned view hits voxel centres
    g = multi_axis_geometry(shape, {0: [0.0, PI / 2], 1: [0.0, PI / 2], 2: [0.0, PI / 2]})
    x = torch.zeros(2, 1, *shape, dtype=torch.float64)
    x[0, 0, 1, 5, 2] = 3.0
    x[1, 0, 4, 0, 8] = 2.0  # a corner voxel
    y = MaxIntensityProjection(g)(x)
    assert torch.equal(y[0, 0].amax(dim=(1, 2)), torch.full((6,), 3.0, dtype=torch.float64))
    assert torch.equal(y[1, 0].amax(dim=(1, 2)), torch.full((6,), 2.0, dtype=torch.float64))
    assert int((y[0, 0] == 3.0).sum()) == 6  # exactly one ray per view


@pytest.mark.parametrize("name", ["axis-D", "multi-axis", "sphere", "directions"])
def test_mip_sliced_geometry_gives_the_same_views(name):
    g = _geometry(name)
    x = _rand(1, 2, *g.shape)
    full_mip, full_radon = MaxIntensityProjection(g)(x), RayTransform(g)(x)
    for index in (slice(1, 3), [0, len(g) - 1], -1):
        sub = g[index]
        views = np.atleast_1d(np.arange(len(g))[index])
        assert len(sub) == len(views) and sub.detector_shape == g.detector_shape and sub.du == g.du
        np.testing.assert_array_equal(sub.rays, g.rays[views])
        torch.testing.assert_close(MaxIntensityProjection(sub)(x), full_mip[:, :, views], rtol=0, atol=0)
        torch.testing.assert_close(RayTransform(sub)(x), full_radon[:, :, views], rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------- MIP gradient and lift


TINY = {  # small enough to perturb every voxel
    "axis-D": lambda: axis_geometry((2, 4, 3), _angles(3, 11)),
    "multi-axis": lambda: multi_axis_geometry((2, 4, 3), {0: _angles(2, 12), 1: 1, 2: [0.7]}, spacing=(1.5, 1, 1)),
    "sphere": lambda: sphere_geometry((2, 4, 3), 3),
}


def _central_differences(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    out = torch.zeros_like(x)
    for flat in range(x.numel()):
        bump = torch.zeros(x.numel(), dtype=x.dtype)
        bump[flat] = eps
        bump = bump.view_as(x)
        out.view(-1)[flat] = (f(x + bump) - f(x - bump)) / (2 * eps)
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_mip_gradient_is_lift_and_matches_finite_differences(name):
    """Away from ties MIP is linear in x; its gradient is checked voxel by voxel against central differences.

    Rays that miss the volume hold the fill value min(x); the derivative treats it as a constant (fill rays
    send nothing, see the next test), so the comparison weights only rays that meet the volume.
    """
    g = TINY[name]()
    mip = MaxIntensityProjection(g)
    x = torch.rand(1, 2, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y, argmax = mip.with_argmax(x)
    fill = x.amin(dim=(2, 3, 4))[:, :, None, None, None]
    weights = _detector(g, 1, 2, seed=6) * (y != fill)
    leaf = x.clone().requires_grad_(True)
    (mip(leaf) * weights).sum().backward()
    grad = leaf.grad
    torch.testing.assert_close(grad, mip.lift(weights, argmax), rtol=0, atol=0)
    fd = _central_differences(lambda v: (mip(v) * weights).sum(), x, 1e-7)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)
    # the gradient reaches only voxels that the maximum of some (weighted) ray depends on
    touched = torch.zeros_like(x, dtype=torch.bool)
    for flat in range(x.numel()):
        bump = torch.zeros(x.numel(), dtype=x.dtype)
        bump[flat] = 1e-6
        changed = (mip(x + bump.view_as(x)) != y) & (weights != 0)
        touched.view(-1)[flat] = bool(changed.any())
    assert bool((grad[~touched] == 0).all()) and bool((grad[touched] != 0).any())


@pytest.mark.parametrize("name", list(TINY))
def test_mip_fill_rays_send_no_gradient(name):
    g = TINY[name]()
    mip = MaxIntensityProjection(g)
    x = torch.rand(1, 1, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = mip(x)
    fill_rays = y == x.min()
    assert bool(fill_rays.any())
    leaf = x.clone().requires_grad_(True)
    (mip(leaf) * fill_rays).sum().backward()
    assert bool((leaf.grad == 0).all())


def test_mip_gradient_at_zero_is_the_argmax_along_h():
    x = _rand(2, 1, 3, 5, 4)
    g = axis_geometry((3, 5, 4), [0.0])
    x.requires_grad_(True)
    MaxIntensityProjection(g)(x).sum().backward()
    expected = torch.zeros_like(x).scatter_(3, x.detach().argmax(dim=3, keepdim=True), 1.0)
    # rays beyond the volume read the fill value (the minimum): they send nothing
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("name", ["axis-D", "multi-axis", "sphere"])
def test_mip_lift_gradcheck(name):
    geometries = {
        "axis-D": axis_geometry((2, 4, 3), _angles(3, 13)),
        "multi-axis": multi_axis_geometry((2, 4, 3), {0: 2, 2: _angles(1, 14)}),
        "sphere": sphere_geometry((2, 4, 3), 2),
    }
    g = geometries[name]
    mip = MaxIntensityProjection(g)
    _, argmax = mip.with_argmax(_rand(1, 1, *g.shape, seed=15))
    y = _detector(g, 1, 1, seed=16).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: mip.lift(t, argmax), (y,))


# ---------------------------------------------------------------------------------------------- slab MIP


def _bands(n: int, slabs: int) -> list[slice]:
    return [slice(j * n // slabs, (j + 1) * n // slabs) for j in range(slabs)]


@pytest.mark.parametrize("slabs", [2, 3])
@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 12, 10)])
def test_slab_mip_at_zero_about_d_is_the_max_over_bands_of_h(shape, slabs):
    """At angle 0 the rays run along H: slab j is the maximum over the j-th of ``slabs`` equal bands of H rows."""
    g = axis_geometry(shape, [0.0, PI / 2])
    x = _rand(2, 3, *shape)
    y = MaxIntensityProjection(g, slabs)(x)
    U, H, W = g.detector_shape[1], shape[1], shape[2]
    assert y.shape == (2, 3, 2 * slabs, shape[0], U)
    off_w, off_h = (U - W) // 2, (U - H) // 2
    for j, band in enumerate(_bands(H, slabs)):
        assert torch.equal(y[:, :, j, :, off_w:off_w + W], x[:, :, :, band].amax(dim=3))
    for j, band in enumerate(_bands(W, slabs)):  # at pi/2 the rays run along W (see the full-MIP test above)
        assert torch.equal(y[:, :, slabs + j, :, off_h:off_h + H], x[..., band].amax(dim=4).flip(-1))


def test_slab_mip_shows_a_voxel_hidden_behind_a_brighter_one():
    x = torch.zeros(1, 1, 3, 8, 6, dtype=torch.float64)
    x[0, 0, 1, 1, 2], x[0, 0, 1, 6, 2] = 2.0, 1.0  # same ray at angle 0 (along H), different depths
    g = axis_geometry(x.shape[2:], [0.0])
    full, slabs = MaxIntensityProjection(g)(x), MaxIntensityProjection(g, 2)(x)
    off = (g.detector_shape[1] - 6) // 2
    assert full[0, 0, 0, 1, off + 2] == 2.0
    assert slabs[0, 0, 0, 1, off + 2] == 2.0 and slabs[0, 0, 1, 1, off + 2] == 1.0


@pytest.mark.parametrize("name", ["axis-D", "axis-W", "multi-axis"])
def test_slab_maxima_give_the_full_mip_and_their_gradient_is_lift(name):
    g, slabs = _geometry(name), 3
    mip = MaxIntensityProjection(g, slabs)
    x = _rand(2, 2, *g.shape, seed=7)
    y, argmax = mip.with_argmax(x)
    full = MaxIntensityProjection(g)(x)
    assert torch.equal(y.unflatten(2, (len(g), slabs)).amax(dim=3), full)
    weights = _rand(*y.shape, seed=8)
    leaf = x.clone().requires_grad_(True)
    (mip(leaf) * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, mip.lift(weights, argmax), rtol=0, atol=0)
    # each slab image's maximum is a voxel of its ray: lifting ones puts one unit per ray meeting the volume
    fill = x.amin(dim=(2, 3, 4))[:, :, None, None, None]
    hits = mip.lift(torch.ones_like(y) * (y != fill), argmax)
    torch.testing.assert_close(hits.sum(dim=(2, 3, 4)), (y != fill).sum(dim=(2, 3, 4)).to(hits.dtype))


def test_slab_mip_invalid_inputs_raise():
    with pytest.raises(ValueError, match="slabs"):
        MaxIntensityProjection(axis_geometry((3, 4, 5), [0.0]), 0)
    with pytest.raises(ValueError, match="samples per ray"):
        MaxIntensityProjection(axis_geometry((3, 2, 5), [0.0]), 3)(_rand(1, 1, 3, 2, 5))
    with pytest.raises(NotImplementedError, match="coordinate axis"):
        MaxIntensityProjection(_geometry("sphere"), 2)(_rand(1, 1, *_geometry("sphere").shape))


# ---------------------------------------------------------------------------------------------- slab means


@pytest.mark.parametrize("slabs", [1, 3])
@pytest.mark.parametrize("name", ["axis-D", "axis-H", "multi-axis"])
def test_slab_means_and_lift_pass_dot_product_tests_with_their_gradients(name, slabs):
    """The means' gradient is their adjoint, and the lift's gradient (the bands' sums) is the lift's adjoint:
    each forward and backward is its own code."""
    g = _geometry(name)
    mean = SlabMeanProjection(g, slabs)
    x = _rand(2, 3, *g.shape, seed=21).requires_grad_(True)
    y = _rand(2, 3, len(g) * slabs, *g.detector_shape, seed=22).requires_grad_(True)
    mx, lifted = mean(x), mean.lift(y)
    assert mx.shape == y.shape and lifted.shape == x.shape
    ((mx * y.detach()).sum() + (lifted * x.detach()).sum()).backward()
    assert _dot_error((mx * y).sum().detach(), (x * x.grad).sum().detach()) < 1e-12
    assert _dot_error((lifted * x).sum().detach(), (y * y.grad).sum().detach()) < 1e-12


@pytest.mark.parametrize("slabs", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 12, 10)])
def test_slab_means_at_zero_about_d_are_the_means_over_bands_of_h(shape, slabs):
    """At angle 0 the rays run along H: slab j is the mean over the j-th of ``slabs`` equal bands of H rows."""
    g = axis_geometry(shape, [0.0, PI / 2])
    x = _rand(2, 3, *shape)
    y = SlabMeanProjection(g, slabs)(x)
    U, H, W = g.detector_shape[1], shape[1], shape[2]
    off_w, off_h = (U - W) // 2, (U - H) // 2
    for j, band in enumerate(_bands(H, slabs)):
        torch.testing.assert_close(y[:, :, j, :, off_w:off_w + W], x[:, :, :, band].mean(dim=3))
    for j, band in enumerate(_bands(W, slabs)):  # at pi/2 along W, the detector reversed as for MIP
        torch.testing.assert_close(y[:, :, slabs + j, :, off_h:off_h + H], x[..., band].mean(dim=4).flip(-1))
    assert torch.equal(y[:, :, :slabs, :, :off_w], torch.zeros_like(y[:, :, :slabs, :, :off_w]))  # rays missing it
    # the lift puts each image value on every voxel of its band
    images = _rand(2, 3, 2 * slabs, *g.detector_shape, seed=5)
    at_zero = torch.cat([images[:, :, j, :, None, off_w:off_w + W].expand(-1, -1, -1, band.stop - band.start, -1)
                         for j, band in enumerate(_bands(H, slabs))], dim=3)
    at_half_pi = torch.cat([images[:, :, slabs + j, :, off_h:off_h + H].flip(-1)[..., None]
                            .expand(-1, -1, -1, -1, band.stop - band.start) for j, band in enumerate(_bands(W, slabs))],
                           dim=4)
    torch.testing.assert_close(SlabMeanProjection(g, slabs).lift(images), at_zero + at_half_pi)


def test_slab_means_of_a_constant_are_the_constant_where_a_band_meets_the_volume():
    g = _geometry("multi-axis")
    y = SlabMeanProjection(g, 2)(torch.full((1, 1, *g.shape), 3.0, dtype=torch.float64))
    met = y != 0  # samples outside the volume are left out of the mean, not averaged in as zeros
    torch.testing.assert_close(y[met], torch.full_like(y[met], 3.0))
    assert met.double().mean() > 0.3


def test_slab_means_invalid_inputs_raise():
    with pytest.raises(ValueError, match="slabs"):
        SlabMeanProjection(axis_geometry((3, 4, 5), [0.0]), 0)
    with pytest.raises(ValueError, match="samples per ray"):
        SlabMeanProjection(axis_geometry((3, 2, 5), [0.0]), 3)(_rand(1, 1, 3, 2, 5))
    with pytest.raises(NotImplementedError, match="coordinate axis"):
        SlabMeanProjection(_geometry("sphere"), 2)(_rand(1, 1, *_geometry("sphere").shape))


# ------------------------------------------------------------------------------------------ geometry objects


def test_geometry_len_repr_and_groups():
    g = _geometry("multi-axis")
    assert len(g) == 10 and len(axis_geometry((4, 6, 6), 8)) == 8 and len(_geometry("sphere")) == 4
    text = repr(g)
    assert "shape=(5, 7, 9)" in text and "views=10" in text and "D: 3" in text and "H: 5" in text
    assert "W: 2" in text and f"detector_shape={g.detector_shape}" in text
    assert "(general: 2, D: 1, H: 1, W: 1)" in repr(_geometry("directions"))
    groups = g.view_groups
    assert sorted(groups) == [0, 1, 2]
    np.testing.assert_array_equal(groups[1], np.arange(3, 8))
    assert repr(RayTransform(g)).startswith("RayTransform(Geometry(")


def test_axis_geometry_detector_layout():
    g = axis_geometry((4, 6, 6), 8)
    assert g.detector_shape == (4, 10)  # ceil(6 sqrt 2) = 9, parity of W = 6 -> 10
    np.testing.assert_allclose(g.angles, uniform_angles(8))
    g = multi_axis_geometry((3, 8, 5), {0: 2, 1: 2}, spacing=(2.0, 1.0, 0.5))
    assert g.du == 0.5 and g.detector_shape[0] == 8
    diagonal = max(math.hypot(8 * 1.0, 5 * 0.5), math.hypot(3 * 2.0, 5 * 0.5))
    assert g.detector_shape[1] * g.du >= diagonal
    assert g.row_spacing(0) == 2.0 and g.row_spacing(3) == 1.0 and g.row_offset(0) == (8 - 3) // 2


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_equal_geometries_compare_hash_and_share_the_cached_plan(name):
    a, b = _geometry(name), _geometry(name)
    assert a is not b and a == b and hash(a) == hash(b)
    like = torch.zeros(1, dtype=torch.float64)
    assert projector_plan(a, like).plan is projector_plan(b, like).plan
    assert projector_plan(a, like).plan is not projector_plan(a, like.float()).plan
    # slices of equal geometries are equal too (general views have NaN angles)
    assert a[1:3] == b[1:3] and hash(a[1:3]) == hash(b[1:3]) and a[1:3] == a[1:3]
    # a slice reuses its parent's tables
    assert projector_plan(a[1:3], like).plan is projector_plan(a, like).plan
    assert a[:1] != a[1:2] and a != a[:-1] and a != "geometry"


def test_geometries_differ_in_any_field():
    base = axis_geometry((4, 6, 5), [0.1, 0.2])
    assert base != axis_geometry((4, 6, 5), [0.1, 0.2 + 1e-9])
    assert base != axis_geometry((4, 6, 5), [0.1, 0.2], spacing=(1.0, 1.0, 1.1))
    assert base != axis_geometry((4, 6, 5), [0.1, 0.2], axis=1)
    assert base != axis_geometry((5, 6, 5), [0.1, 0.2])


def test_fibonacci_directions_are_unit_and_roughly_uniform():
    n = 200
    v = fibonacci_directions(n)
    assert v.shape == (n, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    assert bool((v[:, 0] > 0).all()) and v[0, 0] > 0.99  # upper half sphere, first point near D
    # v and -v are the same projection direction: nearest neighbours by |cos|
    cos = np.abs(v @ v.T)
    np.fill_diagonal(cos, 0)
    nearest = np.arccos(np.clip(cos.max(axis=1), -1, 1))
    ideal = math.sqrt(2 * PI / n)  # spacing of n points evenly spread over the half sphere's area 2 pi
    assert 0.8 * ideal < nearest.mean() < 1.05 * ideal
    assert nearest.std() / nearest.mean() < 0.15 and nearest.min() > 0.5 * nearest.mean()
    # equal-area check: a cap of polar angle 60 degrees holds half the half sphere's area
    assert abs(np.mean(v[:, 0] > 0.5) - 0.5) < 0.02


def test_sphere_geometry_uses_fibonacci_directions():
    g = sphere_geometry((4, 5, 6), 7, spacing=(1.0, 0.8, 1.2))
    np.testing.assert_allclose(g.rays, fibonacci_directions(7), atol=1e-12)
    assert g.du == 0.8 and g.detector_shape[0] == g.detector_shape[1]
    assert g.detector_shape[1] * g.du >= math.sqrt(4**2 + 4**2 + 7.2**2)
    assert all(math.isnan(t) for t in g.angles)


def _bad(**changes):
    fields = dict(shape=(3, 4, 5), spacing=(1.0, 1.0, 1.0), axes=[0], angles=[0.0], rays=[[0, 1.0, 0]],
                  u_axes=[[0, 0, 1.0]], v_axes=[[1.0, 0, 0]], detector_shape=(3, 7), du=1.0)
    fields.update(changes)
    return lambda: Geometry(**fields)


@pytest.mark.parametrize("make", [
    _bad(shape=(4, 5)),
    _bad(shape=(0, 4, 5)),
    _bad(spacing=(1.0, -1.0, 1.0)),
    _bad(spacing=(1.0, 1.0)),
    _bad(angles=[0.0, 1.0]),
    _bad(detector_shape=(2, 7)),  # fewer rows than the 3 D-rows
    _bad(axes=[1], detector_shape=(3, 7)),  # 4 H-rows
    lambda: multi_axis_geometry((3, 4, 5), {3: 2}),
    lambda: multi_axis_geometry((3, 4, 5), {}),
    lambda: axis_geometry((3, 0, 5), 4),
    lambda: direction_geometry((3, 4, 5), [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
    lambda: direction_geometry((3, 4, 5), [[np.nan, 1.0, 0.0]]),
    lambda: direction_geometry((3, 4, 5), [[1.0, 0.0]]),
], ids=["2d-shape", "empty-shape", "negative-spacing", "short-spacing", "length-mismatch", "rows-D", "rows-H",
        "bad-axis", "no-axes", "zero-size", "zero-direction", "nan-direction", "2d-direction"])
def test_invalid_geometries_raise(make):
    with pytest.raises(ValueError):
        make()


def test_invalid_operator_inputs_raise():
    g = axis_geometry((3, 4, 5), 3)
    x = torch.zeros(1, 1, 3, 4, 5)
    with pytest.raises(ValueError, match="mode"):
        project(x, g, mode="sum")
    with pytest.raises(ValueError, match="shape"):
        project(torch.zeros(1, 1, 3, 4, 6), g)
    with pytest.raises(ValueError):
        RayTransform(g)(torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError):
        MaxIntensityProjection(g)(torch.zeros(1, 1, 3, 5, 4))
    y = RayTransform(g)(x)
    for bad in (y[:, :, :2], y[..., :-1], y[:, :, :, :-1], y[0]):
        with pytest.raises(ValueError):
            backproject(bad, g, shape=g.shape)
    with pytest.raises(ValueError):
        backproject(y, g, shape=(3, 4, 6))
    with pytest.raises(ValueError):
        MaxIntensityProjection(g).lift(y[:, :, :2], MaxIntensityProjection(g).with_argmax(x)[1])
