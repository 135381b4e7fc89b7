"""Pretrained encoders as backbones (models/encoders.py): unet2d, slicestack25d and projection25d's 2D U-Net on
two encoder families train, save and reload; local weight files reach the stem as smp maps them; a failed
download or a missing package is one line. CPU only, no internet (random or test-written weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg25d.models import build
from seg25d.models.encoders import EncoderUNet, build_unet2d, with_encoder
from seg25d.pipeline.checkpoint import load_checkpoint, load_model
from seg25d.pipeline.cli import main
from seg25d.pipeline.config import load_config
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.training import train
from seg25d.pipeline.volume_inference import predict_probabilities

try:  # smp needs torchvision, whose PyPI wheels need a CUDA build of torch
    import segmentation_models_pytorch as smp

    SMP_ERROR = None
except ImportError as err:
    smp, SMP_ERROR = None, err

needs_smp = pytest.mark.skipif(smp is None, reason=f"pip install seg25d[encoders] (cannot import "
                                                   f"segmentation_models_pytorch: {SMP_ERROR})")
ENCODERS = ["resnet18", "efficientnet-b0"]  # torchvision's ResNet and smp's EfficientNet
TINY = {"depth": 3, "base_channels": 4}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=4, shape=(10, 20, 18), seed=0, progress=False)


@pytest.fixture
def no_curves(monkeypatch):
    from seg25d.pipeline import figures

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)


SMALL = {"unet2d": dict(TINY), "slicestack25d": {"slices": 3, "stride": 2, "backbone_options": dict(TINY)},
         "projection25d": {"directions": 2, "train_directions": 2, "unet": dict(TINY), "head_channels": 4,
                           "filter_size": 7}}


def _options(model: str, encoder: str, weights=None) -> dict:
    return with_encoder(model, SMALL[model], encoder, weights)


def _config(manifest, model: str, options: dict) -> dict:
    config = load_config(None, [f"data.manifest='{manifest}'", f"model.name={model}", "train.max_steps=3",
                                "train.progress=false", "train.threads=1", "train.slices_per_step=4",
                                "train.val_every=3", "train.checkpoint_every=3", "train.warmup_steps=1",
                                "train.precision='fp32'", "train.lr=0.01"])
    config["model"]["options"] = options
    return config


def _encoder_state(model: torch.nn.Module) -> dict:
    return {k: v for k, v in model.state_dict().items() if ".encoder." in f".{k}"}


def _stem_state(encoder: str, seed: int = 1) -> dict:
    """A 3-channel encoder's state dict with every tensor random (so that no default init can match it)."""
    torch.manual_seed(seed)
    net = smp.encoders.get_encoder(encoder, in_channels=3, depth=3, weights=None)
    return {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in net.state_dict().items()}


def _first_conv(model: torch.nn.Module) -> torch.Tensor:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach()


# --- the three models train, save and reload -------------------------------------------------------------------

@needs_smp
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("model", ["unet2d", "slicestack25d", "projection25d"])
def test_models_train_save_and_reload(manifest, tmp_path, model, encoder, no_curves):
    config = _config(manifest, model, _options(model, encoder))
    torch.manual_seed(0)
    initial = build(model, 1, 1, **config["model"]["options"])
    result = train(config, tmp_path / "run")
    assert result.steps == 3
    payload = load_checkpoint(result.last_checkpoint)
    rebuilt = load_model(result.last_checkpoint)
    assert any(isinstance(m, EncoderUNet) and m.encoder_name == encoder for m in rebuilt.modules())
    for k, v in payload["model_state"].items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    trained, before = _encoder_state(rebuilt), _encoder_state(initial)
    assert trained.keys() == before.keys() and trained
    assert any(not torch.equal(trained[k], before[k]) for k in trained)  # the encoder trained
    image = np.random.default_rng(0).normal(size=(1, 9, 21, 17)).astype(np.float32)
    probs = predict_probabilities(rebuilt, image, sigmoid=True)
    assert probs.shape == (1, 9, 21, 17) and np.isfinite(probs).all()


@needs_smp
@pytest.mark.parametrize("model", ["unet2d", "slicestack25d", "projection25d"])
def test_checkpoints_store_the_weights_not_their_source(manifest, tmp_path, model, no_curves):
    from seg25d.models import projection25d

    if model == "projection25d" and not hasattr(projection25d, "build_unet2d"):
        pytest.skip("models/projection25d.py does not build its U-Net with build_unet2d yet")
    path = tmp_path / "resnet18.pt"
    torch.save(_stem_state("resnet18"), path)
    result = train(_config(manifest, model, _options(model, "resnet18", str(path))), tmp_path / "run")
    path.unlink()  # rebuilding must not need the file (nor a download)
    options = load_checkpoint(result.last_checkpoint)["model_config"]["options"]
    unet = {"unet2d": options, "slicestack25d": options.get("backbone_options"), "projection25d": options.get("unet")}
    assert unet[model]["encoder"] == "resnet18" and unet[model]["encoder_weights"] is None
    load_model(result.last_checkpoint)


# --- weights from a local file ----------------------------------------------------------------------------------

@needs_smp
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_a_local_weights_file_reaches_the_stem_as_smp_maps_it(tmp_path, encoder, in_channels):
    state = _stem_state(encoder)
    path = tmp_path / "encoder.pth"
    torch.save(state, path)
    net = build("unet2d", in_channels, 2, encoder=encoder, encoder_weights=str(path), **TINY)
    stem = state[next(k for k in state if k.endswith("weight") and state[k].dim() == 4)]
    # smp's rule: one channel sums the RGB filters; n channels cycle through them, scaled by 3 / n
    want = stem.sum(1, keepdim=True) if in_channels == 1 else stem[:, [i % 3 for i in range(in_channels)]] * (
        3 / in_channels)
    torch.testing.assert_close(_first_conv(net), want, rtol=1e-6, atol=1e-6)
    loaded = net.encoder.state_dict()
    for k, v in state.items():
        if loaded[k].shape == v.shape:
            assert torch.equal(loaded[k], v), k


@needs_smp
def test_a_timm_weights_file_with_its_classifier_loads_into_a_tu_encoder(tmp_path):
    import timm

    torch.manual_seed(2)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in timm.create_model("resnet10t").state_dict().items()}  # has fc.weight, fc.bias
    path = tmp_path / "resnet10t.pth"
    torch.save(state, path)
    net = build("unet2d", 3, 2, encoder="tu-resnet10t", encoder_weights=str(path), **TINY)
    torch.testing.assert_close(_first_conv(net), state["conv1.0.weight"])
    assert net(torch.zeros(1, 3, 24, 40)).shape == (1, 2, 24, 40)


@needs_smp
def test_bad_weights_files_are_named(tmp_path):
    with pytest.raises(InputError, match="absent.pth: encoder weights file not found"):
        build_unet2d(1, 2, encoder="resnet18", encoder_weights=str(tmp_path / "absent.pth"))
    other = tmp_path / "other.pt"
    torch.save(_stem_state("efficientnet-b0"), other)
    with pytest.raises(InputError, match=r"other\.pt: not a state dict of encoder .*tensors missing"):
        build_unet2d(1, 2, encoder="resnet18", encoder_weights=str(other), **TINY)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk\.pt: not a readable weights file"):
        build_unet2d(1, 2, encoder="resnet18", encoder_weights=str(junk), **TINY)


# --- downloads and the optional packages ------------------------------------------------------------------------

@needs_smp
def test_an_unreachable_download_is_one_line(manifest, tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise ConnectionError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline)
    with pytest.raises(InputError, match=r"cannot download the weights of encoder 'resnet18' \(ConnectionError\)"
                                         r".*encoder_weights=PATH"):
        build("unet2d", 1, 2, encoder="resnet18", encoder_weights="imagenet")
    args = ["train", "--out", str(tmp_path / "run"), "--set", f"data.manifest='{manifest}'", "--set",
            "model.name=unet2d", "--set", "model.options={encoder='resnet18', encoder_weights='imagenet'}", "--set",
            "train.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "encoder_weights=PATH" in err and "Traceback" not in err


@needs_smp
def test_options_smp_has_no_counterpart_for_are_refused():
    with pytest.raises(ValueError, match="padding='valid': not available with an encoder"):
        build("unet2d", 1, 2, encoder="resnet18", padding="valid")
    with pytest.raises(ValueError, match="encoder_weights needs an encoder"):
        build("unet2d", 1, 2, encoder_weights="imagenet")
    with pytest.raises(ValueError, match="depth must be 3, 4 or 5"):
        build("unet2d", 1, 2, encoder="resnet18", depth=2)
    with pytest.raises(ValueError, match="Wrong encoder name"):
        build("unet2d", 1, 2, encoder="resnet17")


def test_with_encoder_puts_the_encoder_where_each_model_keeps_its_unet():
    given = {"slices": 3, "backbone_options": {"depth": 4}}
    assert with_encoder("slicestack25d", given, "resnet34") == {
        "slices": 3, "backbone_options": {"depth": 4, "encoder": "resnet34", "encoder_weights": ""}}
    assert given == {"slices": 3, "backbone_options": {"depth": 4}}  # the caller's options are left alone
    assert with_encoder("projection25d", {"preset": "default"}, "tu-convnext_tiny", "w.pt") == {
        "preset": "default", "unet": {"encoder": "tu-convnext_tiny", "encoder_weights": "w.pt"}}
    assert with_encoder("unet2d", {}, "resnet18") == {"encoder": "resnet18", "encoder_weights": ""}
    with pytest.raises(ValueError, match="monai_unet has no 2D U-Net"):
        with_encoder("monai_unet", {}, "resnet18")


@needs_smp
@pytest.mark.parametrize("size", [(16, 16), (37, 50), (65, 33)])
def test_any_slice_size_keeps_its_shape_and_channels_last_inputs_work(size):
    net = build("unet2d", 2, 3, encoder="resnet18", **TINY).eval()
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        a = net(x)
        b = net(x.contiguous(memory_format=torch.channels_last))
    assert a.shape == (2, 3, *size) and a.is_contiguous()
    torch.testing.assert_close(a, b)


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import raises ImportError
    with pytest.raises(InputError, match=r"pip install seg25d\[encoders\]") as info:
        build("unet2d", 1, 2, encoder="resnet18")
    assert "\n" not in str(info.value)


# --- the competition preset -------------------------------------------------------------------------------------

@needs_smp
def test_the_gi_kaggle_preset_trains_folds_and_submits_with_tta(tmp_path, no_curves, capsys):
    from seg25d.pipeline.kaggle.layout import scan_case_days
    from seg25d.pipeline.synth.gi import write_gi_dataset

    preset = load_config("gi_kaggle")
    backbone = preset["model"]["options"]["backbone_options"]
    assert preset["model"]["options"]["slices"] == 5 and backbone["encoder_weights"] == "imagenet"
    root = tmp_path / "gi"
    write_gi_dataset(root, cases=3, seed=0, days=(1, 2), slices=(12, 16), sizes=[(40, 32, 1.5, 1.5)], progress=False)
    run = tmp_path / "run"
    sets = ["model.options.backbone_options.encoder_weights=''", "train.max_steps=2", "train.slices_per_step=2",
            "train.val_every=2", "train.checkpoint_every=2", "train.warmup_steps=1", "train.progress=false"]
    args = ["kaggle", "train", "--root", str(root), "--out", str(run), "--config", "gi_kaggle", "--folds", "3",
            "--fold", "0"]
    for text in sets:
        args += ["--set", text]
    assert main(args) == 0, capsys.readouterr().err
    options = load_checkpoint(run / "fold0" / "best.pt")["model_config"]["options"]
    assert options["backbone_options"]["encoder"] == "efficientnet-b3"
    assert options["backbone_options"]["encoder_weights"] is None
    out = tmp_path / "submission.csv"
    assert main(["kaggle", "submit", "--tta", "--model", str(run / "fold0" / "best.pt"), "--root", str(root),
                 "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "id,class,predicted"
    assert len(lines) - 1 == 3 * sum(len(c.slice_numbers) for c in scan_case_days(root, "train"))
