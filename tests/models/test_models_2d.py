"""2D networks: SegNet (max-unpooling with the encoder's indices), UNet++ (nested dense skips), U-Net variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from seg25d.models.registry import build, model_options
from seg25d.models.segnet import SegNet, segnet_widths
from seg25d.models.unet import UNet, valid_output_size
from seg25d.models.unetpp import UNetPlusPlus

VARIANTS = [("batch", "relu"), ("instance", "leaky_relu"), ("none", "relu")]


def _outputs(y):
    return y if isinstance(y, list) else [y]


# --- shapes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("size", [(37, 50), (16, 16), (33, 17)])
def test_segnet_output_shape(depth, size):
    net = build("segnet", 3, 2, depth=depth, base_channels=4)
    assert net(torch.randn(2, 3, *size)).shape == (2, 2, *size)


@pytest.mark.parametrize("norm_kind, act", VARIANTS)
def test_segnet_variants(norm_kind, act):
    net = build("segnet", 3, 2, depth=3, base_channels=4, convs_per_level=3, norm=norm_kind, activation=act)
    assert net(torch.randn(2, 3, 37, 50)).shape == (2, 2, 37, 50)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * 3 * 3 + 1  # encoder + decoder, 3 per level, and the 1x1 head
    norm_type = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": type(None)}[norm_kind]
    act_type = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}[act]
    assert sum(isinstance(m, norm_type) for m in net.modules()) == (2 * 3 * 3 if norm_kind != "none" else 0)
    assert sum(isinstance(m, act_type) for m in net.modules()) == 2 * 3 * 3
    assert all((c.bias is not None) == (norm_kind == "none") for c in convs[:-1])


def test_segnet_widths_capped_like_vgg():
    assert segnet_widths(5, 64) == [64, 128, 256, 512, 512]  # VGG-16's encoder
    assert segnet_widths(6, 4) == [4, 8, 16, 32, 32, 32]
    net = SegNet(1, 2, depth=5, base_channels=4, convs_per_level=(2, 2, 3, 3, 3))
    assert [sum(isinstance(m, nn.Conv2d) for m in block) for block in net.encoder] == [2, 2, 3, 3, 3]
    assert [block[0].out_channels for block in net.encoder] == [4, 8, 16, 32, 32]
    # the decoder mirrors it: each level ends at the width of the level above
    assert [[m for m in block if isinstance(m, nn.Conv2d)][-1].out_channels for block in net.decoder] \
        == [4, 4, 8, 16, 32]


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("size", [(37, 50), (16, 16), (33, 17)])
def test_unetpp_output_shape(depth, size):
    net = build("unetpp", 3, 2, depth=depth, base_channels=4)
    assert net(torch.randn(2, 3, *size)).shape == (2, 2, *size)


@pytest.mark.parametrize("norm_kind, act", VARIANTS)
def test_unetpp_variants(norm_kind, act):
    net = build("unetpp", 3, 2, depth=3, base_channels=4, norm=norm_kind, activation=act)
    assert net(torch.randn(2, 3, 37, 50)).shape == (2, 2, 37, 50)
    norm_type = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": type(None)}[norm_kind]
    n_nodes = 3 * 4 // 2
    assert sum(isinstance(m, norm_type) for m in net.modules()) == (2 * n_nodes if norm_kind != "none" else 0)
    assert sum(isinstance(m, {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}[act]) for m in net.modules()) \
        == 2 * n_nodes


@pytest.mark.parametrize("factory, kwargs, match", [
    (SegNet, dict(depth=0), "depth"),
    (SegNet, dict(base_channels=0), "base_channels"),
    (SegNet, dict(convs_per_level=0), "convs_per_level"),
    (SegNet, dict(depth=3, convs_per_level=(2, 3)), "convs_per_level"),
    (SegNet, dict(norm="group"), "norm"),
    (SegNet, dict(activation="gelu"), "activation"),
    (UNetPlusPlus, dict(depth=1), "depth"),
    (UNetPlusPlus, dict(base_channels=0), "base_channels"),
    (UNetPlusPlus, dict(norm="layer"), "norm"),
    (UNetPlusPlus, dict(activation="tanh"), "activation"),
])
def test_bad_options_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(3, 2, **kwargs)


# --- SegNet's max-unpooling ----------------------------------------------------------------------------------------

def test_unpool_puts_maxima_back_at_their_locations():
    net = SegNet(1, 2, depth=2, base_channels=4)
    x = torch.tensor([[1., 5., 2., 0.],
                      [3., 4., 8., 6.],
                      [9., 0., 1., 2.],
                      [7., 2., 3., 11.]]).view(1, 1, 4, 4)
    pooled, idx = net.pools[0](x)
    assert pooled.view(-1).tolist() == [5., 8., 9., 11.]
    up = net.unpools[0](pooled, idx)
    expected = torch.tensor([[0., 5., 0., 0.],
                             [0., 0., 8., 0.],
                             [9., 0., 0., 0.],
                             [0., 0., 0., 11.]]).view(1, 1, 4, 4)
    assert torch.equal(up, expected)


def test_unpool_matches_numpy_block_argmax():
    net = SegNet(1, 2, depth=2, base_channels=4)
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 6 * 8).reshape(2, 3, 6, 8).astype(np.float32)  # distinct values: no ties
    pooled, idx = net.pools[1](torch.from_numpy(x))
    up = net.unpools[1](pooled, idx).numpy()
    blocks = x.reshape(2, 3, 3, 2, 4, 2)
    block_max = blocks.max(axis=(3, 5), keepdims=True)
    expected = np.where(blocks == block_max, blocks, 0).reshape(x.shape)
    np.testing.assert_array_equal(up, expected)


def test_segnet_decoder_unpools_with_the_encoder_indices():
    torch.manual_seed(0)
    depth = 3
    net = SegNet(3, 2, depth=depth, base_channels=4)
    pooled_idx, unpool_idx, unpool_out = {}, {}, {}

    def on_pool(i):
        def hook(module, args, out):
            pooled_idx[i] = out[1]
        return hook

    def on_unpool(i):
        def hook(module, args, out):
            unpool_idx[i], unpool_out[i] = args[1], out
        return hook

    for i in range(depth):
        net.pools[i].register_forward_hook(on_pool(i))
        net.unpools[i].register_forward_hook(on_unpool(i))
    net(torch.randn(2, 3, 37, 50))
    assert sorted(pooled_idx) == sorted(unpool_idx) == list(range(depth))
    for i in range(depth):
        assert torch.equal(pooled_idx[i], unpool_idx[i])
        # the unpooled map is sparse: non-zeros only where the encoder's maxima were
        out = unpool_out[i]
        support = torch.zeros_like(out).flatten(2).scatter_(2, pooled_idx[i].flatten(2), 1.0).view_as(out)
        assert bool(((out != 0) <= (support != 0)).all())
        assert (out != 0).sum() <= pooled_idx[i].numel()
    # no learned or interpolating upsampling anywhere: unpooling is the only way up
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.Upsample, nn.UpsamplingBilinear2d)) for m in net.modules())
    assert sum(isinstance(m, nn.MaxUnpool2d) for m in net.modules()) == depth


# --- UNet++ ------------------------------------------------------------------------------------------------------

def test_unetpp_nodes_concatenate_all_previous_nodes_and_the_upsampled_one():
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 2, depth=4, base_channels=4)
    assert [len(row) for row in net.nodes] == [4, 3, 2, 1]
    outputs, inputs = {}, {}
    for i, row in enumerate(net.nodes):
        for j, node in enumerate(row):
            node.register_forward_hook(lambda m, a, out, k=(i, j): outputs.__setitem__(k, out))
            node.register_forward_pre_hook(lambda m, a, k=(i, j): inputs.__setitem__(k, a[0]))
    net(torch.randn(2, 3, 32, 32))
    for i, row in enumerate(net.nodes):
        for j in range(1, len(row)):
            up = net.ups[i][j - 1](outputs[(i + 1, j - 1)])
            expected = torch.cat([outputs[(i, k)] for k in range(j)] + [up], dim=1)
            assert torch.allclose(inputs[(i, j)], expected, atol=1e-6)


def test_unetpp_deep_supervision_train_list_eval_mean():
    torch.manual_seed(0)
    depth = 4
    net = build("unetpp", 3, 2, depth=depth, base_channels=4, deep_supervision=True)
    x = torch.randn(2, 3, 37, 50)
    outs = net.train()(x)
    assert isinstance(outs, list) and len(outs) == depth - 1
    assert all(y.shape == (2, 2, 37, 50) for y in outs)
    net.eval()
    mean = net(x)
    assert isinstance(mean, torch.Tensor) and mean.shape == (2, 2, 37, 50)
    net.training = True  # only the top module: returns the list while the BatchNorms stay in eval mode
    branches = net(x)
    assert torch.allclose(mean, torch.stack(branches).mean(0), atol=1e-6)
    assert not torch.allclose(branches[0], branches[-1])


def test_unetpp_without_deep_supervision_returns_a_tensor_in_train_mode():
    net = build("unetpp", 3, 2, depth=3, base_channels=4).train()
    assert isinstance(net(torch.randn(2, 3, 16, 16)), torch.Tensor)
    assert len(net.heads) == 1


# --- registry ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("segnet", {"depth", "base_channels", "convs_per_level", "norm", "activation"}),
    ("unetpp", {"depth", "base_channels", "norm", "activation", "deep_supervision"}),
])
def test_build_rejects_unknown_options_listing_valid_ones(name, expected):
    assert set(model_options(name)) == expected
    with pytest.raises(ValueError, match="depht") as err:
        build(name, 3, 2, depht=3)
    message = str(err.value)
    assert "valid:" in message
    assert all(f"{option}=" in message for option in expected)


def test_build_records_config():
    """Every option is recorded, defaults included, so a checkpoint rebuilds the same net if defaults change."""
    from seg25d.models import model_options

    net = build("segnet", 3, 2, depth=2, base_channels=4)
    assert net.config == {"name": "segnet", "in_channels": 3, "out_channels": 2,
                          "options": {**model_options("segnet"), "depth": 2, "base_channels": 4}}
    rebuilt = build("segnet", 3, 2, **net.config["options"])
    assert rebuilt.config == net.config


# --- gradients ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [
    ("segnet", dict(depth=3, base_channels=4)),
    ("segnet", dict(depth=2, base_channels=4, norm="none", convs_per_level=3)),
    ("unetpp", dict(depth=3, base_channels=4)),
    ("unetpp", dict(depth=4, base_channels=4, deep_supervision=True, norm="instance")),
    ("unet2d", dict(depth=3, base_channels=4, upsampling="bilinear", dropout=0.1)),
])
def test_every_parameter_gets_a_gradient(name, options):
    torch.manual_seed(0)
    net = build(name, 3, 2, **options).train()
    x = torch.randn(2, 3, 37, 50)
    target = torch.randint(0, 2, (2, 37, 50))
    loss = sum(F.cross_entropy(y, target) for y in _outputs(net(x)))
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


# --- U-Net ---------------------------------------------------------------------------------------------------------

def test_unet_valid_572_to_388():
    assert valid_output_size(572, 5) == 388
    net = UNet(2, 1, 2, depth=5, base_channels=8, padding="valid").eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("options, present, absent", [
    (dict(upsampling="bilinear"), [nn.Conv2d], [nn.ConvTranspose2d]),
    (dict(upsampling="transpose"), [nn.ConvTranspose2d], []),
    (dict(norm="instance"), [nn.InstanceNorm2d], [nn.BatchNorm2d]),
    (dict(norm="none"), [], [nn.BatchNorm2d, nn.InstanceNorm2d]),
    (dict(activation="leaky_relu"), [nn.LeakyReLU], [nn.ReLU]),
    (dict(dropout=0.3), [nn.Dropout2d], []),
])
def test_unet2d_variants(options, present, absent):
    net = build("unet2d", 3, 2, depth=3, base_channels=4, **options)
    assert net(torch.randn(2, 3, 37, 50)).shape == (2, 2, 37, 50)
    has = lambda kind: any(isinstance(m, kind) for m in net.modules())  # noqa: E731
    assert all(has(k) for k in present)
    assert not any(has(k) for k in absent)


def test_unet2d_dropout_only_in_training():
    torch.manual_seed(0)
    net = build("unet2d", 3, 2, depth=3, base_channels=4, dropout=0.5, norm="none")
    x = torch.randn(2, 3, 16, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("spatial_dims, padding", [(2, "same"), (3, "same"), (2, "valid")])
def test_conv_block_folds_batch_norm_in_eval_exactly(spatial_dims, padding):
    from seg25d.models.blocks import ConvBlock

    torch.manual_seed(0)
    block = ConvBlock(spatial_dims, 3, 8, padding=padding, act="leaky_relu", dropout=0.3)
    x = torch.randn(4, 3, *[10] * spatial_dims)
    block.train()
    for _ in range(3):  # running statistics away from their initial 0 and 1, and trained affines
        block(x * 3 + 1)
    for bn in (block[1], block[4]):
        bn.weight.data.uniform_(0.5, 2.0), bn.bias.data.normal_()
    unfolded = nn.Sequential(*block).eval()  # the same modules, run one after the other
    block.eval()
    assert torch.allclose(block(x), unfolded(x), atol=1e-5)
    block.train()  # training mode normalises with the batch's statistics, not the running ones
    assert not torch.allclose(block(x), unfolded(x), atol=1e-3)


def test_instance_norm_on_channels_last_input_matches_torch():
    from seg25d.models.blocks import InstanceNorm2d

    torch.manual_seed(0)
    ours, ref = InstanceNorm2d(6, affine=True), nn.InstanceNorm2d(6, affine=True)
    ref.weight.data.uniform_(0.5, 2.0), ref.bias.data.normal_()
    ours.load_state_dict(ref.state_dict())
    x = (torch.randn(3, 6, 9, 11) * 4 + 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(3, 6, 9, 11)
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the U-Net's next convolution expects it
    expected = ref(x.detach().contiguous())
    assert torch.allclose(y, expected, atol=1e-5)
    assert torch.allclose(y.mean(dim=(2, 3)), ref.bias.expand(3, 6), atol=1e-5)  # really normalised per image
    mine = torch.autograd.grad(y, [x, ours.weight, ours.bias], grad)
    theirs = torch.autograd.grad(ref(x), [x, ref.weight, ref.bias], grad)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(mine, theirs))


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_without_gradients_matches_torch(affine):
    """Inference takes the statistics over a view of the channels-last memory instead of torch's kernel."""
    from seg25d.models.blocks import InstanceNorm2d

    torch.manual_seed(0)
    ours, ref = InstanceNorm2d(5, affine=affine), nn.InstanceNorm2d(5, affine=affine)
    if affine:
        ref.weight.data.uniform_(0.5, 2.0), ref.bias.data.normal_()
        ours.load_state_dict(ref.state_dict())
    x = (torch.randn(4, 5, 7, 9) * 3 + torch.arange(5.0).view(1, 5, 1, 1) * 10).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        y = ours(x)
        expected = ref(x.contiguous())
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, expected, atol=1e-5)
    assert torch.allclose(y.mean(dim=(2, 3)), ref.bias.expand(4, 5) if affine else torch.zeros(4, 5), atol=1e-5)
