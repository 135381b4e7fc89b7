"""The GI recipes' augmentations against scipy.ndimage as the independent reference, and their random draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from seg25d.pipeline.augment import (OPTIONS, affine_hw, augment_sample, brightness_contrast, distortion_nodes,
                                     grid_distort_hw)


def _smooth(h=40, w=56, channels=2, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(ndimage.gaussian_filter(rng.normal(size=(channels, h, w)), (0, 3, 3))).float()


def _interior(a, margin=6):
    return a[..., margin:-margin, margin:-margin]


@pytest.mark.parametrize("degrees, zoom, shift", [(0.0, 1.0, (0.1, -0.05)), (0.0, 1.25, (0.0, 0.0)),
                                                  (17.0, 0.9, (0.0, 0.0)), (-30.0, 1.1, (0.05, 0.08))])
def test_affine_matches_scipy_in_pixel_units(degrees, zoom, shift):
    x = _smooth()
    h, w = x.shape[-2:]
    a = math.radians(degrees)
    matrix = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) / zoom  # (row, col)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = centre - matrix @ centre - np.array(shift) * (h, w)
    want = np.stack([ndimage.affine_transform(c, matrix, offset, order=1) for c in x.numpy()])
    got = affine_hw(x, degrees, zoom, shift).numpy()
    np.testing.assert_allclose(_interior(got, 10), _interior(want, 10), atol=1e-4)


def test_affine_keeps_volumes_slices_apart_and_masks_binary():
    vol = _smooth(channels=3)[:, None].expand(3, 4, -1, -1).clone()  # (C, D, H, W), every slice the same
    vol[:, 2] *= -1
    out = affine_hw(vol, 12.0, 1.1, (0.05, 0.0))
    torch.testing.assert_close(out[:, 2], -out[:, 0])
    mask = (_smooth(channels=1) > 0).float()
    assert set(affine_hw(mask, 12.0, 1.1, (0.05, 0.0), "nearest").unique().tolist()) <= {0.0, 1.0}


def test_grid_distortion_matches_piecewise_linear_coordinates():
    x = _smooth()
    h, w = x.shape[-2:]
    gen = torch.Generator().manual_seed(3)
    nodes_h, nodes_w = distortion_nodes(gen, 5, 0.3), distortion_nodes(gen, 5, 0.3)
    got = grid_distort_hw(x, nodes_h, nodes_w).numpy()

    def coords(n, nodes):  # output pixel -> input pixel (align_corners=False), by np.interp
        u = (np.arange(n) * 2 + 1) / n - 1
        v = np.interp(u, np.linspace(-1, 1, len(nodes)), nodes.numpy())
        return (v + 1) * n / 2 - 0.5

    rows, cols = np.meshgrid(coords(h, nodes_h), coords(w, nodes_w), indexing="ij")
    want = np.stack([ndimage.map_coordinates(c, [rows, cols], order=1) for c in x.numpy()])
    np.testing.assert_allclose(_interior(got, 3), _interior(want, 3), atol=1e-4)
    assert not np.allclose(got, x.numpy(), atol=1e-2)  # it did distort


def test_distortion_nodes_keep_the_edges_and_order():
    nodes = distortion_nodes(torch.Generator().manual_seed(0), 7, 0.5)
    assert len(nodes) == 8 and nodes[0] == -1 and abs(float(nodes[-1]) - 1) < 1e-6
    assert bool((nodes.diff() > 0).all())
    torch.testing.assert_close(distortion_nodes(torch.Generator(), 4, 0.0), torch.linspace(-1, 1, 5))


def test_brightness_contrast_moves_mean_and_spread():
    x = _smooth()
    out = brightness_contrast(x, brightness=0.3, contrast=1.5)
    assert float(out.mean()) == pytest.approx(float(x.mean() + 0.3 * x.std()), abs=1e-5)
    assert float(out.std()) == pytest.approx(float(1.5 * x.std()), rel=1e-5)


def test_options_off_change_nothing_and_draw_nothing():
    x, y = _smooth(), (_smooth(channels=3) > 0).float()
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    ox, oy = augment_sample(x, y, {"enabled": True, "flip_axes": [2], **OPTIONS}, gen)
    assert ox is x and oy is y
    assert torch.equal(gen.get_state(), state)


def test_augment_sample_is_seeded_and_keeps_image_and_masks_aligned():
    rows, cols = np.mgrid[:40, :56]
    discs = [(rows - 18) ** 2 + (cols - 25) ** 2 < 100, (rows - 25) ** 2 + (cols - 38) ** 2 < 60]
    y = torch.from_numpy(np.stack(discs)).float()
    x = y.clone()  # the image is the masks: after the same geometry they still agree
    options = {"shift": 0.1, "zoom": 0.15, "grid_distortion": 0.3, "brightness": 0.0, "contrast": 0.0}
    a = augment_sample(x, y, options, torch.Generator().manual_seed(1))
    b = augment_sample(x, y, options, torch.Generator().manual_seed(1))
    c = augment_sample(x, y, options, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert not torch.equal(a[1], y)
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}
    agree = float(((a[0] >= 0.5).float() == a[1]).float().mean())
    shifted = float(((a[0] >= 0.5).float() == a[1].roll(3, -1)).float().mean())
    assert agree > 0.98 and shifted < agree - 0.02  # aligned to within the boundary's interpolation


def test_the_sampler_applies_them(tmp_path):
    from seg25d.models.feeding import Feeding
    from seg25d.pipeline.data import BatchSampler, Case
    from seg25d.pipeline.io import synthetic_meta

    image = np.stack([_smooth(channels=4, seed=1).numpy()])  # (C=1, D=4, H, W)
    masks = image > 0.02
    case = Case("c", "c", image.astype(np.float32), masks, synthetic_meta(image.shape[1:], (1.0, 1.0, 1.0)))
    config = {"data": {"foreground_fraction": 0.5}, "train": {"slices_per_step": 4},
              "augment": {"enabled": True, "flip_axes": [], "scale_intensity": 0.0}}
    plain = BatchSampler([case], Feeding("slices"), config).batch(torch.Generator().manual_seed(0))
    config["augment"]["zoom"] = 0.3
    zoomed = BatchSampler([case], Feeding("slices"), config).batch(torch.Generator().manual_seed(0))
    assert not torch.equal(plain[0], zoomed[0]) and not torch.equal(plain[1], zoomed[1])
