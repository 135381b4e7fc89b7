"""Patch-wise prediction and losses with the network on each available device: the input may live elsewhere,
the logits come back where the input lives and agree with an all-CPU run (float32: within 1e-4 of the largest
logit, the order of convolution sums differing between kernels; exactly on the CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from seg25d.models import build
from seg25d.pipeline.inference import overlap_tile_2d, sliding_window_3d
from seg25d.pipeline.losses import segmentation_loss


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _agree(result, reference, device):
    tolerance = 0.0 if device.type == "cpu" else 1e-4 * float(reference.abs().max())
    torch.testing.assert_close(result.cpu(), reference, rtol=0, atol=tolerance)


@pytest.mark.parametrize("input_on_device", [False, True])
def test_overlap_tile_with_the_network_on_the_device(device, input_on_device):
    torch.manual_seed(0)
    net = build("unet2d", 1, 2, depth=2, base_channels=4).eval()
    image = _rand(2, 1, 30, 21)
    reference = overlap_tile_2d(net, image, tile=16, overlap=0.25)
    on_device = copy.deepcopy(net).to(device)
    given = image.to(device) if input_on_device else image
    out = overlap_tile_2d(on_device, given, tile=16, overlap=0.25)
    assert out.device == given.device and out.shape == reference.shape
    _agree(out, reference, device)


@pytest.mark.parametrize("input_on_device", [False, True])
def test_sliding_window_with_the_network_on_the_device(device, input_on_device):
    torch.manual_seed(0)
    net = build("unet3d", 1, 2, depth=2, base_channels=4).eval()
    volume = _rand(1, 1, 5, 14, 12)
    reference = sliding_window_3d(net, volume, roi=8, overlap=0.5, batch_size=2)
    on_device = copy.deepcopy(net).to(device)
    given = volume.to(device) if input_on_device else volume
    out = sliding_window_3d(on_device, given, roi=8, overlap=0.5, batch_size=2)
    assert out.device == given.device and out.shape == reference.shape
    _agree(out, reference, device)


@pytest.mark.parametrize("sigmoid, kind", [(True, "bce_dice"), (True, "dice"), (False, "ce_dice"), (False, "dice")])
def test_losses_on_the_device(device, sigmoid, kind):
    logits = _rand(2, 3, 4, 6, 5, seed=1) * 4 - 2
    masks = (_rand(2, 3 if sigmoid else 2, 4, 6, 5, seed=2) > 0.6).float()
    reference = segmentation_loss(logits.double(), masks, sigmoid, kind)
    x = logits.to(device).requires_grad_(True)
    loss = segmentation_loss(x, masks.to(device), sigmoid, kind)
    loss.backward()
    assert loss.device.type == device.type and x.grad.device.type == device.type
    torch.testing.assert_close(loss.double().cpu(), reference, rtol=1e-5, atol=1e-6)
