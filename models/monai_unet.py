"""MONAI's 3D UNet as a registered peer for benchmarks (needs the optional ``monai`` package)."""

from __future__ import annotations

import math

import torch
from torch import nn

from seg25d.models.blocks import center_crop, pad_to_multiple
from seg25d.models.feeding import Feeding
from seg25d.models.registry import register_model

__all__ = ["monai_unet"]


@register_model("monai_unet")
def monai_unet(in_channels: int, out_channels: int, *, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
               num_res_units: int = 2) -> nn.Module:
    """``monai.networks.nets.UNet`` in 3D (residual units, strided convolutions): the external baseline.

    Raises ValueError when monai is not installed (``pip install seg25d[test]`` brings it).
    """
    try:
        from monai.networks.nets import UNet
    except ImportError:
        raise ValueError("monai_unet needs the optional monai package (pip install 'seg25d[test]')") from None

    multiple = math.prod(strides)

    class PaddedUNet(UNet):  # same parameters and state-dict keys as MONAI's UNet
        feeding = Feeding("patches")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Any input size: padded up to a multiple of the total stride, cropped back."""
            x, sizes = pad_to_multiple(x, multiple, 3)
            return center_crop(super().forward(x), sizes)

    return PaddedUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                      strides=tuple(strides), num_res_units=num_res_units)
