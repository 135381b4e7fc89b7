"""The fine-tuning operator T of the random 2.5D U-Net: average pooling, learnable normalisation, sigmoid."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FineTuning", "local_mean"]


class FineTuning(nn.Module):
    """``T(x) = sigmoid(a * avgpool(x) + b)`` per channel, as in the paper's random 2.5D U-Net.

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
            x = local_mean(x, self.pool)
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view) + self.shift.view(view)


def local_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the in-volume part of each ``size``^3 window (odd ``size``, stride 1, same shape) of
    ``(B, C, D, H, W)``, as ``avg_pool3d`` with ``count_include_pad=False`` computes it, also on volumes
    thinner than the window, which ``avg_pool3d`` refuses.

    Window and in-volume count both factor by axis: per axis a sum of shifted copies divided by the count,
    much faster than ``avg_pool3d`` on the CPU.
    """
    r = size // 2
    for dim in (2, 3, 4):
        n = x.shape[dim]
        total = x.clone()
        for shift in range(1, min(r, n - 1) + 1):
            total.narrow(dim, shift, n - shift).add_(x.narrow(dim, 0, n - shift))
            total.narrow(dim, 0, n - shift).add_(x.narrow(dim, shift, n - shift))
        index = torch.arange(n, device=x.device)
        count = (index + r).clamp(max=n - 1) - (index - r).clamp(min=0) + 1
        x = total.div_(count.to(x.dtype).view(-1, *([1] * (4 - dim))))
    return x
