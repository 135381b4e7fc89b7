"""Patch-wise inference for inputs larger than a network's tile: 2D overlap-tile and 3D Gaussian sliding window.

Both functions are pure apart from calling the network: they run under ``torch.no_grad()``, never change the
network's train/eval mode (put it in eval mode yourself for inference), copy the input once to the device of the
network's parameters (pinned, non-blocking from the CPU to a GPU), assemble the output there and return the
logits on the device of the input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from seg25d.pipeline.device import to_device

__all__ = ["overlap_tile_2d", "sliding_window_3d", "mirror_pad", "gaussian_importance_map", "window_starts",
           "largest_valid_tile"]


def _tuple(value, n: int, what: str) -> tuple:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{what} needs 1 or {n} values, got {value!r}")
    return values


def _mirror_indices(n: int, before: int, after: int, device) -> torch.Tensor:
    """Indices into an axis of length ``n`` that reflect it (no edge repeat) ``before``/``after`` times over."""
    k = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(k)
    period = 2 * (n - 1)
    k = torch.remainder(k, period)
    return torch.where(k < n, k, period - k)


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Reflect-pad the trailing ``len(pads)`` dims of ``x`` by ``(before, after)`` each, pads of any size.

    Same values as ``numpy.pad(..., mode="reflect")`` (the edge sample is not repeated); unlike
    ``torch.nn.functional.pad`` the padding may exceed the axis length (the reflection then repeats).
    """
    dims = range(x.dim() - len(pads), x.dim())
    for dim, (before, after) in zip(dims, pads):
        if before < 0 or after < 0:
            raise ValueError(f"pads must be >= 0, got {pads}")
        if before or after:
            x = x.index_select(dim, _mirror_indices(x.shape[dim], before, after, x.device))
    return x


def _network_device(net: nn.Module, fallback: torch.device) -> torch.device:
    for p in itertools.chain(net.parameters(), net.buffers()):
        return p.device
    return fallback


def _forward(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    out = net(batch)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the network must return one tensor of logits, got {type(out).__name__} "
                         "(a deep-supervision network returns a list in training mode: call net.eval())")
    return out


def largest_valid_tile(size: int, depth: int) -> int:
    """The largest input size ``<= size`` that a ``padding="valid"`` U-Net of this depth accepts."""
    from seg25d.models.unet import valid_output_size

    for candidate in range(size, 0, -1):
        try:
            valid_output_size(candidate, depth)
        except ValueError:
            continue
        return candidate
    raise ValueError(f"no input size <= {size} is valid for a valid-padding U-Net of depth {depth}")


def _run_tiles(net, padded, starts, tile, out_core, offset, out_size, batch_size):
    """Run ``net`` on ``tile``-sized crops of ``padded`` at ``starts``; write each output's ``out_core`` region
    (starting at ``offset`` inside the network output) to the output plane at the tile's start; crop to
    ``out_size``."""
    b, home = padded.shape[0], padded.device
    padded = to_device(padded, _network_device(net, home))
    (th, tw), (ch, cw), (oy, ox) = tile, out_core, offset
    plane = None
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        batch = torch.cat([padded[..., y:y + th, x:x + tw] for y, x in chunk])
        out = _forward(net, batch)
        if out.shape[-2] < oy + ch or out.shape[-1] < ox + cw:
            raise ValueError(f"network output {tuple(out.shape[-2:])} for a {th}x{tw} tile is smaller than expected")
        out = out[..., oy:oy + ch, ox:ox + cw].reshape(len(chunk), b, out.shape[1], ch, cw)
        if plane is None:
            rows = max(y for y, _ in starts) + ch
            cols = max(x for _, x in starts) + cw
            plane = out.new_zeros((b, out.shape[2], rows, cols))
        for (y, x), piece in zip(chunk, out):
            plane[..., y:y + ch, x:x + cw] = piece
    return plane[..., :out_size[0], :out_size[1]].to(home)


def overlap_tile_2d(net: nn.Module, image: torch.Tensor, tile: int | Sequence[int] = 256, overlap: float = 0.25,
                    batch_size: int = 4) -> torch.Tensor:
    """Segment a 2D image larger than a tile by the overlap-tile strategy (Ronneberger et al. 2015).

    The image is mirror-padded (reflection) at its borders so that every tile gets plausible context, and
    the output plane is covered seamlessly by the kept part of each tile's output: no blending; every output
    pixel comes from exactly one tile.

    - "same" networks (output size == input size): each tile of ``tile`` pixels discards a border of
      ``margin = round(tile * overlap / 2)`` pixels on every side and keeps its centre ``tile - 2*margin``;
      neighbouring tiles therefore overlap by ``2*margin`` (``overlap`` of the tile). The result equals the
      network applied to the whole image mirror-padded by ``margin`` (then cropped) as long as ``margin`` is at
      least the network's receptive-field radius, the tile and the kept centre are multiples of the network's
      total downsampling (e.g. ``2**(depth-1)`` for a U-Net, so the pooling grids line up) and the network is
      pixel-local given its context (eval mode; instance norm, which normalises over the whole input, is not).
      Away from the image border (further than the receptive-field radius) it then also equals the plain
      whole-image forward ``net(image)``.
    - "valid" networks (``net.padding == "valid"``, a :class:`seg25d.models.unet.UNet`): as in the paper, the
      output tile is smaller than the input tile by the border the network consumes. ``tile`` is the input
      tile, rounded down to the largest size the network accepts (:func:`largest_valid_tile`); the image is
      mirror-padded by that border, the output tiles are laid edge to edge, and each input tile carries its
      context. ``overlap`` is not used (the input tiles overlap by exactly the consumed border).

    Args:
        net: a 2D network returning one logits tensor (B, K, h, w); its mode is left as it is.
        image: (B, C, H, W), on any device; tiles go to the network's device.
        tile: input tile size, one int or (th, tw).
        overlap: "same" networks only: fraction of the tile shared with each neighbour, in [0, 1).
        batch_size: tiles per network call (each call sees ``batch_size * B`` samples).

    Returns:
        Logits (B, K, H, W) on the image's device, the dtype the network returns.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tile = _tuple(tile, 2, "tile")
    if min(tile) < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    size = tuple(image.shape[-2:])

    if getattr(net, "padding", None) == "valid":
        from seg25d.models.unet import valid_output_size

        depth = net.depth
        tile = tuple(largest_valid_tile(t, depth) for t in tile)
        core = tuple(valid_output_size(t, depth) for t in tile)
        borders = []
        for t, c in zip(tile, core):
            if (t - c) % 2:
                raise ValueError(f"the network consumes an odd border ({t - c}) for a tile of {t}")
            borders.append((t - c) // 2)
        offset = (0, 0)
    else:
        borders = [int(round(t * overlap / 2)) for t in tile]
        core = tuple(t - 2 * m for t, m in zip(tile, borders))
        if min(core) < 1:
            raise ValueError(f"overlap {overlap} leaves nothing of a {tile} tile")
        offset = tuple(borders)

    counts = [math.ceil(n / c) for n, c in zip(size, core)]
    pads = [(m, m + k * c - n) for m, k, c, n in zip(borders, counts, core, size)]
    starts = [(i * core[0], j * core[1]) for i in range(counts[0]) for j in range(counts[1])]
    with torch.no_grad():
        padded = mirror_pad(image, pads)
        return _run_tiles(net, padded, starts, tile, core, offset, size, batch_size)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of sliding windows of length ``roi`` over an axis of length ``size >= roi``.

    The step is ``int(roi * (1 - overlap))`` (at least 1); the windows start at multiples of it, and the last
    one is moved back to end exactly at ``size`` (MONAI's ``dense_patch_slices`` convention). ``roi == size``
    gives the single window 0.
    """
    if roi > size:
        raise ValueError(f"window {roi} is larger than the axis {size}")
    if roi == size:
        return [0]
    step = max(int(roi * (1 - overlap)), 1)
    n = math.ceil((size - roi) / step) + 1
    return [min(i * step, size - roi) for i in range(n)]


def gaussian_importance_map(roi: Sequence[int], sigma_scale: float | Sequence[float] = 0.125,
                            device=None) -> torch.Tensor:
    """Separable Gaussian weights over a window (nnU-Net / MONAI style blending), float32, shape ``roi``.

    Per axis ``exp(-x**2 / (2 sigma**2))`` with ``x`` the distance from the window centre ``(n-1)/2`` and
    ``sigma = sigma_scale * n``; the product is clamped from below at 1e-3 so that window corners still count.
    """
    sigma_scale = _tuple(sigma_scale, len(roi), "sigma_scale")
    if min(sigma_scale) <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    weights = torch.ones((), dtype=torch.float32, device=device)
    for n, s in zip(roi, sigma_scale):
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        g = torch.exp(x**2 / (-2 * (s * n) ** 2))
        weights = weights.unsqueeze(-1) * g
    return weights.clamp_min(1e-3)


def sliding_window_3d(net: nn.Module, volume: torch.Tensor, roi: int | Sequence[int] = (64, 64, 64),
                      overlap: float | Sequence[float] = 0.5, sigma_scale: float | Sequence[float] = 0.125,
                      batch_size: int = 1, pad_mode: str = "constant") -> torch.Tensor:
    """Segment a volume window by window, blending overlapping windows with Gaussian importance weights.

    Windows of size ``roi`` step by ``int(roi * (1 - overlap))`` per axis, the last one flush with the far
    edge (:func:`window_starts`). Each window's logits are weighted by :func:`gaussian_importance_map` (high
    in the centre, where the network sees the most context) and the weighted sum is divided by the summed
    weights. A volume smaller than ``roi`` along an axis is padded symmetrically to ``roi`` (zeros by
    default) and the output cropped back. The conventions are those of MONAI's
    ``sliding_window_inference(..., mode="gaussian")`` with constant padding, whose results this reproduces.

    Args:
        net: a 3D network mapping (n, C, *roi) to (n, K, *roi) logits; its mode is left as it is.
        volume: (B, C, D, H, W), on any device; windows go to the network's device.
        roi: window size, one int or (d, h, w).
        overlap: fraction of a window shared with the next one, in [0, 1), one value or one per axis.
        sigma_scale: Gaussian sigma as a fraction of the window size, one value or one per axis.
        batch_size: windows per network call (each call sees ``batch_size * B`` samples).
        pad_mode: padding for volumes smaller than ``roi``: ``"constant"`` (zeros), ``"replicate"`` or
            ``"reflect"``.

    Returns:
        Logits (B, K, D, H, W) on the volume's device, in the dtype the network returns.
    """
    if volume.dim() != 5:
        raise ValueError(f"volume must be (B, C, D, H, W), got shape {tuple(volume.shape)}")
    roi = tuple(int(r) for r in _tuple(roi, 3, "roi"))
    overlap = _tuple(overlap, 3, "overlap")
    if min(roi) < 1:
        raise ValueError(f"roi must be >= 1, got {roi}")
    if any(not 0 <= o < 1 for o in overlap):
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pad_mode not in ("constant", "replicate", "reflect"):
        raise ValueError(f"pad_mode must be 'constant', 'replicate' or 'reflect', got {pad_mode!r}")
    device = _network_device(net, volume.device)
    weights = gaussian_importance_map(roi, sigma_scale, device=device)

    size = tuple(volume.shape[2:])
    pads = [((max(r - n, 0)) // 2, max(r - n, 0) - max(r - n, 0) // 2) for r, n in zip(roi, size)]
    with torch.no_grad():
        if pad_mode == "reflect":
            padded = mirror_pad(volume, pads)
        elif any(p for pair in pads for p in pair):
            flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last dim first
            padded = F.pad(volume, flat, mode=pad_mode)
        else:
            padded = volume
        padded = to_device(padded, device)
        full = tuple(padded.shape[2:])
        starts = list(itertools.product(*(window_starts(n, r, o) for n, r, o in zip(full, roi, overlap))))
        b = volume.shape[0]
        total = weight_sum = None
        for first in range(0, len(starts), batch_size):
            chunk = starts[first:first + batch_size]
            windows = [padded[:, :, z:z + roi[0], y:y + roi[1], x:x + roi[2]] for z, y, x in chunk]
            out = _forward(net, torch.cat(windows))
            if tuple(out.shape[2:]) != roi:
                raise ValueError(f"the network maps a {roi} window to {tuple(out.shape[2:])}; it must keep the size")
            out = out.reshape(len(chunk), b, out.shape[1], *roi)
            if total is None:
                total = out.new_zeros((b, out.shape[2], *full))
                weight_sum = out.new_zeros(full)
            w = weights.to(out.dtype)
            for (z, y, x), piece in zip(chunk, out):
                region = (slice(z, z + roi[0]), slice(y, y + roi[1]), slice(x, x + roi[2]))
                total[(..., *region)] += piece * w
                weight_sum[region] += w
        total /= weight_sum
        crop = tuple(slice(before, before + n) for (before, _), n in zip(pads, size))
        return total[(..., *crop)].to(volume.device)
