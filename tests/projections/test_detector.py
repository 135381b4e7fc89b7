"""resample_views: moving projections between geometries of the same views on grids of different voxel size."""

from __future__ import annotations

import pytest
import torch

from seg25d.projections import (
    MaxIntensityProjection, axis_geometry, multi_axis_geometry, resample_views, sphere_geometry,
)

GEOMETRIES = {
    "axis D": lambda s: axis_geometry(s, 5),
    "three axes": lambda s: multi_axis_geometry(s, {0: 3, 1: 2, 2: 4}),
    "sphere": lambda s: sphere_geometry(s, 4),
}


@pytest.mark.parametrize("name", GEOMETRIES)
def test_same_geometry_is_the_identity(name):
    geometry = GEOMETRIES[name]((6, 8, 10))
    y = torch.rand(2, 3, len(geometry), *geometry.detector_shape, dtype=torch.float64)
    torch.testing.assert_close(resample_views(y, geometry, geometry, 1.0), y)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_coarse_projections_land_where_the_fine_ones_are(name):
    """The MIP of a 2x average-pooled box, moved onto the fine detector, covers the fine MIP's footprint."""
    fine, coarse = GEOMETRIES[name]((16, 20, 24)), GEOMETRIES[name]((8, 10, 12))
    x = torch.zeros(1, 1, 16, 20, 24, dtype=torch.float64)
    x[0, 0, 4:10, 6:12, 8:18] = 1.0
    moved = resample_views(MaxIntensityProjection(coarse)(torch.nn.functional.avg_pool3d(x, 2)), coarse, fine, 2.0)
    reference = MaxIntensityProjection(fine)(x)
    assert moved.shape == reference.shape
    agreement = ((moved > 0.5) == (reference > 0.5)).double().mean()
    assert agreement > 0.98
    # a shifted copy agrees clearly less: the alignment is not luck
    shifted = torch.roll(reference, 2, dims=-1)
    assert ((moved > 0.5) == (shifted > 0.5)).double().mean() < agreement - 0.01


def test_subsets_of_views_resample_like_the_whole():
    fine, coarse = GEOMETRIES["three axes"]((16, 20, 24)), GEOMETRIES["three axes"]((8, 10, 12))
    y = torch.rand(1, 2, len(coarse), *coarse.detector_shape, dtype=torch.float64)
    idx = [0, 4, 8]
    whole = resample_views(y, coarse, fine, 2.0)[:, :, idx]
    torch.testing.assert_close(resample_views(y[:, :, idx], coarse[idx], fine[idx], 2.0), whole)
