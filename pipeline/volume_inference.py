"""Whole-volume prediction for every model, on the preprocessed working grid, as its feeding says.

- ``volume`` (``projection25d``) and ``stacks`` (``slicestack25d``): the model takes the whole volume.
- ``slices`` (2D networks): slice by slice; overlap-tile inference for slices larger than ``tile`` or for
  valid-padding networks.
- ``patches`` (3D networks): the whole volume when it has at most ``max_voxels`` voxels, else a
  Gaussian-blended sliding window.
"""

from __future__ import annotations

import numpy as np
import torch

from seg25d.models.feeding import feeding_of
from seg25d.pipeline.device import autocast, module_device, to_device
from seg25d.pipeline.inference import overlap_tile_2d, sliding_window_3d

__all__ = ["predict_logits", "predict_probabilities", "logits_to_probabilities", "probabilities_to_masks"]


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, tile: int = 512, roi=(96, 96, 96),
                   max_voxels: int = 192**3, slice_batch: int = 8, precision: str = "fp32") -> torch.Tensor:
    """Float32 logits ``(B, C_out, D, H, W)`` of ``x`` ``(B, C, D, H, W)`` for any registered model (eval mode), on
    the model's device (``x`` is moved there once), under autocast in a resolved ``precision``."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    x = to_device(x, device)
    try:
        with autocast(device, precision):
            return _logits(model, x, tile, roi, max_voxels, slice_batch).float()
    finally:
        model.train(was_training)


def _logits(model, x, tile, roi, max_voxels, slice_batch):
    feeding = feeding_of(model)
    if feeding.kind in ("volume", "stacks"):
        return model(x)
    if feeding.kind == "patches":
        if x[0, 0].numel() <= max_voxels:
            return model(x)
        return sliding_window_3d(model, x, roi=tuple(min(r, n) for r, n in zip(roi, x.shape[2:])))
    b, c, d, h, w = x.shape
    valid = feeding.padding == "valid"
    outs = []
    for start in range(0, d, slice_batch):
        slices = x[:, :, start:start + slice_batch].transpose(1, 2).reshape(-1, c, h, w)
        if valid or max(h, w) > tile:
            y = overlap_tile_2d(model, slices, tile=min(tile, max(h, w)) if not valid else tile)
        else:
            y = model(slices)
        outs.append(y.view(b, -1, *y.shape[1:]).transpose(1, 2))
    return torch.cat(outs, dim=2)


def logits_to_probabilities(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Per-class probabilities ``(B, K, ...)``: sigmoid, or softmax without the background channel."""
    return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)[:, 1:]


def predict_probabilities(model: torch.nn.Module, image: np.ndarray, sigmoid: bool, tta: bool = False,
                          **kwargs) -> np.ndarray:
    """Per-class probabilities ``(K, D, H, W)`` for a preprocessed image ``(C, D, H, W)``.

    ``tta`` averages over flips of the H and W axes (four passes). The network runs on its own device.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    x = to_device(x, module_device(model))
    flips = [(), (3,), (4,), (3, 4)] if tta else [()]
    total = None
    for dims in flips:
        xi = x.flip(dims) if dims else x
        probs = logits_to_probabilities(predict_logits(model, xi, **kwargs), sigmoid)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return (total / len(flips))[0].cpu().numpy()


def probabilities_to_masks(probs: np.ndarray, sigmoid: bool, threshold: float = 0.5) -> np.ndarray:
    """Per-class probabilities ``(K, ...)`` -> boolean masks: threshold (sigmoid) or argmax with background."""
    if sigmoid:
        return probs >= threshold
    full = np.concatenate([1.0 - probs.sum(axis=0, keepdims=True), probs])
    winner = full.argmax(axis=0)
    return np.stack([winner == k + 1 for k in range(probs.shape[0])])
