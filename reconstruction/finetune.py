"""The fine-tuning operator T of the random 2.5D U-Net: average pooling, learnable normalisation, sigmoid."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FineTuning"]


class FineTuning(nn.Module):
    """``T(x) = sigmoid(a * avgpool(x) + b)`` per channel, as in the seed's random 2.5D U-Net.

    The module returns the logits ``a * avgpool(x) + b``; the sigmoid is applied by the loss (BCE, Dice
    on probabilities) and at inference, which is numerically safer and equal in effect.

    Args:
        channels: channels of the lifted volume (one per class).
        pool: average-pooling window (odd; stride 1, same size out).
        scale, shift: initial ``a`` and ``b``.
    """

    def __init__(self, channels: int = 1, pool: int = 3, scale: float = 10.0, shift: float = -5.0):
        super().__init__()
        if pool % 2 != 1:
            raise ValueError(f"pool must be odd, got {pool}")
        self.pool = pool
        self.scale = nn.Parameter(torch.full((channels,), float(scale)))
        self.shift = nn.Parameter(torch.full((channels,), float(shift)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = _mean_pool(x, self.pool)
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view) + self.shift.view(view)


def _mean_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the in-volume part of each ``size``^3 window (stride 1, same shape) of ``(B, C, D, H, W)``.

    ``avg_pool3d``'s own padding refuses volumes thinner than the window (e.g. one slice), so those are padded
    explicitly and divided by the number of in-volume voxels.
    """
    if min(x.shape[-3:]) >= size:
        return F.avg_pool3d(x, size, stride=1, padding=size // 2, count_include_pad=False)
    pad = (size // 2,) * 6
    total = F.avg_pool3d(F.pad(x, pad), size, stride=1, divisor_override=1)
    count = F.avg_pool3d(F.pad(torch.ones_like(x[:1, :1]), pad), size, stride=1, divisor_override=1)
    return total / count
