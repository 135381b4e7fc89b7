"""The projectors on every available device: results agree with a float64 CPU reference, the adjoint identity
holds there, autograd runs there, and the tables live there.

Tolerances: float32 results on any device within ``1e-5`` of the largest reference value (float32 sums of a
few hundred terms, in the order cuSPARSE or the CPU kernel picks); float64 on any device within ``1e-12``
relative; MIP maxima exact (the same samples and interpolation everywhere).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from seg25d.projections import (
    MaxIntensityProjection, RayBackprojection, RayTransform, SlabMeanProjection, axis_geometry, direction_geometry,
    multi_axis_geometry, projector_plan, resample_views, sphere_geometry,
)
from seg25d.projections.axis_tables import splat_matrix
from seg25d.reconstruction import Filtration, backproject, lift_mip

SHAPE = (5, 9, 8)
GEOMETRIES = {
    "axis": lambda: axis_geometry(SHAPE, 7),
    "axis, subset of views": lambda: axis_geometry(SHAPE, 7)[[5, 0, 2]],
    "three axes, spacing": lambda: multi_axis_geometry(SHAPE, {0: 3, 1: 2, 2: 2}, spacing=(2.0, 1.0, 1.5)),
    "general views": lambda: sphere_geometry(SHAPE, 3),
    "mixed": lambda: direction_geometry(SHAPE, [[0.0, 1.0, 0.3], [1.0, 1.0, 1.0], [0.2, 0.5, 0.9]]),
}


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _tensors(nested) -> list[torch.Tensor]:
    """The tensors of an argmax (per view group: a tensor, or a list of them for general views)."""
    if isinstance(nested, torch.Tensor):
        return [nested]
    return [t for item in nested for t in _tensors(item)]


def _close32(result: torch.Tensor, reference: torch.Tensor):
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.cpu().double(), reference, rtol=0, atol=1e-5 * float(reference.abs().max()))


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_radon_and_backprojection_agree_with_the_cpu(device, name):
    geometry = GEOMETRIES[name]()
    x, y = _rand(2, 2, *SHAPE), _rand(2, 2, len(geometry), *geometry.detector_shape, seed=1)
    radon, back = RayTransform(geometry), RayBackprojection(geometry)
    ref_radon, ref_back = radon(x), back(y)
    _close32(radon(x.float().to(device)), ref_radon)
    _close32(back(y.float().to(device)), ref_back)
    torch.testing.assert_close(radon(x.to(device)).cpu(), ref_radon, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back(y.to(device)).cpu(), ref_back, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_adjoint_identity_on_the_device(device, name):
    """<R x, y> = <x, R* y> (plain sums) in float64 on the device, and R** = R."""
    geometry = GEOMETRIES[name]()
    x = _rand(1, 3, *SHAPE, seed=2).to(device)
    y = _rand(1, 3, len(geometry), *geometry.detector_shape, seed=3).to(device)
    radon = RayTransform(geometry)
    lhs, rhs = (radon(x) * y).sum(), (x * radon.adjoint(y)).sum()
    assert lhs.device.type == device.type
    assert abs(float(lhs - rhs)) <= 1e-12 * abs(float(lhs))
    torch.testing.assert_close(radon.adjoint.adjoint(x), radon(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_mip_argmax_and_lifting_agree_with_the_cpu(device, name):
    geometry = GEOMETRIES[name]()
    x, y = _rand(2, 1, *SHAPE, seed=4), _rand(2, 3, len(geometry), *geometry.detector_shape, seed=5)
    mip = MaxIntensityProjection(geometry)
    ref_images, ref_argmax = mip.with_argmax(x.float())
    images, argmax = mip.with_argmax(x.float().to(device))
    assert torch.equal(images.cpu(), ref_images)  # the same samples, the same maxima
    pairs = list(zip(_tensors(argmax), _tensors(ref_argmax), strict=True))
    assert all(a.device.type == device.type and torch.equal(a.cpu(), r) for a, r in pairs)
    _close32(mip.lift(y.float().to(device), argmax), mip.lift(y, ref_argmax))
    _close32(lift_mip(y.float().to(device), x.float().to(device), geometry), lift_mip(y, x, geometry))


@pytest.mark.parametrize("name", ["axis, subset of views", "three axes, spacing"])
def test_slab_mip_and_means_agree_with_the_cpu(device, name):
    geometry = GEOMETRIES[name]()
    x = _rand(1, 2, *SHAPE, seed=6).float()
    mip = MaxIntensityProjection(geometry, slabs=2)
    assert torch.equal(mip(x.to(device)).cpu(), mip(x))
    means = SlabMeanProjection(geometry, slabs=2)
    _close32(means(x.to(device)), means(x.double()))
    y = _rand(1, 2, len(geometry) * 2, *geometry.detector_shape, seed=9)
    _close32(means.lift(y.float().to(device)), means.lift(y))


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_gradients_on_the_device_are_the_adjoints(device, name):
    """Autograd on the device: the Radon gradient is the backprojection, the MIP gradient its lifting."""
    geometry = GEOMETRIES[name]()
    x = _rand(1, 1, *SHAPE, seed=7).to(device).requires_grad_(True)
    w = _rand(1, 1, len(geometry), *geometry.detector_shape, seed=8).to(device)
    (RayTransform(geometry)(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, backproject(w, geometry, SHAPE), rtol=1e-12, atol=1e-12)
    x.grad = None
    mip = MaxIntensityProjection(geometry)
    (mip(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, mip.lift(w, mip.with_argmax(x.detach())[1]), rtol=1e-12, atol=1e-12)


def test_tables_are_made_on_the_device_and_reused(device):
    geometry = multi_axis_geometry(SHAPE, {0: 4, 2: 2})
    x = torch.zeros(1, 1, *SHAPE, device=device)
    plan = projector_plan(geometry, x).plan
    for group in plan.groups:
        assert {t.device.type for t in (group._crow, group._col, group._values)} == {device.type}
        for matrix in group.matrices(np.array([2, 0]) if len(group.views) > 2 else np.array([1])):
            assert matrix.device.type == device.type and matrix.layout == torch.sparse_csr
    assert projector_plan(geometry[[1, 4]], x).plan is plan  # subsets of views cut from the same tables


def test_resampling_and_filtration_on_the_device(device):
    fine, coarse = axis_geometry((8, 8, 8), 3, spacing=(1, 1, 2)), axis_geometry((4, 4, 4), 3, spacing=(2, 2, 4))
    y = _rand(1, 2, 3, *coarse.detector_shape, seed=9).float()
    _close32(resample_views(y.to(device), coarse, fine, 2.0), resample_views(y.double(), coarse, fine, 2.0))
    filtration = Filtration(kernel_size=9, views=3, channels=2, init="ramp")
    index = torch.tensor([2, 0, 1])
    with torch.no_grad():
        reference = filtration.double()(y.double(), index)
        _close32(filtration.float().to(device)(y.to(device), index.to(device)), reference)


@pytest.mark.parametrize("views", [[2, 7, 11], [9, 2, 14, 3], [5], list(range(16))])
def test_subset_matrices_are_scipy_s_row_blocks_and_transposes(device, views):
    """The matrices of a subset of views, put together on the device, hold exactly the entries (in CSR order) of
    scipy's row slice of the whole group's matrix and of its transpose."""
    geometry = axis_geometry((6, 10, 12), 16, spacing=(1.0, 0.8, 1.3))
    group = projector_plan(geometry, torch.zeros(1, 1, 6, 10, 12, device=device)).plan.groups[0]
    rows, cols, vals, shape = splat_matrix(geometry, np.arange(16))
    whole = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=shape)
    u = geometry.detector_shape[1]
    subset = whole[np.concatenate([np.arange(v * u, (v + 1) * u) for v in views])]
    subset.sort_indices()
    transpose = subset.T.tocsr()
    transpose.sort_indices()
    for matrix, expected in zip(group.matrices(np.array(views)), (subset, transpose)):
        assert matrix.device.type == device.type and matrix.shape == expected.shape
        assert np.array_equal(matrix.crow_indices().cpu().numpy(), expected.indptr)
        assert np.array_equal(matrix.col_indices().cpu().numpy(), expected.indices)
        assert np.array_equal(matrix.values().cpu().numpy(), expected.data.astype(np.float32))
