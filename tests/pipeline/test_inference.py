"""Patch-wise inference: overlap-tile (2D, same and valid networks) and Gaussian sliding window (3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seg25d.models.unet import UNet, valid_output_size
from seg25d.pipeline.inference import (gaussian_importance_map, largest_valid_tile, mirror_pad, overlap_tile_2d,
                                       sliding_window_3d, window_starts)

monai_inferers = pytest.importorskip("monai.inferers")


def _same_unet(depth: int) -> UNet:
    """A small same-padding U-Net in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(depth)
    net = UNet(2, 3, 2, depth=depth, base_channels=4)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _np_reflect(x: torch.Tensor, pads) -> torch.Tensor:
    width = [(0, 0)] * (x.dim() - len(pads)) + list(pads)
    return torch.from_numpy(np.pad(x.numpy(), width, mode="reflect"))


def _conv3d_net(k: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv3d(2, 4, k, padding=k // 2), nn.ReLU(), nn.Conv3d(4, 3, k, padding=k // 2)).eval()


# --- mirror padding ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, before, after", [(5, 2, 3), (4, 9, 7), (1, 3, 2), (6, 0, 11)])
def test_mirror_pad_matches_numpy_reflect_even_beyond_the_axis_length(n, before, after):
    x = torch.arange(2 * n * 3, dtype=torch.float32).view(2, n, 3)
    got = mirror_pad(x, [(before, after), (1, 2)])
    if n == 1:  # numpy refuses to reflect a single sample; the only sensible reflection repeats it
        expected = np.pad(x.numpy(), [(0, 0), (before, after), (0, 0)], mode="edge")
        expected = np.pad(expected, [(0, 0), (0, 0), (1, 2)], mode="reflect")
    else:
        expected = np.pad(x.numpy(), [(0, 0), (before, after), (1, 2)], mode="reflect")
    np.testing.assert_array_equal(got.numpy(), expected)


# --- overlap-tile, same networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("depth, tile, overlap, size", [
    (2, 64, 0.25, (144, 176)),  # margin 8 >= receptive-field radius of a depth-2 U-Net
    (3, 64, 0.75, (160, 136)),  # margin 24 for depth 3
])
def test_overlap_tile_same_net_equals_whole_image_forward(depth, tile, overlap, size):
    net = _same_unet(depth)
    image = torch.randn(2, 3, *size)
    out = overlap_tile_2d(net, image, tile=tile, overlap=overlap, batch_size=3)
    assert out.shape == (2, 2, *size)
    margin = round(tile * overlap / 2)
    core = tile - 2 * margin
    with torch.no_grad():
        # 1) everywhere: the network on the whole image, mirror-padded as the tiles see it, cropped back
        extra = [-(-n // core) * core - n for n in size]
        padded = _np_reflect(image, [(margin, margin + extra[0]), (margin, margin + extra[1])])
        whole_mirrored = net(padded)[..., margin:margin + size[0], margin:margin + size[1]]
        # 2) away from the image border: the plain whole-image forward
        whole = net(image)
    torch.testing.assert_close(out, whole_mirrored, atol=1e-5, rtol=1e-5)
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    torch.testing.assert_close(out[inner], whole[inner], atol=1e-5, rtol=1e-5)
    assert (out - whole).abs().max() > 1e-3  # the border differs: mirrored context, not zero padding


def test_overlap_tile_with_too_small_a_margin_shows_seams():
    net = _same_unet(2)
    image = torch.randn(1, 3, 144, 176)
    with torch.no_grad():
        whole = net(image)[..., 16:-16, 16:-16]
    for overlap, should_match in [(0.0, False), (0.125, False), (0.25, True)]:  # margins 0, 4, 8 pixels
        out = overlap_tile_2d(net, image, tile=64, overlap=overlap)[..., 16:-16, 16:-16]
        assert torch.allclose(out, whole, atol=1e-5) == should_match, overlap


def test_overlap_tile_image_smaller_than_a_tile():
    net = _same_unet(2)
    image = torch.randn(1, 3, 20, 30)
    out = overlap_tile_2d(net, image, tile=64, overlap=0.25)
    assert out.shape == (1, 2, 20, 30)
    with torch.no_grad():  # one tile holding the image with 8 + 36 (resp. 8 + 26) mirrored rows (columns)
        expected = net(_np_reflect(image, [(8, 36), (8, 26)]))[..., 8:28, 8:38]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# --- overlap-tile, valid networks --------------------------------------------------------------------------------

def test_largest_valid_tile():
    assert largest_valid_tile(572, 5) == 572
    assert largest_valid_tile(587, 5) == 572  # valid sizes for depth 5 are 16 apart
    assert largest_valid_tile(588, 5) == 588
    for size in (60, 97, 130):
        tile = largest_valid_tile(size, 3)
        valid_output_size(tile, 3)
        for bigger in range(tile + 1, size + 1):
            with pytest.raises(ValueError):
                valid_output_size(bigger, 3)


@pytest.mark.parametrize("tile, size", [(96, (132, 148)), (100, (90, 61)), (98, (150, 57))])
def test_overlap_tile_valid_net_full_size_and_equal_to_whole_mirrored_forward(tile, size):
    torch.manual_seed(0)
    net = UNet(2, 1, 2, depth=3, base_channels=4, padding="valid").eval()
    image = torch.randn(2, 1, *size)
    out = overlap_tile_2d(net, image, tile=tile)
    assert out.shape == (2, 2, *size)
    border = (44 - valid_output_size(44, 3)) // 2  # 20: what a depth-3 valid U-Net consumes on each side
    assert border == 20
    # the whole image mirror-padded by the border (plus a few rows/columns so that the size is valid)
    extra = [(-(n + 2 * border)) % 4 for n in size]
    padded = _np_reflect(image, [(border, border + extra[0]), (border, border + extra[1])])
    with torch.no_grad():
        whole = net(padded)[..., :size[0], :size[1]]
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


# --- sliding window 3D -------------------------------------------------------------------------------------------

def test_window_starts():
    assert window_starts(20, 8, 0.5) == [0, 4, 8, 12]
    assert window_starts(21, 8, 0.5) == [0, 4, 8, 12, 13]
    assert window_starts(8, 8, 0.5) == [0]
    assert window_starts(10, 8, 0.0) == [0, 2]
    with pytest.raises(ValueError):
        window_starts(7, 8, 0.5)


def test_gaussian_importance_map_matches_monai():
    from monai.data.utils import compute_importance_map

    for roi, sigma in [((8, 10, 12), 0.125), ((5, 16, 7), (0.25, 0.125, 0.5))]:
        ours = gaussian_importance_map(roi, sigma)
        theirs = compute_importance_map(roi, mode="gaussian", sigma_scale=sigma)
        torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("shape, roi, overlap, sigma, batch_size", [
    ((2, 2, 20, 23, 26), (8, 10, 12), 0.5, 0.125, 1),
    ((1, 2, 5, 30, 17), (8, 8, 8), 0.25, 0.125, 3),        # smaller than the roi along D: padded with zeros
    ((2, 2, 12, 12, 12), (12, 12, 12), 0.5, 0.125, 2),     # exactly one window
    ((1, 2, 13, 15, 14), (6, 7, 8), (0.5, 0.25, 0.6), 0.25, 4),
])
def test_sliding_window_matches_monai_gaussian(shape, roi, overlap, sigma, batch_size):
    net = _conv3d_net()
    torch.manual_seed(2)
    volume = torch.randn(shape)
    ours = sliding_window_3d(net, volume, roi=roi, overlap=overlap, sigma_scale=sigma, batch_size=batch_size)
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(volume, roi, batch_size, net, overlap=overlap,
                                                         mode="gaussian", sigma_scale=sigma)
        constant = monai_inferers.sliding_window_inference(volume, roi, batch_size, net, overlap=overlap,
                                                           mode="constant")
    assert ours.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if volume.shape[2:] != roi:  # several windows: the blending weights matter
        assert not torch.allclose(ours, constant, atol=1e-4)


def test_sliding_window_pointwise_net_equals_whole_volume_forward():
    # A 1x1x1 network has no context: every window agrees, so any normalised blending gives the whole forward.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv3d(2, 5, 1), nn.ReLU(), nn.Conv3d(5, 3, 1)).eval()
    volume = torch.randn(2, 2, 17, 22, 9)
    out = sliding_window_3d(net, volume, roi=(8, 8, 8), overlap=0.5, batch_size=2, pad_mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(out, net(volume), atol=1e-6, rtol=1e-5)


# --- contract: dims, mode, device, errors ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["train", "eval"])
def test_network_mode_is_left_unchanged(mode):
    net2d = UNet(2, 3, 2, depth=2, base_channels=4, norm="none")
    net3d = _conv3d_net()
    for net in (net2d, net3d):
        net.train(mode == "train")
    overlap_tile_2d(net2d, torch.randn(1, 3, 40, 40), tile=32)
    sliding_window_3d(net3d, torch.randn(1, 2, 10, 10, 10), roi=8)
    for net in (net2d, net3d):
        assert all(m.training == (mode == "train") for m in net.modules())
    assert all(p.grad is None for p in net2d.parameters())


def test_results_do_not_track_gradients():
    net = _conv3d_net()
    volume = torch.randn(1, 2, 10, 10, 10, requires_grad=True)
    assert not sliding_window_3d(net, volume, roi=8).requires_grad
    assert not overlap_tile_2d(_same_unet(2), torch.randn(1, 3, 40, 40, requires_grad=True), tile=32).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_network_on_gpu_input_on_cpu():
    net2d, net3d = _same_unet(2), _conv3d_net()
    image, volume = torch.randn(2, 3, 70, 90), torch.randn(2, 2, 12, 14, 16)
    cpu2d = overlap_tile_2d(net2d, image, tile=32)
    cpu3d = sliding_window_3d(net3d, volume, roi=8)
    gpu2d = overlap_tile_2d(net2d.cuda(), image, tile=32)
    gpu3d = sliding_window_3d(net3d.cuda(), volume, roi=8)
    assert gpu2d.device.type == gpu3d.device.type == "cpu"
    torch.testing.assert_close(gpu2d, cpu2d, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu3d, cpu3d, atol=1e-4, rtol=1e-4)
    assert overlap_tile_2d(net2d, image.cuda(), tile=32).device.type == "cuda"


@pytest.mark.parametrize("call, match", [
    (lambda: overlap_tile_2d(nn.Identity(), torch.zeros(3, 8, 8)), "B, C, H, W"),
    (lambda: overlap_tile_2d(nn.Identity(), torch.zeros(1, 1, 8, 8), overlap=1.0), "overlap"),
    (lambda: overlap_tile_2d(nn.Identity(), torch.zeros(1, 1, 8, 8), tile=(8, 8, 8)), "tile"),
    (lambda: overlap_tile_2d(nn.Identity(), torch.zeros(1, 1, 8, 8), batch_size=0), "batch_size"),
    (lambda: sliding_window_3d(nn.Identity(), torch.zeros(1, 8, 8, 8)), "B, C, D, H, W"),
    (lambda: sliding_window_3d(nn.Identity(), torch.zeros(1, 1, 8, 8, 8), roi=4, overlap=-0.1), "overlap"),
    (lambda: sliding_window_3d(nn.Identity(), torch.zeros(1, 1, 8, 8, 8), roi=4, sigma_scale=0), "sigma_scale"),
    (lambda: sliding_window_3d(nn.Identity(), torch.zeros(1, 1, 8, 8, 8), roi=4, pad_mode="wrap"), "pad_mode"),
    (lambda: sliding_window_3d(nn.MaxPool3d(2), torch.zeros(1, 1, 8, 8, 8), roi=4), "keep the size"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_deep_supervision_list_output_is_rejected_with_a_hint():
    from seg25d.models.unetpp import UNetPlusPlus

    net = UNetPlusPlus(3, 2, depth=2, base_channels=4, deep_supervision=True).train()
    with pytest.raises(ValueError, match="eval"):
        overlap_tile_2d(net, torch.randn(1, 3, 40, 40), tile=32)
