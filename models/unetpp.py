"""UNet++ (Zhou et al. 2018): a U-Net with nested, dense skip pathways, registered as ``unetpp``."""

from __future__ import annotations

import torch
from torch import nn

from seg25d.models.blocks import ACTIVATIONS, NORMS, ConvBlock, center_crop, channels_last, pad_to_multiple
from seg25d.models.feeding import Feeding
from seg25d.models.registry import register_model

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(nn.Module):
    """UNet++: a grid of conv nodes X^{i,j} (level ``i``, position ``j`` along the skip pathway).

    ``X^{i,0}`` is the encoder (``X^{0,0}`` on the input, ``X^{i,0}`` on the max-pooled ``X^{i-1,0}``). Every
    other node concatenates all earlier nodes of its level, ``X^{i,0}, ..., X^{i,j-1}``, with the upsampled node
    from the level below, ``up(X^{i+1,j-1})`` (a 2x2 transposed convolution), and applies two 3x3
    conv-norm-activation layers. The top row ``X^{0,1}, ..., X^{0,depth-1}`` are full-resolution outputs;
    ``X^{0,depth-1}`` is the ordinary U-Net output. Widths are ``base_channels * 2**i`` at level ``i``.

    Args:
        in_channels: input channels.
        out_channels: classes; outputs are logits.
        depth: number of levels (``depth - 1`` poolings), at least 2.
        base_channels: width of level 0, doubling per level.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: ``"relu"`` or ``"leaky_relu"``.
        deep_supervision: give every top node ``X^{0,j}`` (``j = 1 .. depth-1``) its own 1x1 head.

    Example:
        >>> net = UNetPlusPlus(3, 2, depth=3, base_channels=8, deep_supervision=True)
        >>> [y.shape[-2:] for y in net.train()(torch.zeros(2, 3, 37, 50))]
        [torch.Size([37, 50]), torch.Size([37, 50])]
        >>> net.eval()(torch.zeros(2, 3, 37, 50)).shape
        torch.Size([2, 2, 37, 50])

    Note:
        What ``forward`` returns depends on ``deep_supervision`` and the module's mode:

        - ``deep_supervision=False``: one tensor, the logits of ``X^{0,depth-1}``.
        - ``deep_supervision=True`` in training mode: a list of ``depth - 1`` tensors, the logits of
          ``X^{0,1}, ..., X^{0,depth-1}`` (shallowest first), each (B, out_channels, H, W), for a loss
          summed or averaged over them.
        - ``deep_supervision=True`` in eval mode: one tensor, the mean of those logits (the paper's
          "accurate mode" averages the outputs of all branches).

        Inputs of any size are accepted: they are padded (edge replication) to a multiple of ``2**(depth-1)``
        and the logits are cropped back to the input size.
    """

    feeding = Feeding("slices")

    def __init__(self, in_channels: int, out_channels: int, depth: int = 4, base_channels: int = 16,
                 norm: str = "batch", activation: str = "relu", deep_supervision: bool = False):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (UNet++ needs at least one nested node), got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.depth, self.deep_supervision = depth, bool(deep_supervision)
        widths = [base_channels * 2**i for i in range(depth)]
        block = dict(norm_kind=norm, act=activation)

        # nodes[i][j] is X^{i,j}; ups[i][j-1] upsamples X^{i+1,j-1} for X^{i,j}.
        self.nodes = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, w in enumerate(widths):
            row = nn.ModuleList([ConvBlock(2, in_channels if i == 0 else widths[i - 1], w, **block)])
            ups = nn.ModuleList()
            for j in range(1, depth - i):
                ups.append(nn.ConvTranspose2d(widths[i + 1], w, 2, stride=2))
                row.append(ConvBlock(2, (j + 1) * w, w, **block))
            self.nodes.append(row)
            self.ups.append(ups)
        self.pool = nn.MaxPool2d(2)
        n_heads = depth - 1 if self.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], out_channels, 1) for _ in range(n_heads))
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, in_channels, H, W) -> logits (B, out_channels, H, W), or a list of them (see the class Note)."""
        x, sizes = pad_to_multiple(x, 2 ** (self.depth - 1), 2)
        x = channels_last(x)
        grid: list[list[torch.Tensor]] = [[] for _ in range(self.depth)]
        for i in range(self.depth):
            grid[i].append(self.nodes[i][0](x if i == 0 else self.pool(grid[i - 1][0])))
        # Fill anti-diagonals: X^{i,j} needs X^{i+1,j-1}, so go by j and, within it, any level order.
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                up = self.ups[i][j - 1](grid[i + 1][j - 1])
                grid[i].append(self.nodes[i][j](torch.cat([*grid[i][:j], up], dim=1)))
        if not self.deep_supervision:
            return center_crop(self.heads[0](grid[0][-1]), sizes).contiguous()
        outputs = [center_crop(head(node), sizes).contiguous() for head, node in zip(self.heads, grid[0][1:])]
        if self.training:
            return outputs
        return torch.stack(outputs).mean(dim=0)


@register_model("unetpp")
def unetpp(in_channels: int, out_channels: int, *, depth: int = 4, base_channels: int = 16, norm: str = "batch",
           activation: str = "relu", deep_supervision: bool = False) -> UNetPlusPlus:
    """UNet++ with nested dense skips; with ``deep_supervision`` it returns a list of logits in training mode."""
    return UNetPlusPlus(in_channels, out_channels, depth=depth, base_channels=base_channels, norm=norm,
                        activation=activation, deep_supervision=deep_supervision)
