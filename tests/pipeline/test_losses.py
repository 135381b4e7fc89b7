"""Segmentation losses against hand-worked values, torch's own losses and MONAI's Dice loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seg25d.pipeline.losses import LOSSES, segmentation_loss, soft_dice


def _dice_reference(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice written out sample by sample and channel by channel."""
    scores = []
    for n in range(probs.shape[0]):
        for k in range(probs.shape[1]):
            p, t = probs[n, k].flatten(), target[n, k].flatten()
            scores.append((2 * float((p * t).sum()) + smooth) / (float(p.sum()) + float(t.sum()) + smooth))
    return torch.tensor(sum(scores) / len(scores), dtype=torch.float64)


def test_soft_dice_hand_value():
    probs = torch.tensor([[[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                          [[0.2, 0.2, 0.2, 0.2], [1.0, 1.0, 0.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                           [[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]])
    # (2*1.5 + 1) / (3.5 + 1) = 8/9;  empty/empty: 1/1;  (2*0.2 + 1) / (1.8 + 1) = 0.5;  (4 + 1) / (4 + 1) = 1
    expected = (8 / 9 + 1.0 + 0.5 + 1.0) / 4
    assert soft_dice(probs, target).item() == pytest.approx(expected, abs=1e-6)
    # without smoothing: 3/3.5, (skip the empty pair), 0.4/1.8, 1
    assert soft_dice(probs[:, :1], target[:, :1], smooth=0.0).item() == pytest.approx((3 / 3.5 + 0.4 / 1.8) / 2,
                                                                                       abs=1e-6)


def test_soft_dice_spatial_dims_and_reference():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 2, 4, 5, 6, generator=g)
    target = (torch.rand(3, 2, 4, 5, 6, generator=g) > 0.7).float()
    assert soft_dice(probs, target).double().item() == pytest.approx(_dice_reference(probs, target).item(), abs=1e-6)
    assert soft_dice(target, target).item() == pytest.approx(1.0)


def test_soft_dice_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, 7, generator=g)
    target = (torch.rand(2, 3, 6, 7, generator=g) > 0.6).float()
    reference = monai_losses.DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(logits, target)
    got = segmentation_loss(logits, target, sigmoid=True, kind="dice")
    assert got.item() == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("kind, sigmoid, channels", [("dice", True, 1), ("bce_dice", True, 2), ("dice", False, 3),
                                                     ("ce_dice", False, 3)])
def test_empty_target_and_prediction(kind, sigmoid, channels):
    classes = channels if sigmoid else channels - 1
    logits = torch.full((2, channels, 4, 4), -1e4)
    if not sigmoid:
        logits[:, 0] = 1e4  # all background
    logits.requires_grad_(True)
    masks = torch.zeros(2, classes, 4, 4)
    loss = segmentation_loss(logits, masks, sigmoid, kind)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_target_full_prediction_is_penalised_not_nan():
    logits = torch.full((1, 1, 8, 8), 20.0)
    loss = segmentation_loss(logits, torch.zeros(1, 1, 8, 8), True, "dice")
    assert torch.isfinite(loss) and loss.item() > 0.95  # 1 - 1/65


@pytest.mark.parametrize("ce_weight, dice_weight", [(1.0, 1.0), (0.25, 0.75)])
def test_bce_dice_equals_independent(ce_weight, dice_weight):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, 7, generator=g)
    masks = torch.rand(2, 3, 5, 6, 7, generator=g) > 0.5  # overlapping classes (multi-label), bool accepted
    expected = (ce_weight * F.binary_cross_entropy_with_logits(logits, masks.float())
                + dice_weight * (1 - _dice_reference(torch.sigmoid(logits), masks.float())))
    got = segmentation_loss(logits, masks, True, "bce_dice", ce_weight=ce_weight, dice_weight=dice_weight)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    assert segmentation_loss(logits, masks, True, "dice", dice_weight=dice_weight).item() == pytest.approx(
        dice_weight * (1 - _dice_reference(torch.sigmoid(logits), masks.float())).item(), abs=1e-5)


@pytest.mark.parametrize("ce_weight, dice_weight", [(1.0, 1.0), (2.0, 0.5)])
def test_ce_dice_equals_independent(ce_weight, dice_weight):
    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 3, (2, 6, 7), generator=g)  # 0 background, classes 1 and 2
    masks = torch.stack([index == 1, index == 2], dim=1)  # (N, K, H, W)
    logits = torch.randn(2, 3, 6, 7, generator=g)
    probs = torch.softmax(logits, dim=1)
    expected = (ce_weight * F.cross_entropy(logits, index)
                + dice_weight * (1 - _dice_reference(probs[:, 1:], masks.float())))
    got = segmentation_loss(logits, masks, False, "ce_dice", ce_weight=ce_weight, dice_weight=dice_weight)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_softmax_dice_matches_monai_without_background():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(4)
    index = torch.randint(0, 4, (2, 5, 6, 7), generator=g)
    masks = torch.stack([index == k for k in (1, 2, 3)], dim=1)
    logits = torch.randn(2, 4, 5, 6, 7, generator=g)
    reference = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, include_background=False,
                                      smooth_nr=1.0, smooth_dr=1.0)(logits, index[:, None])
    assert segmentation_loss(logits, masks, False, "dice").item() == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("kind, sigmoid, match", [
    ("ce_dice", True, "softmax"),
    ("bce_dice", False, "sigmoid"),
    ("focal", True, "loss kind"),
    ("focal", False, "loss kind"),
])
def test_kind_output_mismatch(kind, sigmoid, match):
    with pytest.raises(ValueError, match=match):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2 if sigmoid else 1, 4, 4), sigmoid, kind)


@pytest.mark.parametrize("kind, sigmoid", [("dice", True), ("bce_dice", True), ("dice", False), ("ce_dice", False)])
def test_gradients_finite_and_nonzero(kind, sigmoid):
    assert kind in LOSSES
    g = torch.Generator().manual_seed(5)
    channels = 2 if sigmoid else 3
    logits = (torch.randn(2, channels, 4, 5, 6, generator=g) * 30).requires_grad_(True)  # saturated logits too
    masks = torch.rand(2, 2, 4, 5, 6, generator=g) > 0.5
    if not sigmoid:
        masks[:, 1] &= ~masks[:, 0]  # exclusive classes
    loss = segmentation_loss(logits, masks, sigmoid, kind)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
