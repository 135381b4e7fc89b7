"""Hidden CPU-only code: tensors made without an explicit device, caught on a CPU-only machine.

Inside ``torch.device("meta")`` every tensor created without ``device=`` lands on the meta device; mixed with
the CPU inputs and modules below it raises (or, as an index, reads garbage). Each case therefore runs twice from
the same seed, guarded and plain, with fresh projector caches, and must give the same outputs and gradients:
code that passes creates its tensors where its input lives, so it runs on a GPU as it runs here.
"""

from __future__ import annotations

import pytest
import torch

from seg25d.models import build
from seg25d.pipeline.inference import mirror_pad, overlap_tile_2d, sliding_window_3d
from seg25d.pipeline.losses import segmentation_loss
from seg25d.projections import (
    MaxIntensityProjection, RayTransform, axis_geometry, direction_geometry, general_views, multi_axis_geometry,
    operators, resample_views, sphere_geometry,
)
from seg25d.reconstruction import Filtration, FineTuning, backproject, lift_mip

CPU = torch.device("cpu")


def _fresh_caches():
    operators._cached_plan.cache_clear()
    general_views._frame.cache_clear()


def _same_guarded_and_plain(run):
    """``run()`` (a list of tensors) inside the meta-device guard and without it: equal results."""
    _fresh_caches()
    torch.manual_seed(0)
    with torch.device("meta"):
        guarded = run()
    _fresh_caches()
    torch.manual_seed(0)
    plain = run()
    assert len(guarded) == len(plain)
    for g, p in zip(guarded, plain):
        assert g.device == CPU
        torch.testing.assert_close(g, p, rtol=0, atol=0)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), device=CPU)


def test_the_guard_catches_a_tensor_made_without_a_device():
    x = _rand(3)
    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        (x * torch.arange(3)).sum().item()


# --- operators ---------------------------------------------------------------------------------------------------

GEOMETRIES = {
    "axis, subset of views": lambda s: axis_geometry(s, 5)[[3, 0, 1]],
    "three axes, spacing": lambda s: multi_axis_geometry(s, {0: 2, 1: 2, 2: 1}, spacing=(2.0, 1.0, 1.5)),
    "general views": lambda s: sphere_geometry(s, 2),
    "mixed": lambda s: direction_geometry(s, [[0.0, 1.0, 0.4], [1.0, 1.0, 1.0]]),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_projectors_forward_and_backward(name):
    shape = (4, 7, 6)
    geometry = GEOMETRIES[name](shape)
    volume = _rand(2, 2, *shape)
    weights = _rand(2, 2, len(geometry), *geometry.detector_shape, seed=1)

    def run():
        x = volume.clone().requires_grad_(True)
        sums = RayTransform(geometry)(x)
        maxima = MaxIntensityProjection(geometry)(x)
        lifted = lift_mip(weights, volume, geometry)
        back = backproject(weights, geometry, shape)
        ((sums * weights).sum() + (maxima * weights).sum()).backward()
        return [sums.detach(), maxima.detach(), lifted, back, x.grad]

    _same_guarded_and_plain(run)


def test_slab_mip_resampling_filtration_and_fine_tuning():
    shape = (6, 6, 5)
    geometry = multi_axis_geometry(shape, {0: 2, 2: 2})
    fine_geometry = multi_axis_geometry((12, 12, 10), {0: 2, 2: 2})
    volume = _rand(1, 1, *shape)
    filtration = Filtration(kernel_size=7, views=len(geometry), channels=1, init="ramp")
    head = FineTuning(1)

    def run():
        filtration.zero_grad(set_to_none=True), head.zero_grad(set_to_none=True)
        x = volume.clone().requires_grad_(True)
        slabs = MaxIntensityProjection(geometry, slabs=2)(x)
        filtered = filtration(slabs[:, :, ::2], torch.arange(len(geometry), device=CPU))
        logits = head(RayTransform(geometry).adjoint(filtered))
        fine = resample_views(slabs[:, :, ::2], geometry, fine_geometry, 2.0)
        (logits.square().mean() + fine.mean()).backward()
        return [logits.detach(), fine.detach(), x.grad, filtration.weight.grad, head.scale.grad]

    _same_guarded_and_plain(run)


# --- networks ----------------------------------------------------------------------------------------------------

TINY_P25 = dict(directions=2, train_directions=2, unet={"depth": 2, "base_channels": 4}, head_channels=4,
                filter_size=7)
MODELS = {  # name: (options, input shape)
    "unet2d": (dict(depth=2, base_channels=4), (2, 1, 12, 10)),
    "unet2d valid": (dict(depth=2, base_channels=4, padding="valid", norm="instance"), (2, 1, 44, 44)),
    "segnet": (dict(depth=2, base_channels=4), (2, 1, 12, 10)),
    "unetpp": (dict(depth=3, base_channels=4), (2, 1, 12, 10)),
    "slicestack25d": (dict(slices=3, backbone_options=dict(depth=2, base_channels=4)), (1, 1, 5, 8, 8)),
    "unet3d": (dict(depth=2, base_channels=4), (1, 1, 6, 8, 8)),
    "monai_unet": (dict(channels=(4, 8), strides=(2,), num_res_units=1), (1, 1, 6, 8, 8)),
    "projection25d": (TINY_P25, (2, 1, 6, 8, 9)),
    "projection25d mixed": (dict(TINY_P25, lift=("backproject", "mip"), filter_per_view=True, sum_input=True),
                            (1, 1, 6, 8, 9)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_backward_and_loss(name):
    registered = name.split()[0]
    if registered == "monai_unet":
        pytest.importorskip("monai")
    options, shape = MODELS[name]
    torch.manual_seed(0)
    net = build(registered, shape[1], 2, **options).train()
    volume = _rand(*shape)

    def run():
        net.zero_grad(set_to_none=True)
        x = volume.clone().requires_grad_(True)
        out = net(x)
        outputs = out if isinstance(out, list) else [out]  # deep supervision: one output per depth
        masks = (_rand(*outputs[-1].shape, seed=2) > 0.5).float()
        loss = sum(segmentation_loss(o, masks, sigmoid=True) for o in outputs)
        softmax = segmentation_loss(torch.cat([outputs[-1][:, :1], outputs[-1]], dim=1), masks, sigmoid=False,
                                    kind="ce_dice")
        (loss + softmax).backward()
        return [o.detach() for o in outputs] + [x.grad] + [p.grad for p in net.parameters() if p.grad is not None]

    _same_guarded_and_plain(run)


def test_projection25d_prediction():
    torch.manual_seed(0)
    net = build("projection25d", 1, 2, **TINY_P25).eval()
    volume = _rand(1, 1, 6, 8, 9)
    _same_guarded_and_plain(lambda: [net(volume)])


# --- prediction --------------------------------------------------------------------------------------------------

def test_overlap_tile_prediction():
    torch.manual_seed(0)
    same = build("unet2d", 1, 2, depth=2, base_channels=4).eval()
    valid = build("unet2d", 1, 2, depth=2, base_channels=4, padding="valid").eval()
    image = _rand(1, 1, 30, 21)
    _same_guarded_and_plain(lambda: [overlap_tile_2d(same, image, tile=16, overlap=0.25),
                                     overlap_tile_2d(valid, image, tile=44), mirror_pad(image, [(3, 40), (0, 2)])])


def test_sliding_window_prediction():
    torch.manual_seed(0)
    net = build("unet3d", 1, 2, depth=2, base_channels=4).eval()
    volume = _rand(1, 1, 5, 14, 12)
    _same_guarded_and_plain(lambda: [sliding_window_3d(net, volume, roi=(8, 8, 8), overlap=0.5),
                                     sliding_window_3d(net, volume, roi=8, pad_mode="reflect", batch_size=3)])
