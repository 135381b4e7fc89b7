"""Whole-volume prediction (`seg25d.pipeline.volume_inference`) for every model family, TTA and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special
from torch import nn

import seg25d.pipeline.volume_inference as vi
from seg25d.models import Feeding, build
from seg25d.pipeline.volume_inference import logits_to_probabilities, predict_logits, predict_probabilities

TINY_UNET = {"depth": 2, "base_channels": 4}

# name -> (build options, input shape (B, C, D, H, W))
MODELS = {
    "projection25d": (dict(directions=2, train_directions=2, unet=TINY_UNET, head_channels=4, filter_size=7),
                      (1, 1, 6, 8, 10)),
    "slicestack25d": (dict(slices=3, stride=1, backbone_options=TINY_UNET, slice_batch=2), (2, 1, 5, 8, 12)),
    "unet2d": (TINY_UNET, (2, 2, 5, 8, 12)),
    "segnet": (dict(depth=2, base_channels=4), (1, 1, 3, 8, 12)),
    "unetpp": (dict(depth=3, base_channels=4, deep_supervision=True), (1, 1, 3, 8, 12)),
    "unet3d": (TINY_UNET, (1, 1, 6, 8, 10)),
}


def _model(name: str, in_channels: int, out_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    options, _ = MODELS[name]
    return build(name, in_channels, out_channels, **options)


def _input(shape, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


class Pointwise2d(nn.Conv2d):
    """A 1x1 2D convolution: pixel-local, hence equivariant to every flip and independent of tiling."""

    feeding = Feeding("slices")

    def __init__(self, channels_in: int = 1, channels_out: int = 2):
        super().__init__(channels_in, channels_out, 1)


class Pointwise3d(nn.Conv3d):
    feeding = Feeding("patches")

    def __init__(self, channels_in: int = 1, channels_out: int = 2):
        super().__init__(channels_in, channels_out, 1)


class Ramp2d(nn.Module):
    """Logits ``x + a * y/(H-1) + b * x/(W-1)``: position dependent, so TTA has a closed form."""

    feeding = Feeding("slices")

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp_h = torch.linspace(0, 1, h)[:, None]
        ramp_w = torch.linspace(0, 1, w)[None, :]
        return x + self.a * ramp_h + self.b * ramp_w


# --- shapes for every family -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("training", [True, False])
def test_predict_logits_shape_and_mode_for_every_family(name, training):
    _, shape = MODELS[name]
    model = _model(name, shape[1], out_channels=3)
    model.train(training)
    x = _input(shape)
    out = predict_logits(model, x)
    assert isinstance(out, torch.Tensor)  # unetpp with deep supervision in train mode too
    assert tuple(out.shape) == (shape[0], 3, *shape[2:])
    assert torch.isfinite(out).all()
    assert not out.requires_grad
    assert model.training is training
    assert all(m.training is training for m in model.modules())


@pytest.mark.parametrize("name", ["projection25d", "unet3d"])
def test_predict_logits_is_the_eval_mode_forward(name):
    """Train-mode models are evaluated in eval mode: projection25d uses all views (not random ones)."""
    _, shape = MODELS[name]
    model = _model(name, shape[1])
    x = _input(shape)
    model.train()
    first = predict_logits(model, x)
    second = predict_logits(model, x)
    model.eval()
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second, reference)


def test_unet3d_sliding_window_when_the_volume_exceeds_max_voxels(monkeypatch):
    model = _model("unet3d", 1, out_channels=2)
    x = _input((1, 1, 12, 10, 14))
    calls = []
    real = vi.sliding_window_3d

    def spy(net, volume, roi, **kwargs):
        calls.append(roi)
        return real(net, volume, roi=roi, **kwargs)

    monkeypatch.setattr(vi, "sliding_window_3d", spy)
    whole = predict_logits(model, x)
    assert calls == []
    windowed = predict_logits(model, x, roi=(8, 8, 8), max_voxels=500)
    assert calls == [(8, 8, 8)]
    assert windowed.shape == whole.shape == (1, 2, 12, 10, 14)
    assert torch.isfinite(windowed).all()
    # A roi larger than the volume is clipped to it.
    predict_logits(model, x, roi=(96, 96, 96), max_voxels=500)
    assert calls[-1] == (12, 10, 14)


def test_sliding_window_of_a_pointwise_3d_net_equals_the_whole_volume():
    torch.manual_seed(3)
    model = Pointwise3d(1, 2)
    x = _input((1, 1, 12, 10, 14))
    whole = predict_logits(model, x)
    windowed = predict_logits(model, x, roi=(6, 6, 6), max_voxels=100)
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(whole, reference)
    torch.testing.assert_close(windowed, reference, atol=1e-5, rtol=1e-5)


# --- slice-wise 2D ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unet2d", "segnet", "unetpp"])
@pytest.mark.parametrize("slice_batch", [1, 2, 8])
def test_slicewise_prediction_equals_the_2d_net_on_each_slice(name, slice_batch):
    model = _model(name, 2, out_channels=3).train()  # unetpp: deep supervision returns a list in train mode
    x = _input((2, 2, 5, 8, 12))
    out = predict_logits(model, x, slice_batch=slice_batch)
    model.eval()
    with torch.no_grad():
        for b in range(x.shape[0]):
            for d in range(x.shape[2]):
                reference = model(x[b:b + 1, :, d])
                torch.testing.assert_close(out[b:b + 1, :, d], reference, atol=1e-5, rtol=1e-5)


def test_slices_larger_than_the_tile_go_through_overlap_tile(monkeypatch):
    torch.manual_seed(4)
    model = Pointwise2d(1, 2)
    x = _input((1, 1, 3, 20, 24))
    calls = []
    real = vi.overlap_tile_2d

    def spy(net, image, tile, **kwargs):
        calls.append(tile)
        return real(net, image, tile=tile, **kwargs)

    monkeypatch.setattr(vi, "overlap_tile_2d", spy)
    tiled = predict_logits(model, x, tile=8)
    assert calls and all(t == 8 for t in calls)
    with torch.no_grad():
        reference = torch.stack([model(x[:, :, d]) for d in range(3)], dim=2)
    torch.testing.assert_close(tiled, reference, atol=1e-6, rtol=1e-6)


def test_valid_padding_unet_gives_the_input_size():
    torch.manual_seed(5)
    model = build("unet2d", 1, 2, depth=2, base_channels=4, padding="valid")
    x = _input((1, 1, 2, 20, 18))
    out = predict_logits(model, x, tile=64)
    assert tuple(out.shape) == (1, 2, 2, 20, 18)
    assert torch.isfinite(out).all()


def test_slicestack_prediction_equals_stacking_by_hand():
    model = _model("slicestack25d", 1, out_channels=2)
    x = _input((1, 1, 5, 8, 12))
    out = predict_logits(model, x)
    model.eval()
    with torch.no_grad():
        for d in range(5):
            neighbours = [min(max(d + o, 0), 4) for o in (-1, 0, 1)]  # stride 1, clamped at the edges
            stack = x[:, 0, neighbours]  # (1, 3, H, W)
            torch.testing.assert_close(out[:, :, d], model.net(stack), atol=1e-5, rtol=1e-5)


# --- probabilities ---------------------------------------------------------------------------------------------

def test_logits_to_probabilities_sigmoid():
    logits = _input((2, 3, 4, 5, 6)) * 4
    probs = logits_to_probabilities(logits, sigmoid=True)
    assert probs.shape == logits.shape
    np.testing.assert_allclose(probs.numpy(), special.expit(logits.numpy().astype(np.float64)), atol=1e-6)


def test_logits_to_probabilities_softmax_drops_the_background():
    logits = _input((2, 4, 3, 5, 6)) * 4
    probs = logits_to_probabilities(logits, sigmoid=False)
    assert probs.shape == (2, 3, 3, 5, 6)
    reference = special.softmax(logits.numpy().astype(np.float64), axis=1)
    np.testing.assert_allclose(probs.numpy(), reference[:, 1:], atol=1e-6)
    assert (probs.sum(dim=1) <= 1 + 1e-6).all()


def test_predict_probabilities_returns_k_by_volume():
    model = Pointwise2d(1, 3)
    image = _input((1, 4, 6, 7)).numpy()
    sig = predict_probabilities(model, image, sigmoid=True)
    soft = predict_probabilities(model, image, sigmoid=False)
    assert sig.shape == (3, 4, 6, 7) and soft.shape == (2, 4, 6, 7)
    with torch.no_grad():
        logits = torch.stack([model(torch.from_numpy(image)[None, :, d]) for d in range(4)], dim=2)
    np.testing.assert_allclose(sig, special.expit(logits.numpy()[0].astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(soft, special.softmax(logits.numpy()[0].astype(np.float64), axis=0)[1:], atol=1e-6)


# --- TTA -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [Pointwise2d(1, 2), Pointwise3d(1, 2)], ids=["conv1x1_2d", "conv1x1_3d"])
@pytest.mark.parametrize("sigmoid", [True, False])
def test_tta_of_a_flip_equivariant_model_changes_nothing(model, sigmoid):
    image = _input((1, 5, 7, 9)).numpy()
    plain = predict_probabilities(model, image, sigmoid=sigmoid)
    tta = predict_probabilities(model, image, sigmoid=sigmoid, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_tta_undoes_each_flip_closed_form():
    """For logits x + a*rh + b*rw, the flip-undone passes see the ramps reversed: 1 - rh, 1 - rw."""
    a, b = 3.0, -2.0
    image = _input((1, 3, 6, 9)).numpy()
    tta = predict_probabilities(Ramp2d(a, b), image, sigmoid=True, tta=True)
    plain = predict_probabilities(Ramp2d(a, b), image, sigmoid=True)
    x = image[0].astype(np.float64)
    rh = np.linspace(0, 1, 6)[:, None]
    rw = np.linspace(0, 1, 9)[None, :]
    passes = [special.expit(x + a * h + b * w) for h in (rh, 1 - rh) for w in (rw, 1 - rw)]
    np.testing.assert_allclose(tta[0], np.mean(passes, axis=0), atol=1e-6)
    np.testing.assert_allclose(plain[0], special.expit(x + a * rh + b * rw), atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-3)


def test_tta_equals_the_mean_over_flips_for_a_real_network():
    model = _model("unet2d", 1, out_channels=2)
    image = _input((1, 4, 8, 12)).numpy()
    tta = predict_probabilities(model, image, sigmoid=True, tta=True)
    x = torch.from_numpy(image)[None]
    passes = []
    for dims in [(), (3,), (4,), (3, 4)]:
        logits = predict_logits(model, x.flip(dims) if dims else x)
        logits = logits.flip(dims) if dims else logits
        passes.append(special.expit(logits[0].numpy().astype(np.float64)))
    np.testing.assert_allclose(tta, np.mean(passes, axis=0), atol=1e-5)
    assert not np.allclose(tta, passes[0], atol=1e-4)  # the model is not flip-equivariant


# --- train/eval mode restored -----------------------------------------------------------------------------------

class Exploding(nn.Module):
    feeding = Feeding("slices")

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("training", [True, False])
def test_mode_is_restored_after_an_exception(training):
    model = Exploding().train(training)
    with pytest.raises(RuntimeError, match="boom"):
        predict_logits(model, _input((1, 1, 2, 4, 4)))
    assert model.training is training and model.bn.training is training


def test_predict_probabilities_restores_train_mode_and_batchnorm_statistics():
    model = _model("unet2d", 1, out_channels=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict_probabilities(model, _input((1, 3, 8, 8)).numpy(), sigmoid=True, tta=True)
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])  # eval mode: running statistics untouched
