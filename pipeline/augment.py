"""The GI-tract winners' augmentations beyond flips and rotation, in torch: shift-scale-rotate, grid distortion,
brightness and contrast (albumentations' ``ShiftScaleRotate``, ``GridDistortion``, ``RandomBrightnessContrast``).

:func:`augment_sample` draws from the step's generator only for the transforms it applies, so options left at 0
change nothing, not even the random stream. Geometric transforms act on the trailing (H, W) plane of
``(C, [D,] H, W)`` tensors: images interpolated bilinearly, masks by nearest neighbour, both reflected at the
border so that image and mask stay aligned.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["OPTIONS", "augment_sample", "affine_hw", "grid_distort_hw", "distortion_nodes", "brightness_contrast"]

# the augment.* keys read here, with the values that switch each transform off
OPTIONS = {
    "shift": 0.0,            # translate by U(-s, s) of the height and (independently) of the width
    "zoom": 0.0,             # scale by 1 + U(-z, z) about the centre
    "grid_distortion": 0.0,  # grid cells resized by 1 + U(-g, g) along H and W (albumentations' distort_limit)
    "grid_steps": 5,         # grid cells per axis for grid_distortion
    "brightness": 0.0,       # add U(-b, b) times the sample's standard deviation
    "contrast": 0.0,         # scale the deviations from the sample's mean by 1 + U(-c, c)
}


def _uniform(generator: torch.Generator, limit: float) -> float:
    return float((torch.rand((), generator=generator) * 2 - 1) * limit)


def _sample_hw(t: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """``grid_sample`` of the (H, W) planes of ``(C, [D,] H, W)`` on one ``(H, W, 2)`` grid, reflecting (masks:
    bool, ``nearest``)."""
    if t.dtype == torch.bool:
        return _sample_hw(t.float(), grid, "nearest") > 0.5
    h, w = t.shape[-2:]
    flat = t.reshape(-1, 1, h, w)
    out = F.grid_sample(flat, grid.to(t.dtype).expand(flat.shape[0], h, w, 2), mode=mode,
                        padding_mode="reflection", align_corners=False)
    return out.reshape(t.shape)


def affine_hw(t: torch.Tensor, degrees: float = 0.0, zoom: float = 1.0, shift=(0.0, 0.0),
              mode: str = "bilinear") -> torch.Tensor:
    """Rotate by ``degrees``, scale by ``zoom`` about the centre and translate by ``shift`` (fractions of H and W)
    the trailing (H, W) plane, in pixel units (no shear when H != W).

    Output pixel ``p`` (row, col, centre ``c``) samples input ``c + R(p - c) / zoom - shift * (H, W)``, with
    ``R = [[cos, sin], [-sin, cos]]`` of the angle.
    """
    h, w = t.shape[-2:]
    a = math.radians(degrees)
    c, s = math.cos(a) / zoom, math.sin(a) / zoom
    # affine_grid's coordinates are normalised per axis (x = W, y = H): rescale the off-diagonal terms
    theta = torch.tensor([[[c, -s * h / w, -2.0 * shift[1]], [s * w / h, c, -2.0 * shift[0]]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)[0]
    return _sample_hw(t, grid, mode)


def distortion_nodes(generator: torch.Generator, steps: int, limit: float) -> torch.Tensor:
    """Where the ``steps + 1`` evenly spaced grid lines of an axis (normalised, -1 to 1) move: each cell's size
    is scaled by ``1 + U(-limit, limit)``, the sizes then renormalised so that the edges stay put."""
    sizes = 1 + (torch.rand(steps, generator=generator) * 2 - 1) * limit
    return torch.cat([torch.zeros(1), torch.cumsum(sizes / sizes.sum(), 0)]) * 2 - 1


def grid_distort_hw(t: torch.Tensor, nodes_h: torch.Tensor, nodes_w: torch.Tensor,
                    mode: str = "bilinear") -> torch.Tensor:
    """Grid distortion of the trailing (H, W) plane: an evenly spaced grid line ``i`` of the output samples the
    input at ``nodes[i]`` (normalised coordinates), linearly in between, separately along H and W."""
    h, w = t.shape[-2:]

    def axis(n: int, nodes: torch.Tensor) -> torch.Tensor:
        steps = len(nodes) - 1
        u = (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1  # pixel centres, align_corners=False
        pos = (u + 1) / 2 * steps
        i = pos.floor().clamp(0, steps - 1).long()
        nodes = nodes.to(torch.float64)
        return nodes[i] + (pos - i) * (nodes[i + 1] - nodes[i])

    y, x = axis(h, nodes_h), axis(w, nodes_w)
    grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
    return _sample_hw(t, grid.float(), mode)


def brightness_contrast(x: torch.Tensor, brightness: float = 0.0, contrast: float = 1.0) -> torch.Tensor:
    """``mean + (x - mean) * contrast + brightness * std``, with the sample's mean and standard deviation
    (intensities are z-scored here, so the shift is in units of the sample's spread, not of a 0-255 range)."""
    mean, std = x.mean(), x.std()
    return mean + (x - mean) * contrast + brightness * std


def augment_sample(x: torch.Tensor, y: torch.Tensor, options: dict, generator: torch.Generator):
    """Image ``x`` and masks ``y`` (``(C, [D,] H, W)``) after the :data:`OPTIONS` transforms of ``options``
    (an ``augment`` config section; missing keys are off), in a fixed order: shift-scale, grid distortion,
    brightness-contrast."""
    opt = {**OPTIONS, **{k: options[k] for k in OPTIONS if k in options}}
    shift, zoom = float(opt["shift"]), float(opt["zoom"])
    if shift or zoom:
        offset = (_uniform(generator, shift), _uniform(generator, shift)) if shift else (0.0, 0.0)
        factor = 1 + _uniform(generator, zoom) if zoom else 1.0
        x, y = affine_hw(x, 0.0, factor, offset, "bilinear"), affine_hw(y, 0.0, factor, offset, "nearest")
    limit = float(opt["grid_distortion"])
    if limit:
        steps = int(opt["grid_steps"])
        nodes_h, nodes_w = distortion_nodes(generator, steps, limit), distortion_nodes(generator, steps, limit)
        x, y = grid_distort_hw(x, nodes_h, nodes_w, "bilinear"), grid_distort_hw(y, nodes_h, nodes_w, "nearest")
    brightness, contrast = float(opt["brightness"]), float(opt["contrast"])
    if brightness or contrast:
        b = _uniform(generator, brightness) if brightness else 0.0
        c = 1 + _uniform(generator, contrast) if contrast else 1.0
        x = brightness_contrast(x, b, c)
    return x, y
