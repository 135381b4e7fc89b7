"""The random 2.5D U-Net: shapes for its presets and options, gradients of path 1, the frozen U-Net of path 2,
random view draws, evaluation with all views, projected labels."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from seg25d.models import build, model_options
from seg25d.models.projection25d import PRESETS, Projection25D, Projection25DOptions
from seg25d.pipeline.losses import segmentation_loss

TINY = dict(directions=2, train_directions=2, unet={"depth": 2, "base_channels": 4}, head_channels=4, filter_size=7)
SHAPE = (6, 8, 9)


def _tiny(out_channels=2, in_channels=1, **options) -> Projection25D:
    torch.manual_seed(0)
    return build("projection25d", in_channels, out_channels, **{**TINY, **options})


def _volume(batch=2, channels=1, seed=0):
    return torch.randn(batch, channels, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _masks(batch=2, classes=2, seed=1):
    return (torch.rand(batch, classes, *SHAPE, generator=torch.Generator().manual_seed(seed)) > 0.7).float()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_full_size_shapes(preset):
    torch.manual_seed(0)
    model = build("projection25d", 1, 1, preset=preset)
    assert model.n_views == {"paper": 32, "default": 24}[preset]
    x = torch.randn(1, 1, 8, 16, 16)
    assert model(x).shape == (1, 1, 8, 16, 16)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 1, 8, 16, 16)


@pytest.mark.parametrize("options, out_channels, in_channels", [
    ({}, 2, 1),
    ({"preset": "paper"}, 2, 1),
    ({"preset": "paper", "axes": (0, 1, 2)}, 1, 2),
    ({"axes": (0,)}, 2, 1),
    ({"axes": (0, 1, 2)}, 3, 1),
    ({"axes": (2, 0)}, 1, 1),
    ({"lift": ("mip",)}, 2, 2),  # several input channels: lifted at the channel mean's maxima
    ({"lift": ("backproject",)}, 2, 1),
    ({"lift": ("mip",)}, 2, 1),
    ({"lift": ("backproject", "mip")}, 2, 2),
    ({"features": 6}, 2, 1),
    ({"features": None}, 3, 1),
    ({"head": "paper", "features": 2, "lift": ("backproject",), "sum_input": True}, 2, 1),
    ({"head": "paper", "features": 2, "lift": ("backproject",), "axes": (1,)}, 2, 2),
    ({"filter_per_view": True}, 1, 1),
    ({"scale": 2}, 2, 1),
    ({"scale": 2, "lift": ("backproject",)}, 1, 1),
    ({"scale": 2, "lift": ("backproject", "mip")}, 2, 2),
    ({"slabs": 2}, 2, 1),
    ({"slabs": 3, "scale": 2, "lift": ("mip",)}, 1, 2),
    ({"projection": "mean", "lift": ("slab",), "slabs": 2}, 3, 1),
    ({"projection": "mean", "lift": ("slab", "backproject"), "scale": 2}, 2, 2),
    ({"lift": ("mip", "slab"), "slabs": 2}, 2, 1),
])
def test_output_shapes(options, out_channels, in_channels):
    model = _tiny(out_channels, in_channels, **options)
    x = _volume(channels=in_channels)
    logits, (view_logits, views) = model(x, return_views=True)
    assert logits.shape == (2, out_channels, *SHAPE)
    images = model.train_directions * model.slabs
    assert view_logits.shape[:3] == (2, out_channels, images) and len(views) == model.train_directions
    assert model.project_labels(_masks(classes=out_channels), views).shape == view_logits.shape
    model.eval()
    with torch.no_grad():
        logits, (view_logits, views) = model(x, return_views=True)
    assert logits.shape == (2, out_channels, *SHAPE)
    assert torch.equal(views, torch.arange(model.n_views)) and view_logits.shape[2] == model.n_views * model.slabs
    assert torch.isfinite(logits).all()


def test_preset_options_and_overrides():
    model = _tiny(1, preset="paper")
    assert model.axes == (0,) and model.lift_kinds == ("backproject",)
    assert model.head_kind == "paper" and not model.aux_loss
    assert model.filtration.weight.shape == (2, 1, 7)  # one filter per view (2 views), one channel
    model = build("projection25d", 1, 1, unet={"depth": 2})  # unet options merge into the preset's
    default = dataclasses.asdict(PRESETS["default"])
    assert model.features == default["features"] and model.axes == tuple(default["axes"])
    assert model.n_views == default["directions"] * len(default["axes"])
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.unet.modules()) <= 1
    recorded = build("projection25d", 1, 1, unet={"depth": 2}).config["options"]  # resolved, preset included
    assert recorded["preset"] == "default" and recorded["unet"] == {**default["unet"], "depth": 2}
    assert {k: v for k, v in recorded.items() if k not in ("preset", "unet")} == \
        {k: v for k, v in default.items() if k != "unet"}
    assert build("projection25d", 1, 1, **recorded).config["options"] == recorded


def test_options_are_declared_once():
    """The options build takes, the presets and the recorded config are the fields of Projection25DOptions."""
    fields = [f.name for f in dataclasses.fields(Projection25DOptions)]
    assert list(model_options("projection25d")) == ["preset", *fields]
    assert PRESETS["default"] == Projection25DOptions()
    assert list(build("projection25d", 1, 1, preset="paper").config["options"]) == ["preset", *fields]
    # docs/configuration.md documents each of them, and none that is gone
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = docs[docs.index("### `projection25d` options and presets"):docs.index("## The two-path schedule")]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == fields


@pytest.mark.parametrize("options, match", [
    ({"bogus": 1}, "unknown option"),
    ({"preset": "papper"}, "unknown preset"),
    ({"axes": (3,)}, "axes"),
    ({"axes": (0, 0)}, "axes"),
    ({"axes": ()}, "axes"),
    ({"mode": "radon"}, "unknown option"),  # options of rejected experiments are gone
    ({"fine_lift": True}, "unknown option"),
    ({"infer_directions": 4}, "unknown option"),
    ({"lift": ("fbp",)}, "lift"),
    ({"lift": ()}, "lift"),
    ({"train_directions": 0}, "train_directions"),
    ({"train_directions": 7}, "train_directions"),  # 2 directions x 3 axes
    ({"features": 1, "lift": ("mip",)}, "features"),  # 1 channel x 1 lift < 2 classes
    ({"head": "mlp"}, "head"),
    ({"head": "paper", "features": 4}, "paper head"),
    ({"head": "paper", "features": 2}, "paper head"),  # two lifts: 2 * 2 + 1 channels
    ({"head": "paper", "features": 2, "lift": ("mip",)}, "paper head"),  # MIP lifting adds a count channel
    ({"slabs": 0}, "slabs"),
    ({"scale": 3}, "scale"),
])
def test_invalid_options(options, match):
    with pytest.raises(ValueError, match=match):
        build("projection25d", 1, 2, **{**TINY, **options})


@pytest.mark.parametrize("options", [{}, {"lift": ("backproject", "mip")}, {"lift": ("mip",)}, {"features": 3, "axes": (0, 1)},
                                     {"preset": "paper"}, {"scale": 2},
                                     {"slabs": 2}])
def test_path1_every_parameter_gets_gradient(options):
    model = _tiny(2, **options)
    if model.filtration is not None and model.filtration.weight.shape[0] > 1:
        model.train_directions = model.n_views  # per-view filters: draw every view so each filter is used
    model.train()
    logits = model(_volume())
    segmentation_loss(logits, _masks(), sigmoid=True, kind="bce_dice").backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} has a zero gradient"


def test_per_view_filters_train_only_drawn_views():
    model = _tiny(1, preset="paper", axes=(0, 1, 2), directions=3, train_directions=4)
    logits, (_, views) = model(_volume(), return_views=True)
    segmentation_loss(logits, _masks(classes=1), True).backward()
    touched = model.filtration.weight.grad.abs().sum(dim=(1, 2)) > 0
    expected = torch.zeros(model.n_views, dtype=torch.bool)
    expected[views] = True
    assert torch.equal(touched, expected)


def test_draw_views_spread_over_axes_and_reproducible():
    model = _tiny(1, axes=(0, 1, 2), directions=4, train_directions=7)
    extra_axes, seen = set(), set()
    for _ in range(30):
        views = model.draw_views()
        assert len(views) == 7 and len(set(views.tolist())) == 7
        assert torch.equal(views, torch.sort(views).values)
        assert views.min() >= 0 and views.max() < 12
        per_axis = torch.bincount(views // 4, minlength=3)
        assert sorted(per_axis.tolist()) == [2, 2, 3]
        extra_axes.add(int(per_axis.argmax()))
        seen |= set(views.tolist())
    assert extra_axes == {0, 1, 2} and seen == set(range(12))
    torch.manual_seed(123)
    first = [model.draw_views() for _ in range(3)]
    torch.manual_seed(123)
    assert all(torch.equal(a, model.draw_views()) for a in first)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.draw_views(g1), model.draw_views(g2))


def test_training_forward_reproducible_under_manual_seed():
    model = _tiny(2)
    x = _volume()
    torch.manual_seed(7)
    a, (_, views_a) = model(x, return_views=True)
    torch.manual_seed(7)
    b, (_, views_b) = model(x, return_views=True)
    assert torch.equal(views_a, views_b) and torch.equal(a, b)


def _split_state(model):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    unet = {k: v for k, v in state.items() if k.startswith("unet.")}
    rest = {k: v for k, v in state.items() if k.startswith(("filtration.", "head.", "refinement."))}
    assert len(unet) + len(rest) == len(state)
    return unet, rest


@pytest.mark.parametrize("options", [{}, {"preset": "paper"}, {"lift": ("mip",)}, {"scale": 2}])
def test_path2_trains_only_filtration_and_head(options):
    model = _tiny(2, **options)
    model.train()
    # one path-1 step so that batch-norm statistics and Adam state are not trivial
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    segmentation_loss(model(_volume()), _masks(), True).backward()
    optimizer.step()
    unet_before, rest_before = _split_state(model)

    model.freeze_unet()
    assert model.unet_frozen and not model.unet.training and model.training
    assert all(not p.requires_grad for p in model.unet.parameters())
    x, views = _volume(seed=3), model.all_views()
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        logits = model.decode(x, model.encode(x, views))
        segmentation_loss(logits, _masks(seed=4), True).backward()
        optimizer.step()
    unet_after, rest_after = _split_state(model)
    for k in unet_before:  # weights and batch-norm buffers
        assert torch.equal(unet_before[k], unet_after[k]), f"{k} changed in path 2"
    changed = [k for k in rest_before if not torch.equal(rest_before[k], rest_after[k])]
    params = [k for k, _ in model.named_parameters() if not k.startswith("unet.")]
    assert sorted(changed) == sorted(params)
    if model.filtration is not None:
        assert "filtration.weight" in changed
    # a frozen model's forward in training mode uses the inference views; unfreezing restores path 1
    _, (_, used) = model(x, return_views=True)
    assert torch.equal(used, model.inference_views())
    model.freeze_unet(False)
    assert model.unet.training and all(p.requires_grad for p in model.unet.parameters())
    _, (_, used) = model(x, return_views=True)
    assert len(used) == model.train_directions


def test_freeze_survives_train_eval_switches():
    model = _tiny(1).freeze_unet()
    model.eval()
    model.train()
    assert not model.unet.training and model.head.training


def test_inference_uses_every_view():
    assert torch.equal(build("projection25d", 1, 1).inference_views(), torch.arange(24))
    assert torch.equal(_tiny(1, directions=4).inference_views(), torch.arange(12))
    assert torch.equal(build("projection25d", 1, 1, preset="paper").inference_views(), torch.arange(32))


def _shadow_mask(geometry, slabs, shape):
    """True on each image's shadow box (images of a view's slabs consecutive)."""
    inside = torch.zeros(shape, dtype=torch.bool)
    for i, (r0, r1, c0, c1) in enumerate(np.repeat(geometry.shadows(), slabs, axis=0).tolist()):
        inside[i, r0:r1, c0:c1] = True
    return inside


@pytest.mark.parametrize("scale", [1, 2])
def test_sum_input_gives_the_unet_each_rays_line_sum(scale):
    """With ``sum_input`` every slab image reaches the U-Net with its rays' line sums (the Radon transform of the
    grid the views see), standardised per image and the same for every slab of a view; without, the MIPs alone."""
    from seg25d.projections import MaxIntensityProjection, RayTransform

    x = _volume(batch=2, seed=3)
    model = _tiny(1, sum_input=True, slabs=2, scale=scale).eval()
    model.unet = torch.nn.Identity()  # the features are then the U-Net's input images on each view's shadow
    views = model.inference_views()
    with torch.no_grad():
        images = model.encode(x, views).features
    core = model.core_input(x)
    geometry = model.geometry(core.shape[2:])[views.numpy()]
    m, c = len(views), core.shape[1]
    inside = _shadow_mask(geometry, model.slabs, images.shape[2:])
    mip = MaxIntensityProjection(geometry, model.slabs)(core)
    assert torch.allclose(images[:, :c][..., inside], mip[..., inside])
    sums = RayTransform(geometry)(core)
    reference = (sums - sums.mean(dim=(3, 4), keepdim=True)) / sums.std(dim=(3, 4), keepdim=True)
    per_slab = torch.where(inside, images[:, c:], torch.nan).unflatten(2, (m, model.slabs))
    for slab in range(model.slabs):
        here = ~per_slab[:, :, :, slab].isnan()
        assert torch.allclose(per_slab[:, :, :, slab][here], reference[here], atol=1e-5)
    nets = [_tiny(1, sum_input=flag, slabs=2, scale=scale) for flag in (True, False)]
    first = [next(mod for mod in net.unet.modules() if isinstance(mod, torch.nn.Conv2d)) for net in nets]
    assert [conv.in_channels for conv in first] == [2 * c, c]


def test_the_unet_sees_each_image_cropped_to_its_views_shadow():
    """Rays that miss the volume are not segmented: the U-Net sees each image cropped to the shadow of the
    volume's box, crops of one size batched together; outside, the features are 0 (no evidence to lift or
    backproject) and the views' 2D logits for the auxiliary loss read OUTSIDE_LOGIT (certain background)."""
    from seg25d.models.projection25d import OUTSIDE_LOGIT

    model = _tiny(2, slabs=3).eval()
    calls = []
    model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    views = model.inference_views()
    with torch.no_grad():
        features = model.encode(_volume(batch=2), views).features
    geometry = model.geometry(SHAPE)[views.numpy()]
    boxes = np.repeat(geometry.shadows(), model.slabs, axis=0)
    sizes = sorted({(r1 - r0, c1 - c0) for r0, r1, c0, c1 in boxes.tolist()})
    assert [tuple(shape[2:]) for shape in calls] == sizes  # one U-Net call per crop size
    assert sum(shape[0] for shape in calls) == 2 * len(boxes)  # every image of both volumes, once
    inside = _shadow_mask(geometry, model.slabs, features.shape[2:])
    assert not inside.all()  # the oblique views' detector is wider than the axis-aligned views' shadows
    assert (features[..., ~inside] == 0).all() and (features[..., inside] != 0).any()
    with torch.no_grad():
        _, (view_logits, _) = model(_volume(batch=2), views=views, return_views=True)
    assert (view_logits[..., ~inside] == OUTSIDE_LOGIT).all()
    torch.testing.assert_close(view_logits[..., inside], features[:, :2][..., inside])


def test_bf16_autocast_keeps_the_geometry_in_fp32():
    """Under bf16 autocast the networks run in bf16 and the projections and lifting in fp32 (the sparse Radon
    matrices have no bf16 kernels): the logits come out close to the fp32 ones, with gradients everywhere."""
    model = _tiny(2, slabs=2, sum_input=True).eval()
    x = _volume(batch=1)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and logits.shape == reference.shape
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_slab_means_feed_the_unet_and_slab_lifting_spreads_its_features():
    """``projection="mean"``: the U-Net sees each band's mean intensity (with the line sums), and ``lift="slab"``
    gives the head each image's features spread over its band, averaged over the views."""
    from seg25d.projections import SlabMeanProjection

    model = _tiny(2, projection="mean", lift=("slab",), slabs=2).eval()
    model.unet = torch.nn.Identity()  # features = the U-Net's input images (2 channels: means, line sums)
    x = _volume(batch=1, seed=4)
    views = model.inference_views()
    with torch.no_grad():
        encoded = model.encode(x, views)
    geometry = model.geometry(SHAPE)[views.numpy()]
    inside = _shadow_mask(geometry, 2, encoded.features.shape[2:])
    means = SlabMeanProjection(geometry, 2)(x)
    torch.testing.assert_close(encoded.features[:, :1][..., inside], means[..., inside])
    assert encoded.argmax is None
    with torch.no_grad():
        evidence = model._lift(encoded)
    torch.testing.assert_close(evidence, SlabMeanProjection(geometry, 2).lift(encoded.features) / len(views))
    with pytest.raises(ValueError, match="needs projection='max'"):
        _tiny(1, projection="mean", lift=("mip",))
    with pytest.raises(ValueError, match="projection must be one of"):
        _tiny(1, projection="median")


def test_sum_input_in_presets():
    assert build("projection25d", 1, 1).sum_input and not build("projection25d", 1, 1, preset="paper").sum_input


def test_eval_uses_all_views_and_is_deterministic():
    model = _tiny(2)
    model.train()
    segmentation_loss(model(_volume()), _masks(), True).backward()  # batch-norm statistics move
    model.eval()
    x = _volume(seed=9)
    with torch.no_grad():
        a, (_, views) = model(x, return_views=True)
        torch.manual_seed(1)
        b = model(x)
        torch.manual_seed(2)
        c = model(x)
        explicit = model(x, views=model.all_views())
        other = model(x, views=torch.tensor([0, 3]))
    assert torch.equal(views, torch.arange(model.n_views))
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, explicit)
    assert not torch.equal(a, other)


def test_state_dict_round_trip_rebuilds_same_model():
    model = _tiny(2, features=3)
    clone = build(model.config["name"], model.config["in_channels"], model.config["out_channels"],
                  **copy.deepcopy(model.config["options"]))
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(model(_volume()), clone(_volume()))


@pytest.mark.parametrize("axes", [(0,), (0, 1, 2)])
def test_project_labels_binary(axes):
    model = _tiny(2, axes=axes)
    labels = _masks(classes=2)
    views = model.all_views()
    projected = model.project_labels(labels, views)
    assert projected.shape[:3] == (2, 2, len(views) * model.slabs)
    assert set(torch.unique(projected).tolist()) == {0.0, 1.0}
    empty = model.project_labels(torch.zeros(1, 1, *SHAPE), views)
    assert not empty.any()
    # bool labels work and every view of a non-empty mask sees it (in the slab of its depth)
    one = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    one[0, 0, 3, 4, 4] = True
    seen = model.project_labels(one, views)
    assert set(torch.unique(seen).tolist()) == {0.0, 1.0}
    per_view = seen.unflatten(2, (len(views), model.slabs)).flatten(3).amax(-1)
    assert per_view.all()


def test_resolve_scale_by_volume_size():
    from seg25d.models.projection25d import AUTO_SCALE_VOXELS, resolve_scale

    assert resolve_scale("auto", (64, 96, 96)) == 1
    assert resolve_scale("auto", (128, 128, 128)) == 2
    assert resolve_scale("auto", (AUTO_SCALE_VOXELS, 1, 1)) == 1 and resolve_scale("auto", (AUTO_SCALE_VOXELS + 1, 1, 1)) == 2
    assert resolve_scale(2, (8, 8, 8)) == 2
    with pytest.raises(ValueError, match="resolved from the volume size"):
        build("projection25d", 1, 1, scale="auto")


@pytest.mark.parametrize("shape", [(8, 12, 10), (9, 13, 11)])  # odd sizes are padded to even and cropped back
def test_scale2_works_on_a_half_resolution_grid(shape):
    model = _tiny(1, scale=2).eval()
    x = torch.randn(1, 1, *shape)
    core = model.core_input(x)
    assert core.shape == (1, 2, *((n + 1) // 2 for n in shape))  # average- and max-pooled
    assert torch.equal(core[:, 1], torch.nn.functional.max_pool3d(
        torch.nn.functional.pad(x, [p for n in reversed(shape) for p in (0, n % 2)], mode="replicate"), 2)[:, 0])
    encoded = model.encode(x, model.all_views())
    features, views = encoded.features, encoded.views
    assert torch.equal(encoded.core, core)  # decode lifts onto it, without pooling again
    assert features.shape[-2:] == model.geometry(core.shape[2:]).detector_shape
    assert encoded.argmax is not None  # MIP lifting: where each ray's maximum lies
    with torch.no_grad():
        assert model(x).shape == (1, 1, *shape)
    labels = (torch.rand(1, 1, *shape) > 0.9).float()
    targets = model.project_labels(labels, views)
    assert targets.shape[-2:] == features.shape[-2:] and set(targets.unique().tolist()) <= {0.0, 1.0}


def test_scale2_refinement_starts_from_the_upsampled_logits():
    """The refinement's layer starts at zero: the output is the trilinear upsampling of the coarse logits."""
    model = _tiny(1, scale=2).eval()
    x = torch.randn(1, 1, 8, 12, 10)
    coarse = torch.randn(1, 1, 4, 6, 5)
    up = torch.nn.functional.interpolate(coarse, scale_factor=2, mode="trilinear", align_corners=False)
    torch.testing.assert_close(model.refinement(coarse, x), up)
    with torch.no_grad():
        model.refinement.weight[0, 0] = 2.0  # the input's weight
    torch.testing.assert_close(model.refinement(coarse, x), up + 2.0 * x)
    with torch.no_grad():
        model.refinement.weight[0, 0], model.refinement.weight[0, 1] = 0.0, 1.0  # the local contrast's weight
    box = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(model.refinement(coarse, x), up + x - box)


@pytest.mark.parametrize("shape", [(4, 6, 5), (3, 3, 3), (7, 3, 9)])
def test_separable_upsampling_and_box_mean_match_torchs_3d_ones(shape):
    from seg25d.models.projection25d import _upsample2
    from seg25d.reconstruction import local_mean

    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    reference = torch.nn.functional.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    torch.testing.assert_close(_upsample2(x), reference)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, x, grad)[0]
    torch.testing.assert_close(torch.autograd.grad(_upsample2(x), x, grad)[0], expected)
    box = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(local_mean(x, 3), box)


def test_box_mean_on_volumes_thinner_than_its_window():
    """avg_pool3d refuses them; the mean over the neighbours inside the volume, counted by hand."""
    from seg25d.reconstruction import local_mean

    x = torch.randn(1, 2, 1, 2, 4, dtype=torch.float64)
    expected = torch.empty_like(x)
    d, h, w = x.shape[2:]
    for i, j, k in np.ndindex(d, h, w):
        block = x[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2]
        expected[:, :, i, j, k] = block.mean(dim=(2, 3, 4))
    torch.testing.assert_close(local_mean(x, 3), expected)


@pytest.mark.parametrize("shape", [(4, 6, 8), (5, 3, 7)])
def test_half_resolution_grid_matches_torchs_pools(shape):
    """At scale 2 the core grid is the 2x average and max pool of the input, odd sizes padded by repetition."""
    model = _tiny(1, scale=2)
    x = torch.randn(2, 1, *shape)
    padded = torch.nn.functional.pad(x, [p for n in reversed(shape) for p in (0, n % 2)], mode="replicate")
    expected = torch.cat([torch.nn.functional.avg_pool3d(padded, 2), torch.nn.functional.max_pool3d(padded, 2)], 1)
    torch.testing.assert_close(model.core_input(x), expected)
