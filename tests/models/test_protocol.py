"""One model protocol: a network declares how it is fed, and the pipeline asks nothing else. A new model is
one module plus its registry entry; the toy models below are registered here and go through training and
prediction unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from seg25d.models import Feeding, build, feeding_of, register_model
from seg25d.pipeline.io import read_volume


class ToyVolumeNet(nn.Module):
    """Two 3x3x3 convolutions on the whole volume."""

    feeding = Feeding("volume")

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv3d(width, out_channels, 1))

    def forward(self, x):
        return self.net(x)


class ToyStackNet(nn.Module):
    """A 3x3 convolution over stacks of 3 slices at stride 2 (volumes at inference, stacks in training)."""

    feeding = Feeding("stacks", slices=3, stride=2, edge="mirror")

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(3 * in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        if x.dim() == 4:
            return self.conv(x)
        from seg25d.models.slicestack import stack_indices

        b, c, d, h, w = x.shape
        idx = stack_indices(d, torch.arange(d), 3, 2, "mirror")  # (D, 3)
        stacks = x[:, :, idx].permute(0, 2, 1, 3, 4, 5).reshape(b * d, 3 * c, h, w)
        return self.conv(stacks).view(b, d, -1, h, w).transpose(1, 2)


@pytest.fixture(autouse=True, scope="module")
def toys():
    """The registry entries: all that a new model adds besides its module (removed again after these tests)."""
    from seg25d.models import registry

    names = {"toy_volume": ToyVolumeNet, "toy_stacks": ToyStackNet, "toy_unfed": None}
    register_model("toy_volume")(ToyVolumeNet)
    register_model("toy_stacks")(ToyStackNet)
    register_model("toy_unfed")(lambda in_channels, out_channels: nn.Conv3d(in_channels, out_channels, 1))
    yield
    for name in names:
        registry._REGISTRY.pop(name)


def test_a_network_without_feeding_cannot_be_built():
    with pytest.raises(TypeError, match="declares no feeding"):
        build("toy_unfed", 1, 1)


def test_feeding_is_small_and_checked():
    assert Feeding("slices") == Feeding("slices", 1, 1, "clamp", "same", False)
    assert Feeding("volume").three_d and Feeding("patches").three_d and not Feeding("stacks").three_d
    with pytest.raises(dataclasses.FrozenInstanceError):
        Feeding("slices").kind = "volume"
    with pytest.raises(ValueError, match="kind"):
        Feeding("planes")
    with pytest.raises(ValueError, match="padding"):
        Feeding("slices", padding="full")


def test_every_registered_model_declares_its_feeding():
    expected = {"projection25d": ("volume", True), "unet3d": ("patches", False), "monai_unet": ("patches", False),
                "slicestack25d": ("stacks", False), "unet2d": ("slices", False), "segnet": ("slices", False),
                "unetpp": ("slices", False)}
    for name, (kind, two_paths) in expected.items():
        try:
            feeding = feeding_of(build(name, 1, 1))
        except ValueError:  # monai not installed
            continue
        assert (feeding.kind, feeding.two_paths) == (kind, two_paths), name
    assert feeding_of(build("unet2d", 1, 1, padding="valid")).padding == "valid"
    stack = feeding_of(build("slicestack25d", 1, 1, slices=5, stride=3, edge="mirror",
                             backbone_options={"padding": "valid"}))
    assert (stack.slices, stack.stride, stack.edge, stack.padding) == (5, 3, "mirror", "valid")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=4, shape=(8, 12, 12), seed=0, progress=False)


@pytest.mark.parametrize("name", ["toy_volume", "toy_stacks"])
def test_a_new_model_trains_and_predicts_through_the_pipeline(manifest, tmp_path, name, monkeypatch):
    from seg25d.pipeline import figures
    from seg25d.pipeline.cli import main
    from seg25d.pipeline.config import load_config
    from seg25d.pipeline.data import BatchSampler, step_generator
    from seg25d.pipeline.training import train

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)
    sets = [f"data.manifest='{manifest}'", f"model.name='{name}'", "model.options={}", "train.max_steps=3",
            "train.progress=false", "train.threads=1", "train.slices_per_step=4", "train.val_every=3",
            "train.checkpoint_every=3", "train.precision='fp32'", "train.workers=0"]
    seen = []
    batch = BatchSampler.batch
    monkeypatch.setattr(BatchSampler, "batch", lambda self, g: seen.append(batch(self, g)) or seen[-1])
    result = train(load_config("vessels", sets), tmp_path / "run")
    assert result.steps == 3 and result.validated
    x, y = seen[0]
    if name == "toy_volume":  # whole volumes
        assert x.shape[2:] == y.shape[2:] and x.dim() == 5
    else:  # stacks of 3 slices as channels, one mask slice each
        assert x.shape[:2] == (4, 3) and y.shape[:2] == (4, 1) and x.dim() == 4
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert set(metrics.path) == {0} and np.isfinite(metrics.loss).all()  # no two-path schedule

    out = tmp_path / "predictions"
    assert main(["predict", "--model", str(result.last_checkpoint), "--manifest", str(manifest), "--split", "test",
                 "--out", str(out)]) == 0
    test = pd.read_csv(manifest).query("split == 'test'")
    for row in test.itertuples():
        image = read_volume(Path(manifest).parent / row.image)
        mask = read_volume(next(out.glob(f"{row.case_id}*")))
        assert mask.meta.shape == image.meta.shape
        np.testing.assert_allclose(mask.meta.affine, image.meta.affine)
