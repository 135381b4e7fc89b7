"""Slice-stack 2.5D (the Kaggle way): neighbouring slices as channels into a 2D network."""

from __future__ import annotations

import torch
from torch import nn

from seg25d.models.feeding import Feeding, feeding_of
from seg25d.models.registry import build, register_model

__all__ = ["SliceStack25D", "stack_indices"]


def stack_indices(depth: int, centers: torch.Tensor, slices: int, stride: int, edge: str = "clamp") -> torch.Tensor:
    """Slice indices ``(len(centers), slices)`` around each centre at ``stride``, kept inside ``[0, depth)``.

    ``edge="clamp"`` repeats the first/last slice; ``"mirror"`` reflects about it (``-1 -> 1``).

    Example:
        >>> stack_indices(5, torch.tensor([0, 4]), slices=3, stride=2, edge="mirror").tolist()
        [[2, 0, 2], [2, 4, 2]]
    """
    offsets = (torch.arange(slices, device=centers.device) - slices // 2) * stride
    idx = centers[:, None] + offsets[None, :]
    if edge == "mirror" and depth > 1:
        period = 2 * (depth - 1)
        idx = idx.remainder(period)
        idx = torch.where(idx >= depth, period - idx, idx)
    elif edge not in ("clamp", "mirror"):
        raise ValueError(f"edge must be 'clamp' or 'mirror', got {edge!r}")
    return idx.clamp(0, depth - 1)


class SliceStack25D(nn.Module):
    """A 2D network that sees ``slices`` neighbouring slices (at ``stride``) and predicts the centre one.

    ``forward`` takes either a volume ``(B, C, D, H, W)`` and returns logits ``(B, K, D, H, W)`` (every slice,
    ``slice_batch`` at a time), or ready stacks ``(N, C * slices, H, W)`` (training) and returns ``(N, K, H, W)``.

    Args:
        in_channels, out_channels: per-slice input channels; classes.
        slices: slices per stack (odd).
        stride: distance between stacked slices.
        edge: ``"clamp"`` or ``"mirror"`` at the first and last slices.
        backbone: a registered 2D network name; ``backbone_options`` its options.
        slice_batch: slices per forward pass when predicting a volume.
    """

    def __init__(self, in_channels: int, out_channels: int, slices: int = 3, stride: int = 1, edge: str = "clamp",
                 backbone: str = "unet2d", backbone_options: dict | None = None, slice_batch: int = 16):
        super().__init__()
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"slices must be a positive odd number, got {slices}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        stack_indices(1, torch.zeros(1, dtype=torch.long), 1, 1, edge)  # validates edge
        self.slices, self.stride, self.edge, self.slice_batch = slices, stride, edge, slice_batch
        self.in_channels = in_channels
        self.net = build(backbone, in_channels * slices, out_channels, **(backbone_options or {}))

    @property
    def feeding(self) -> Feeding:
        """Slice stacks in training, the whole volume at inference."""
        return Feeding("stacks", self.slices, self.stride, self.edge, padding=feeding_of(self.net).padding)

    def stack(self, volume: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Stacks for the given centre slices of every volume in the batch: ``(B * len(centers), C * k, H, W)``."""
        b, c, d, h, w = volume.shape
        idx = stack_indices(d, centers.to(volume.device), self.slices, self.stride, self.edge)
        stacks = volume[:, :, idx]  # (B, C, S, k, H, W)
        return stacks.permute(0, 2, 1, 3, 4, 5).reshape(b * len(centers), c * self.slices, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.net(x)
        if x.dim() != 5:
            raise ValueError(f"expected (B, C, D, H, W) or (N, C*slices, H, W), got {tuple(x.shape)}")
        b, d = x.shape[0], x.shape[2]
        outs = []
        for start in range(0, d, self.slice_batch):
            centers = torch.arange(start, min(d, start + self.slice_batch), device=x.device)
            y = self.net(self.stack(x, centers))
            outs.append(y.view(b, len(centers), *y.shape[1:]))
        return torch.cat(outs, dim=1).permute(0, 2, 1, 3, 4)


@register_model("slicestack25d")
def slicestack25d(in_channels: int, out_channels: int, *, slices: int = 3, stride: int = 1, edge: str = "clamp",
                  backbone: str = "unet2d", backbone_options: dict | None = None, slice_batch: int = 16) -> SliceStack25D:
    """Slice-stack 2.5D: e.g. 3 slices at stride 2 into a 2D U-Net (the strongest public GI-tract recipe)."""
    model = SliceStack25D(in_channels, out_channels, slices=slices, stride=stride, edge=edge, backbone=backbone,
                          backbone_options=backbone_options, slice_batch=slice_batch)
    # the backbone's resolved options: e.g. encoder_weights=None, the weights being in the state dict
    model.resolved_options = dict(slices=slices, stride=stride, edge=edge, backbone=backbone,
                                  backbone_options=model.net.config["options"], slice_batch=slice_batch)
    return model
