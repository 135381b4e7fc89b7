"""Layer factories shared by the 2D and 3D networks (``spatial_dims`` picks Conv2d or Conv3d, ...)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["conv", "norm", "activation", "ConvBlock", "center_crop", "pad_to_multiple", "channels_last", "NORMS",
           "ACTIVATIONS"]

NORMS = ("batch", "instance", "none")
ACTIVATIONS = ("relu", "leaky_relu")


def conv(spatial_dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


class InstanceNorm2d(nn.InstanceNorm2d):
    """torch's ``InstanceNorm2d``, fast on the channels-last activations of the 2D U-Nets, where torch's kernel
    is slow: in training it runs on a contiguous copy; without gradients, in fp32, the statistics are taken
    over a (N, H*W, C) view of the memory."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 4 or self.track_running_stats or x.is_contiguous()
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        if torch.is_grad_enabled() or x.dtype not in (torch.float32, torch.float64):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view of the channels-last memory
        mean = rows.mean(1, keepdim=True)
        centred = rows - mean
        scale = centred.square().mean(1, keepdim=True).add_(self.eps).rsqrt_()
        if self.affine:
            scale = scale * self.weight.view(1, 1, c)
            return torch.addcmul(self.bias.view(1, 1, c), centred, scale).view(n, h, w, c).permute(0, 3, 1, 2)
        return (centred * scale).view(n, h, w, c).permute(0, 3, 1, 2)


def norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "instance":
        return {2: InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and activation (optional dropout at the end).

    ``padding="valid"`` shrinks each spatial size by 4, as in the original U-Net. In eval mode a batch norm is
    folded into the convolution before it: the same affine map with one pass over the activations less.
    """

    def __init__(self, spatial_dims, in_channels, out_channels, norm_kind="batch", act="relu", padding="same",
                 dropout=0.0):
        pad = {"same": 1, "valid": 0}[padding]
        bias = norm_kind == "none"
        layers = []
        for c_in in (in_channels, out_channels):
            layers += [conv(spatial_dims)(c_in, out_channels, 3, padding=pad, bias=bias),
                       norm(norm_kind, spatial_dims, out_channels), activation(act)]
        if dropout:
            layers.append({2: nn.Dropout2d, 3: nn.Dropout3d}[spatial_dims](dropout))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not isinstance(self[1], (nn.BatchNorm2d, nn.BatchNorm3d)):
            return super().forward(x)
        layers = list(self)
        for conv_, bn, act in (layers[0:3], layers[3:6]):  # eval: dropout is the identity
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            weight = conv_.weight * scale.view(-1, *[1] * (conv_.weight.dim() - 1))
            bias = bn.bias - bn.running_mean * scale
            x = act(conv_._conv_forward(x, weight, bias))
        return x


def center_crop(x: torch.Tensor, size) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to ``size`` around the centre (copy-and-crop skips)."""
    slices = [slice(None)] * (x.dim() - len(size))
    for have, want in zip(x.shape[-len(size):], size):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def pad_to_multiple(x: torch.Tensor, multiple: int, spatial_dims: int, mode: str = "replicate"):
    """Pad trailing spatial dims up to a multiple; returns the padded tensor and the original sizes."""
    sizes = tuple(x.shape[-spatial_dims:])
    pads = []
    for n in reversed(sizes):
        extra = (-n) % multiple
        pads += [extra // 2, extra - extra // 2]
    if any(pads):
        x = F.pad(x, pads, mode=mode)
    return x, sizes


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last layout for 4D tensors: oneDNN's fast path for 2D convolutions on CPU. 5D tensors are
    returned as they are: 3D networks with normalisation are slower in ``channels_last_3d``."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
