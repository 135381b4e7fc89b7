"""Segmentation losses on logits: soft Dice, BCE + Dice (sigmoid outputs), CE + Dice (softmax outputs)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["soft_dice", "segmentation_loss", "LOSSES"]

LOSSES = ("dice", "bce_dice", "ce_dice")


def soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean soft Dice over samples and channels of ``(N, K, ...)`` probabilities and targets.

    ``(2 |P.T| + s) / (|P| + |T| + s)`` per sample and channel: an empty target with an empty prediction
    scores 1, an empty target with a non-empty prediction tends to 0, never NaN.
    """
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return ((2 * inter + smooth) / (total + smooth)).mean()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, sigmoid: bool, kind: str = "bce_dice",
                      ce_weight: float = 1.0, dice_weight: float = 1.0) -> torch.Tensor:
    """Loss of ``logits`` (N, C, ...) against per-class ``masks`` (N, K, ...).

    Sigmoid outputs (``C == K``, multi-label or binary): ``dice`` or ``bce_dice``. Softmax outputs
    (``C == K + 1``, channel 0 background, classes exclusive): ``dice`` (foreground channels) or ``ce_dice``.
    """
    if kind not in LOSSES:
        raise ValueError(f"loss kind must be one of {LOSSES}, got {kind!r}")
    masks = masks.to(logits.dtype)
    if sigmoid:
        if kind == "ce_dice":
            raise ValueError("ce_dice needs softmax outputs (exclusive classes); use bce_dice for sigmoid outputs")
        dice = 1 - soft_dice(torch.sigmoid(logits), masks)
        if kind == "dice":
            return dice_weight * dice
        return ce_weight * F.binary_cross_entropy_with_logits(logits, masks) + dice_weight * dice
    if kind == "bce_dice":
        raise ValueError("bce_dice needs sigmoid outputs (multi-label or one class); use ce_dice for exclusive classes")
    probs = torch.softmax(logits, dim=1)
    dice = 1 - soft_dice(probs[:, 1:], masks)
    if kind == "dice":
        return dice_weight * dice
    index = torch.zeros(masks.shape[:1] + masks.shape[2:], dtype=torch.long, device=masks.device)
    for k in range(masks.shape[1]):
        index[masks[:, k] > 0.5] = k + 1
    return ce_weight * F.cross_entropy(logits, index) + dice_weight * dice
