"""Learnable filtration along the detector axis (the F of the random 2.5D U-Net)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Filtration", "ramp_kernel"]


def ramp_kernel(size: int, du: float = 1.0) -> torch.Tensor:
    """The Ram-Lak (ramp) filter as a discrete convolution kernel of odd ``size``, centred, for cell size ``du``.

    Spatial form of ``|omega|`` band-limited to the detector's Nyquist frequency: ``h[0] = 1 / (4 du^2)``,
    ``h[n] = -1 / (pi n du)^2`` for odd ``n``, 0 for even ``n``; the kernel is ``du * h`` so that a discrete
    convolution approximates the continuous one. With it, ``(pi / P) * backproject(filter(radon(x)))`` is
    filtered backprojection over ``P`` angles in ``[0, pi)``.
    """
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {size}")
    n = torch.arange(size, dtype=torch.float64) - size // 2
    h = torch.zeros(size, dtype=torch.float64)
    h[n == 0] = 1.0 / (4 * du**2)
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd] * du) ** 2
    return h * du


class Filtration(nn.Module):
    """A learnable 1D filter applied to every detector row (along U), via FFT.

    Args:
        columns: detector columns ``U``; only sets the default kernel size. The filter applies to any ``U``
            (taps farther than ``U - 1`` from the centre never meet data and are ignored).
        du: detector cell size in mm (scales the ramp initialisation).
        views: number of views with a filter of their own; 1 shares one filter over all views.
        channels: number of channels with a filter of their own; 1 shares it.
        init: ``"ramp"`` (times pi, so that F followed by a backprojection averaged over the views is
            filtered backprojection) or ``"identity"``.
        kernel_size: odd filter length; default ``2 * columns - 1`` (the ramp's full support on the detector).

    Shapes: ``(B, C, P, V, U)`` in and out; ``view_index`` (``P`` ints) picks each view's filter when
    filters are per view (random subsets of views during training).
    """

    def __init__(self, columns: int | None = None, du: float = 1.0, views: int = 1, channels: int = 1,
                 init: str = "ramp", kernel_size: int | None = None):
        super().__init__()
        if kernel_size is None:
            if columns is None:
                raise ValueError("give columns or kernel_size")
            kernel_size = 2 * columns - 1
        if init == "ramp":
            base = math.pi * ramp_kernel(kernel_size, du)
        elif init == "identity":
            base = torch.zeros(kernel_size, dtype=torch.float64)
            base[kernel_size // 2] = 1.0
        else:
            raise ValueError(f"init must be 'ramp' or 'identity', got {init!r}")
        self.init = init
        self.weight = nn.Parameter(base.float().expand(views, channels, kernel_size).clone())

    def extra_repr(self) -> str:
        views, channels, size = self.weight.shape
        return f"views={views}, channels={channels}, kernel_size={size}, init={self.init}"

    def forward(self, y: torch.Tensor, view_index: torch.Tensor | None = None) -> torch.Tensor:
        views, channels, size = self.weight.shape
        if channels not in (1, y.shape[1]):
            raise ValueError(f"filter has {channels} channels, projections have {y.shape[1]}")
        weight = self.weight
        if views > 1:
            index = view_index if view_index is not None else torch.arange(y.shape[2], device=y.device)
            weight = weight.index_select(0, index.to(y.device))
        columns = y.shape[-1]
        if size > 2 * columns - 1:  # taps beyond +-(U-1) never meet data
            cut = (size - (2 * columns - 1)) // 2
            weight, size = weight[..., cut:size - cut], 2 * columns - 1
        kernel = weight.permute(1, 0, 2)[:, :, None, :]  # (C or 1, P or 1, 1, L)
        n = _fast_length(columns + size - 1)
        spectrum = torch.fft.rfft(y, n) * torch.fft.rfft(kernel.to(y.dtype), n)
        return torch.fft.irfft(spectrum, n)[..., size // 2: size // 2 + columns]


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT sizes)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best
