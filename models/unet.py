"""U-Net (Ronneberger et al. 2015) for 2D and 3D, registered as ``unet2d`` and ``unet3d``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from seg25d.models.blocks import ACTIVATIONS, NORMS, ConvBlock, center_crop, channels_last, conv, pad_to_multiple
from seg25d.models.feeding import Feeding
from seg25d.models.registry import register_model

__all__ = ["UNet", "valid_output_size"]


class UNet(nn.Module):
    """A configurable U-Net: contracting path, expanding path, skip connections, 1x1 head.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: input channels and output classes (the output is logits).
        depth: number of resolution levels (``depth - 1`` poolings).
        base_channels: channels at the first level, doubling per level.
        padding: ``"same"`` keeps sizes (inputs of any size are padded to a multiple of ``2**(depth-1)``
            and the output is cropped back); ``"valid"`` uses unpadded convolutions with copy-and-crop skips
            as in the paper, so the output is smaller than the input (see :func:`valid_output_size`).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: ``"relu"`` or ``"leaky_relu"``.
        upsampling: ``"transpose"`` (2x2 transposed convolution) or ``"bilinear"`` (interpolation + 1x1 conv;
            trilinear in 3D).
        dropout: dropout probability after the deepest block.

    Example:
        >>> net = UNet(2, 1, 2, depth=5, base_channels=64, padding="valid")
        >>> net(torch.zeros(1, 1, 572, 572)).shape[-2:]
        torch.Size([388, 388])

    Note:
        With ``padding="valid"`` the input size must make every pooled size even; 572 with depth 5 does.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 4, base_channels: int = 16,
                 padding: str = "same", norm: str = "batch", activation: str = "relu", upsampling: str = "transpose",
                 dropout: float = 0.0):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if norm not in NORMS or activation not in ACTIVATIONS:
            raise ValueError(f"norm must be one of {NORMS} and activation one of {ACTIVATIONS}")
        if upsampling not in ("transpose", "bilinear"):
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear', got {upsampling!r}")
        self.spatial_dims, self.depth, self.padding, self.upsampling = spatial_dims, depth, padding, upsampling
        widths = [base_channels * 2**i for i in range(depth)]
        block = dict(norm_kind=norm, act=activation, padding=padding)
        self.encoder = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            self.encoder.append(ConvBlock(spatial_dims, c, w, dropout=dropout if i == depth - 1 else 0.0, **block))
            c = w
        self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w in reversed(widths[:-1]):
            if upsampling == "transpose":
                self.up.append({2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims](c, w, 2, stride=2))
            else:
                self.up.append(conv(spatial_dims)(c, w, 1))
            self.decoder.append(ConvBlock(spatial_dims, 2 * w, w, **block))
            c = w
        self.head = conv(spatial_dims)(c, out_channels, 1)
        if spatial_dims == 2:
            self.to(memory_format=torch.channels_last)

    @property
    def feeding(self) -> Feeding:
        """2D: slice by slice; 3D: whole volumes or patches."""
        return Feeding("slices" if self.spatial_dims == 2 else "patches", padding=self.padding)

    def _upsample(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.upsampling == "transpose":
            return self.up[i](x)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return self.up[i](F.interpolate(x, scale_factor=2, mode=mode, align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        same = self.padding == "same"
        if same:
            x, sizes = pad_to_multiple(x, 2 ** (self.depth - 1), self.spatial_dims)
        x = channels_last(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i, block in enumerate(self.decoder):
            x = self._upsample(i, x)
            skip = skips.pop()
            if not same:
                skip = center_crop(skip, x.shape[2:])
            x = block(torch.cat([skip, x], dim=1))
        x = self.head(x)
        return (center_crop(x, sizes) if same else x).contiguous()


def valid_output_size(size: int, depth: int) -> int:
    """Output size of a ``padding="valid"`` U-Net for an input ``size`` (raises if a pooled size is odd)."""
    for level in range(depth - 1):
        size -= 4
        if size <= 0 or size % 2:
            raise ValueError(f"input size gives an odd or empty size {size} before pooling at level {level}")
        size //= 2
    size -= 4
    for _ in range(depth - 1):
        size = size * 2 - 4
    if size <= 0:
        raise ValueError("input too small for this depth")
    return size


@register_model("unet2d")
def unet2d(in_channels: int, out_channels: int, *, depth: int = 4, base_channels: int = 16, padding: str = "same",
           norm: str = "batch", activation: str = "relu", upsampling: str = "transpose", dropout: float = 0.0,
           encoder: str | None = None, encoder_weights: str | None = None) -> nn.Module:
    """2D U-Net (applied slice by slice to volumes by the pipeline); ``encoder`` builds it on a pretrained
    smp/timm encoder instead (:mod:`seg25d.models.encoders`)."""
    if encoder is not None or encoder_weights is not None:
        from seg25d.models.encoders import build_unet2d  # optional packages, imported on use

        return build_unet2d(in_channels, out_channels, encoder, encoder_weights, depth=depth,
                            base_channels=base_channels, padding=padding, norm=norm, activation=activation,
                            upsampling=upsampling, dropout=dropout)
    return UNet(2, in_channels, out_channels, depth=depth, base_channels=base_channels, padding=padding, norm=norm,
                activation=activation, upsampling=upsampling, dropout=dropout)


@register_model("unet3d")
def unet3d(in_channels: int, out_channels: int, *, depth: int = 4, base_channels: int = 8, padding: str = "same",
           norm: str = "instance", activation: str = "leaky_relu", upsampling: str = "transpose",
           dropout: float = 0.0) -> UNet:
    """3D U-Net, the in-house volumetric baseline (instance norm, as nnU-Net uses for small batches)."""
    return UNet(3, in_channels, out_channels, depth=depth, base_channels=base_channels, padding=padding, norm=norm,
                activation=activation, upsampling=upsampling, dropout=dropout)
