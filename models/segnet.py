"""SegNet (Badrinarayanan et al. 2017): VGG encoder, decoder upsampling by max-unpooling, registered as ``segnet``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg25d.models.blocks import ACTIVATIONS, NORMS, center_crop, channels_last, pad_to_multiple
from seg25d.models.blocks import activation as make_activation, norm as make_norm
from seg25d.models.feeding import Feeding
from seg25d.models.registry import register_model

__all__ = ["SegNet", "segnet_widths"]

_WIDTH_CAP = 8  # VGG-16 goes 64, 128, 256, 512, 512: the width stops doubling at 8x the first level


def segnet_widths(depth: int, base_channels: int) -> list[int]:
    """Encoder widths per level: ``base_channels`` doubling per level, capped at 8x (as in VGG-16)."""
    return [base_channels * min(2**i, _WIDTH_CAP) for i in range(depth)]


def _conv_bn_relu(c_in: int, c_out: int, norm: str, activation: str) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), make_norm(norm, 2, c_out),
            make_activation(activation)]


class SegNet(nn.Module):
    """SegNet: an encoder of VGG-style conv blocks whose max-pooling indices drive the decoder's upsampling.

    Every encoder level is ``convs_per_level`` 3x3 conv-norm-activation layers followed by
    ``nn.MaxPool2d(2, return_indices=True)``. The decoder mirrors it: each level first upsamples with
    ``nn.MaxUnpool2d(2)`` fed the pooling indices of the matching encoder level (every value goes back to the
    position its maximum came from; all other positions are zero), then densifies the sparse map with the same
    number of conv-norm-activation layers, the last of which reduces the width to that of the level above.
    There are no skip connections of feature maps (only indices travel), which is what makes SegNet small in
    memory. A 1x1 convolution maps the last decoder features to ``out_channels`` logits.

    Args:
        in_channels: input channels.
        out_channels: classes; the output is logits (no softmax).
        depth: number of levels, i.e. poolings and unpoolings (SegNet proper has 5).
        base_channels: width of the first level; it doubles per level and stops at 8x (see :func:`segnet_widths`).
        convs_per_level: conv-norm-activation layers per level (VGG-16 uses 2, 2, 3, 3, 3): one int for every
            level, or a sequence of ``depth`` ints from the top level down. The decoder mirrors the encoder.
        norm: ``"batch"`` (the paper's), ``"instance"`` or ``"none"``.
        activation: ``"relu"`` or ``"leaky_relu"``.

    Example:
        >>> net = SegNet(3, 2, depth=3, base_channels=8)
        >>> net(torch.zeros(2, 3, 37, 50)).shape
        torch.Size([2, 2, 37, 50])

    Note:
        Inputs of any size are accepted: they are padded (edge replication) to a multiple of ``2**depth`` so that
        every pooling sees even sizes, and the logits are cropped back to the input size. The pooling layers are
        ``self.pools[i]`` (encoder level ``i``) and the unpooling layers ``self.unpools[i]`` (they undo
        ``self.pools[i]``), so forward hooks can inspect the indices passed between them.
    """

    feeding = Feeding("slices")

    def __init__(self, in_channels: int, out_channels: int, depth: int = 4, base_channels: int = 16,
                 convs_per_level: int | Sequence[int] = 2, norm: str = "batch", activation: str = "relu"):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        convs = [convs_per_level] * depth if isinstance(convs_per_level, int) else list(convs_per_level)
        if len(convs) != depth or any(not isinstance(n, int) or n < 1 for n in convs):
            raise ValueError(f"convs_per_level must be an int >= 1 or {depth} ints >= 1, got {convs_per_level!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.depth = depth
        self.convs_per_level = tuple(convs)
        widths = segnet_widths(depth, base_channels)

        self.encoder = nn.ModuleList()
        c = in_channels
        for w, n in zip(widths, convs):
            layers = []
            for k in range(n):
                layers += _conv_bn_relu(c if k == 0 else w, w, norm, activation)
            self.encoder.append(nn.Sequential(*layers))
            c = w
        self.pools = nn.ModuleList(nn.MaxPool2d(2, return_indices=True) for _ in range(depth))
        self.unpools = nn.ModuleList(nn.MaxUnpool2d(2) for _ in range(depth))

        # decoder[i] follows unpools[i]; it runs deepest level first but is indexed like the encoder.
        self.decoder = nn.ModuleList()
        for i, (w, n) in enumerate(zip(widths, convs)):
            w_out = widths[i - 1] if i > 0 else w
            layers = []
            for k in range(n):
                layers += _conv_bn_relu(w, w_out if k == n - 1 else w, norm, activation)
            self.decoder.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W) logits."""
        x, sizes = pad_to_multiple(x, 2**self.depth, 2)
        x = channels_last(x)
        indices, shapes = [], []
        for block, pool in zip(self.encoder, self.pools):
            x = block(x)
            shapes.append(x.shape[-2:])
            x, idx = pool(x)
            indices.append(idx)
        for i in reversed(range(self.depth)):
            x = self.unpools[i](x, indices[i], shapes[i])
            x = self.decoder[i](x)
        return center_crop(self.head(x), sizes).contiguous()


@register_model("segnet")
def segnet(in_channels: int, out_channels: int, *, depth: int = 4, base_channels: int = 16,
           convs_per_level: int | Sequence[int] = 2, norm: str = "batch", activation: str = "relu") -> SegNet:
    """SegNet with real max-unpooling (encoder pooling indices drive the decoder's upsampling)."""
    return SegNet(in_channels, out_channels, depth=depth, base_channels=base_channels,
                  convs_per_level=convs_per_level, norm=norm, activation=activation)
