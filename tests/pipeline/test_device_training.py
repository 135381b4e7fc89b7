"""Training, prediction and checkpoints on each available device (the CPU always, CUDA when there is one),
the device flags of the commands, and the import set the GPU benchmarks rely on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from seg25d.pipeline.callbacks import TrainerCallback
from seg25d.pipeline.checkpoint import load_checkpoint, load_model, rng_state, save_checkpoint, set_rng_state
from seg25d.pipeline.cli import build_parser, main
from seg25d.pipeline.config import load_config
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.predict import jobs_from_manifest, predict_batch
from seg25d.pipeline.training import train

TINY_P25 = ("model.options={directions=2, train_directions=2, unet={depth=2, base_channels=4}, head_channels=4, "
            "filter_size=7}")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=4, shape=(10, 12, 12), seed=0, progress=False)


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    from seg25d.pipeline import figures

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)


def _config(manifest, *extra, steps=2):
    return load_config("vessels", [f"data.manifest='{manifest}'", f"train.max_steps={steps}", "train.progress=false",
                                   "train.threads=1", "train.checkpoint_every=2", "train.val_every=2",
                                   "train.warmup_steps=1", "train.precision='fp32'", "train.workers=0", TINY_P25,
                                   *extra])


def _weights(path) -> dict:
    return load_checkpoint(path)["model_state"]


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# --- end to end on each device -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["projection25d", "unet2d"])
def test_train_and_predict_on_each_device(manifest, tmp_path, device, model):
    extra = ["model.name='unet2d'", "model.options={depth=2, base_channels=4}",
             "train.slices_per_step=4"] if model == "unet2d" else []
    result = train(_config(manifest, f"train.device='{device}'", *extra), tmp_path / "run")
    assert result.steps == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["device"].split(" ")[0].startswith(device.type) and run["precision"] == "fp32"
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert np.isfinite(metrics.loss).all() and ("peak_gpu_mb" in metrics) == (device.type == "cuda")
    assert all(t.device.type == "cpu" for t in _weights(result.last_checkpoint).values())  # portable

    jobs = jobs_from_manifest(manifest, "test")
    report = predict_batch(result.last_checkpoint, jobs, tmp_path / "pred", progress=False, device=str(device))
    assert report["predicted"] == len(jobs) and not report["failed"]
    assert json.loads((tmp_path / "pred" / "prediction.json").read_text())["device"].startswith(device.type)
    for job in jobs:
        mask, image = read_volume(tmp_path / "pred" / job.name), read_volume(job.image)
        assert mask.array.shape == image.array.shape
        np.testing.assert_array_equal(mask.meta.affine, image.meta.affine)


def test_a_device_run_predicts_the_cpu_run_s_masks(manifest, tmp_path, device):
    """The same checkpoint on the device and on the CPU: the same masks but for voxels at the threshold."""
    result = train(_config(manifest, "train.device='cpu'"), tmp_path / "run")
    jobs = jobs_from_manifest(manifest, "test")
    for where in ("cpu", str(device)):
        predict_batch(result.last_checkpoint, jobs, tmp_path / where, progress=False, device=where,
                      probabilities=True)
    for job in jobs:
        for name in ("vessel",):
            path = f"probabilities/{job.case_id}_{name}.nii.gz"
            cpu, other = read_volume(tmp_path / "cpu" / path).array, read_volume(tmp_path / str(device) / path).array
            np.testing.assert_allclose(other, cpu, atol=1e-4 if device.type == "cuda" else 0)


def test_cpu_precision_of_prediction_defaults_to_fp32_and_fp16_is_refused(manifest, tmp_path, capsys):
    result = train(_config(manifest, "train.device='cpu'"), tmp_path / "run")
    jobs = jobs_from_manifest(manifest, "test")
    predict_batch(result.last_checkpoint, jobs, tmp_path / "pred", progress=False, device="cpu")
    assert json.loads((tmp_path / "pred" / "prediction.json").read_text())["precision"] == "fp32"
    code = main(["predict", "--model", str(result.last_checkpoint), "--manifest", str(manifest), "--split", "test",
                 "--out", str(tmp_path / "p16"), "--device", "cpu", "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fp16" in err[0] and "CUDA" in err[0]


# --- the device switch --------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "predict", "demo"])
def test_cuda_on_a_machine_without_it_is_one_line_exit_2(manifest, tmp_path, capsys, command):
    args = {"train": ["train", "--out", str(tmp_path / "run"), "--set", f"data.manifest='{manifest}'"],
            "predict": ["predict", "--model", str(tmp_path / "missing.pt"), "--input", str(manifest),
                        "--out", str(tmp_path / "pred")],
            "demo": ["demo", "--out", str(tmp_path / "demo"), "--cases", "4", "--minutes", "0.01"]}[command]
    if command == "predict":  # the checkpoint must be read before the device: make a real one
        result = train(_config(manifest, "train.device='cpu'"), tmp_path / "ok")
        args[2] = str(result.last_checkpoint)
    code = main([*args, "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"seg25d {command}: error: device: 'cuda' asked for, but no CUDA GPU is available")
    assert not any((tmp_path / name).exists() for name in ("run", "pred", "demo"))  # refused before any work


@pytest.mark.parametrize("args", [
    ["train", "--out", "r"], ["predict", "--model", "m.pt", "--input", "x.nii.gz", "--out", "o"],
    ["demo"], ["kaggle", "train", "--root", "r", "--out", "o"], ["kaggle", "submit", "--model", "m.pt", "--root",
                                                                  "r", "--out", "s.csv"],
    ["bench", "scaling", "--out", "o"], ["bench", "compare", "--manifest", "m.csv", "--budget-minutes", "1",
                                         "--out", "o"],
    ["bench", "models"], ["bench", "memory", "--out", "o"],
])
def test_every_command_that_runs_a_network_takes_device(args):
    parsed = build_parser().parse_args([*args, "--device", "cuda:1"])
    assert parsed.device == "cuda:1"
    assert build_parser().parse_args(args).device is None  # unset: train.device (default auto) decides


def test_device_flag_sets_train_device(manifest, tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--device", "cpu", "--precision", "fp32",
                 "--set", f"data.manifest='{manifest}'", "--set", "train.max_steps=1", "--set", "train.progress=false",
                 "--set", "train.workers=0", "--set", TINY_P25])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["device"] == "cpu" and config["train"]["precision"] == "fp32"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "cpu"


def test_auto_device_is_the_cpu_without_cuda(manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train(_config(manifest, steps=1), tmp_path / "run")
    assert load_config("vessels")["train"]["device"] == "auto"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "cpu"


def test_under_torchrun_each_process_trains_on_its_own_gpu(monkeypatch):
    from seg25d.pipeline import training
    from seg25d.pipeline.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(InputError) as err:
        training._Distributed(torch.device("cuda", 1))
    assert "own GPU (cuda:0 here), not cuda:1" in str(err.value)


# --- checkpoints and resume across devices ------------------------------------------------------------------------

def test_checkpoint_from_the_device_loads_on_the_cpu(tmp_path, device):
    from seg25d.models import build

    torch.manual_seed(0)
    model = build("unet2d", 1, 2, depth=2, base_channels=4).to(device)
    save_checkpoint(tmp_path / "m.pt", {"model_config": model.config, "model_state": model.state_dict()})
    loaded = load_model(tmp_path / "m.pt")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.device.type == "cpu" and torch.equal(a.cpu(), b), name


def test_rng_state_with_a_gpu_entry_restores_on_the_cpu():
    """A checkpoint written on a GPU machine carries the GPUs' generator states: the CPU states come back and
    the GPU entry is skipped where the machine has no such GPUs."""
    torch.manual_seed(3)
    np.random.seed(3)
    state = rng_state()
    expected = (torch.rand(4), np.random.rand(4))
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8  # eight GPUs this machine does not have
    torch.manual_seed(99)
    set_rng_state(state)
    torch.testing.assert_close(torch.rand(4), expected[0], rtol=0, atol=0)
    np.testing.assert_array_equal(np.random.rand(4), expected[1])


class _Stop(TrainerCallback):
    def __init__(self, at: int):
        self.at = at

    def before_step(self, trainer):
        if trainer.step == self.at:
            raise KeyboardInterrupt  # as a killed run: last.pt holds step ``at``


def test_resume_from_a_gpu_machine_s_checkpoint_is_bit_identical_on_the_cpu(manifest, tmp_path):
    """A run stopped after 2 of 4 steps whose last.pt carries GPU generator states (as written on a GPU machine)
    resumes on the CPU and ends with the weights of an uninterrupted CPU run."""
    whole = train(_config(manifest, "train.device='cpu'", steps=4), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(_config(manifest, "train.device='cpu'", steps=4), tmp_path / "part", callbacks=[_Stop(2)])
    last = tmp_path / "part" / "last.pt"
    payload = load_checkpoint(last)
    assert payload["step"] == 2
    payload["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    save_checkpoint(last, {k: v for k, v in payload.items() if k not in ("format", "version")})
    resumed = train(_config(manifest, "train.device='cpu'", steps=4), tmp_path / "part", resume=True)
    assert resumed.steps == 4
    _assert_same_weights(_weights(whole.last_checkpoint), _weights(resumed.last_checkpoint))


# --- hidden CPU-only code in the training step --------------------------------------------------------------------

class _MetaGuard(TrainerCallback):
    """Runs the steps from ``first`` on with the default device set to meta: a tensor made there without a
    device meets the CPU model and raises. (The batches come from a loader process, host-side by design.)"""

    def __init__(self, first: int):
        self.first, self.guard, self.active = first, torch.device("meta"), False

    def before_step(self, trainer):
        if trainer.step >= self.first:
            self.guard.__enter__()
            self.active = True

    def after_step(self, trainer, row):
        self.close()

    def close(self):
        if self.active:
            self.guard.__exit__(None, None, None)
            self.active = False


@pytest.mark.parametrize("model", ["projection25d", "unet2d"])
def test_training_steps_create_no_tensor_without_a_device(manifest, tmp_path, model):
    """Steps 2 and 3 (step 1 plain: the optimiser makes its state there) under the guard give the weights of an
    unguarded run, so a step makes every tensor where its inputs live, as it must on a GPU; projection25d
    alternates the paths, so path 2 is guarded too."""
    extra = ["model.name='unet2d'", "model.options={depth=2, base_channels=4}",
             "train.slices_per_step=4"] if model == "unet2d" else ["train.schedule='alternate'",
                                                                    "train.alternate_every=2"]
    plain = train(_config(manifest, "train.workers=1", *extra, steps=3), tmp_path / "plain")
    guard = _MetaGuard(1)
    try:
        guarded = train(_config(manifest, "train.workers=1", *extra, steps=3), tmp_path / "guarded",
                        callbacks=[guard])
    finally:
        guard.close()
    metrics = pd.read_csv(tmp_path / "guarded" / "metrics.csv")
    assert list(metrics.path) == ([1, 2, 1] if model == "projection25d" else [0, 0, 0])
    _assert_same_weights(_weights(plain.last_checkpoint), _weights(guarded.last_checkpoint))


@pytest.mark.parametrize("name, options", [
    ("projection25d", {"directions": 2, "train_directions": 2, "unet": {"depth": 2, "base_channels": 4},
                       "head_channels": 4, "filter_size": 7}),
    ("unet2d", {"depth": 2, "base_channels": 4}),
    ("unet3d", {"depth": 2, "base_channels": 4}),
])
def test_prediction_creates_no_tensor_without_a_device(name, options):
    """The whole-volume entry point (with flips) under the guard gives the unguarded probabilities."""
    from seg25d.models import build
    from seg25d.pipeline.volume_inference import predict_probabilities

    torch.manual_seed(0)
    model = build(name, 1, 1, **options).eval()
    image = np.random.default_rng(0).random((1, 8, 12, 12), dtype=np.float32)
    plain = predict_probabilities(model, image, True, tta=True, tile=8, max_voxels=500)
    with torch.device("meta"):
        guarded = predict_probabilities(model, image, True, tta=True, tile=8, max_voxels=500)
    np.testing.assert_array_equal(guarded, plain)


# --- what the GPU machine has -------------------------------------------------------------------------------------

def test_training_and_benchmarks_import_no_file_format_library_nor_monai():
    code = ("import sys, seg25d.pipeline.training, seg25d.pipeline.bench.step, seg25d.pipeline.bench.scaling; "
            "print([m for m in ('nibabel', 'SimpleITK', 'monai') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from seg25d.pipeline import io
    from seg25d.pipeline.io.nifti import NibabelIO

    assert io._NIFTI_EXTENSIONS == NibabelIO.extensions  # what picks the backend without importing it


def test_scaling_records_a_step_out_of_gpu_memory_as_oom():
    from seg25d.pipeline.bench.scaling import _watch
    from seg25d.pipeline.bench.step import OOM_EXIT

    result, status = _watch([sys.executable, "-c", f"import sys; sys.exit({OOM_EXIT})"], {}, 4096, 60)
    assert result is None and status == "oom"


def test_step_benchmark_on_each_device(device):
    from seg25d.pipeline.bench.models import bench_models
    from seg25d.pipeline.bench.step import measure

    row = measure("unet2d", (4, 16, 16), {"depth": 2, "base_channels": 4}, repeats=1, batch=2, device=str(device))
    assert row["device"].startswith(device.type) and row["step_seconds"] > 0 and row["step_peak_extra_mb"] >= 0
    models = bench_models((4, 16, 16), repeats=1, models=["unet2d"], device=str(device))
    assert models[0]["device"].startswith(device.type) and models[0]["forward_seconds"] > 0
