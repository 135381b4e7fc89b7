"""Training end to end on a tiny synthetic set: every model through ``seg25d train``, checkpoints, bit-exact
reproducibility, resume after ``kill -9``, the two-path schedule of projection25d, and ``torchrun``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from seg25d.pipeline import training
from seg25d.pipeline.checkpoint import FORMAT, VERSION, load_checkpoint, load_model
from seg25d.pipeline.cli import main
from seg25d.pipeline.config import load_config
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.training import train

TINY_P25 = "model.options={directions=2, train_directions=2, unet={depth=2, base_channels=4}, head_channels=4, " \
           "filter_size=7}"
RUN_FILES = {"config.json", "plan.json", "run.json", "last.pt", "best.pt", "metrics.csv", "curves.png"}
MODELS = {
    "projection25d": ["model.name=projection25d", TINY_P25],
    "projection25d-paper": ["model.name=projection25d", "model.options={preset='paper', directions=2, "
                            "train_directions=2, unet={depth=2, base_channels=4}, filter_size=7}"],
    "slicestack25d": ["model.name=slicestack25d",
                      "model.options={slices=3, stride=2, backbone_options={depth=2, base_channels=4}}"],
    "unet2d": ["model.name=unet2d", "model.options={depth=2, base_channels=4}"],
    "segnet": ["model.name=segnet", "model.options={depth=2, base_channels=4}"],
    "unetpp": ["model.name=unetpp", "model.options={depth=2, base_channels=4, deep_supervision=true}"],
    "unet3d": ["model.name=unet3d", "model.options={depth=2, base_channels=4}"],
    "unet3d-patches": ["model.name=unet3d", "model.options={depth=2, base_channels=4}", "data.patch_size=[8, 8, 8]",
                       "train.batch_size=2"],
    "monai_unet": ["model.name=monai_unet", "model.options={channels=[4, 8], strides=[2], num_res_units=1}"],
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    path = write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=5, shape=(12, 16, 16), seed=0, progress=False)
    frame = pd.read_csv(path)
    assert set(frame.split) == {"train", "val", "test"}
    return path


@pytest.fixture
def no_curves(monkeypatch):
    """Skip drawing curves.png (the slowest part of a tiny step) where a test does not look at it."""
    from seg25d.pipeline import figures

    monkeypatch.setattr(figures, "training_curves", lambda metrics, path: path)


def _sets(manifest, *extra, steps=3) -> list[str]:
    return [f"data.manifest='{manifest}'", f"train.max_steps={steps}", "train.progress=false", "train.threads=1",
            "train.slices_per_step=4", "train.val_every=2", "train.checkpoint_every=2", "train.warmup_steps=1",
            "train.precision='fp32'", *extra]  # fp32: the same numbers on every CPU


def _cli(out, sets, *flags) -> list[str]:
    args = ["train", "--out", str(out), *flags]
    for s in sets:
        args += ["--set", s]
    return args


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model_state"]


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _record_states(monkeypatch) -> dict[int, dict]:
    """Keep a copy of the model state of every checkpoint the trainer writes, by step."""
    states: dict[int, dict] = {}
    original = training.save_checkpoint

    def recording(path, payload):
        states.setdefault(int(payload["step"]), {k: v.detach().clone() for k, v in payload["model_state"].items()})
        return original(path, payload)

    monkeypatch.setattr(training, "save_checkpoint", recording)
    return states


def _keep_last_checkpoints(monkeypatch) -> dict[int, bytes]:
    """Keep the bytes of every ``last.pt`` the trainer writes, by step."""
    saved, original = {}, training.save_checkpoint

    def keep(path, payload):
        result = original(path, payload)
        if path.name == "last.pt":
            saved[payload["step"]] = path.read_bytes()
        return result

    monkeypatch.setattr(training, "save_checkpoint", keep)
    return saved


def _part(state: dict, prefix: tuple[str, ...]) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# --- every model through the command ---------------------------------------------------------------------------

def test_every_registered_model_is_covered():
    from seg25d.models import list_models

    assert set(list_models()) <= {spec[0].split("=")[1] for spec in MODELS.values()}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_through_the_command(manifest, tmp_path, name, capsys):
    out = tmp_path / name
    sets = _sets(manifest, *MODELS[name])
    assert main(_cli(out, sets)) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.step) == [0, 1, 2]
    columns = {"path", "loss", "loss_main", "loss_aux", "lr", "step_seconds", "seconds", "val_dice_vessel",
               "val_dice_mean"}
    assert columns <= set(metrics) and "peak_extra_mb" not in metrics  # no memory probe outside benchmarks
    assert np.isfinite(metrics.loss).all() and np.isfinite(metrics.loss_main).all()
    projection = name.startswith("projection25d")
    assert list(metrics.path) == ([1, 1, 1] if projection else [0, 0, 0])
    assert metrics.loss_aux.notna().all() == (name == "projection25d")  # only the default preset has the aux loss
    # validation after step 2 (val_every) and at the end; Dice in [0, 1]
    assert metrics.val_dice_vessel.isna().tolist() == [True, False, False]
    assert metrics.val_dice_vessel.dropna().between(0, 1).all()
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["model_config"]["name"] == MODELS[name][0].split("=")[1]
    assert checkpoint["step"] == 3
    model = load_model(out / "best.pt")
    assert not model.training


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_in_bf16(manifest, tmp_path, name, no_curves):
    result = train(load_config("vessels", _sets(manifest, *MODELS[name], "train.precision='bf16'", steps=2)),
                   tmp_path / name)
    assert result.steps == 2 and json.loads((tmp_path / name / "run.json").read_text())["precision"] == "bf16"
    metrics = pd.read_csv(tmp_path / name / "metrics.csv")
    assert np.isfinite(metrics.loss).all() and metrics.val_dice_mean.dropna().between(0, 1).all()


# --- callbacks -------------------------------------------------------------------------------------------------

def test_callbacks_see_every_step_and_validation(manifest, tmp_path, no_curves):
    from seg25d.pipeline.callbacks import TrainerCallback
    from seg25d.pipeline.memory import StepMemory

    class Recorder(TrainerCallback):
        def __init__(self):
            self.events = []

        def before_step(self, trainer):
            self.events.append(("before", trainer.step, trainer.elapsed))

        def after_step(self, trainer, row):
            self.events.append(("after", trainer.step, row["step"]))
            row["seen_by_callback"] = trainer.step

        def after_validation(self, trainer, scores):
            self.events.append(("validation", trainer.step, sorted(scores)))

    recorder = Recorder()
    train(load_config("vessels", _sets(manifest, *MODELS["unet2d"])), tmp_path / "run",
          callbacks=[recorder, StepMemory()])
    kinds = [(kind, step) for kind, step, _ in recorder.events]
    assert kinds == [("before", 0), ("after", 1), ("before", 1), ("after", 2), ("validation", 2), ("before", 2),
                     ("after", 3), ("validation", 3)]
    assert recorder.events[0][2] == 0.0 and recorder.events[2][2] > 0  # the step seconds so far
    assert recorder.events[4][2] == ["val_dice_mean", "val_dice_vessel"]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics.seen_by_callback) == [1, 2, 3]  # a callback's columns reach metrics.csv
    if os.path.exists("/proc/self/clear_refs"):
        assert (metrics.peak_extra_mb >= 0).all()


# --- checkpoints -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "p25"
    config = load_config("vessels", _sets(manifest, TINY_P25))
    result = train(config, out)
    return out, config, result


def test_train_result_and_config_json(small_run):
    out, config, result = small_run
    assert result.steps == 3 and result.out_dir == out and not result.stopped_by_time
    assert result.last_checkpoint == out / "last.pt" and result.best_checkpoint == out / "best.pt"
    assert json.loads((out / "config.json").read_text()) == config


def test_checkpoint_contents(small_run):
    out, config, _ = small_run
    payload = torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # no pickled code needed
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert {"model_config", "model_state", "optimizer_state", "scheduler_state", "rng", "step", "config", "classes",
            "preprocessing", "task", "sigmoid", "best_score", "elapsed_seconds", "path2_started"} <= set(payload)
    assert payload["step"] == 3 and payload["config"] == config
    assert payload["classes"] == ["vessel"] and payload["sigmoid"] is True
    assert payload["task"] == {"classes": ["vessel"], "values": [1], "encoding": "index"}
    plan = payload["plan"]  # planned: MR-like unnamed channel -> case z-score, the training cases' median spacing
    assert payload["preprocessing"]["normalize"] == plan["normalize"] == ["case_zscore"]
    assert payload["preprocessing"]["spacing"] == plan["spacing"] == plan["fingerprint"]["median_spacing"]
    assert json.loads((out / "plan.json").read_text()) == plan
    assert payload["model_config"]["name"] == "projection25d" and payload["model_config"]["out_channels"] == 1
    model = load_model(out / "last.pt")
    _assert_same_weights(model.state_dict(), payload["model_state"])
    optimizer = payload["optimizer_state"]
    assert len(optimizer["state"]) == len(list(model.parameters()))
    assert all(int(s["step"]) == 3 for s in optimizer["state"].values())
    assert payload["scheduler_state"]["last_epoch"] == 3
    assert set(payload["rng"]) == {"python", "torch", "numpy"}
    assert payload["rng"]["torch"].dtype == torch.uint8
    best = load_checkpoint(out / "best.pt")
    assert best["step"] in (2, 3) and best["best_score"] == payload["best_score"]


def test_corrupt_checkpoint_named(small_run, tmp_path, capsys):
    out, config, _ = small_run
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((out / "last.pt").read_bytes()[:2000])
    problems = ((garbage, "not a readable checkpoint"), (truncated, "not a seg25d checkpoint (empty/truncated file)"))
    for path, problem in problems:
        with pytest.raises(InputError) as info:
            load_checkpoint(path)
        assert str(info.value).startswith(f"{path}: {problem}")
    other = tmp_path / "other.pt"
    torch.save({"model_state": {}}, other)
    with pytest.raises(InputError, match="not a seg25d checkpoint"):
        load_checkpoint(other)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    # resuming a run whose last.pt is corrupt fails with that file's name, exit status 2
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "last.pt").write_bytes(b"\x00" * 100)
    assert main(_cli(run, _sets(config["data"]["manifest"], TINY_P25), "--resume")) == 2
    assert f"{run / 'last.pt'}: not a readable checkpoint" in capsys.readouterr().err


# --- reproducibility -------------------------------------------------------------------------------------------

def test_same_seed_bit_identical_other_seed_differs(manifest, tmp_path, small_run, no_curves):
    out, config, _ = small_run
    again = train(load_config("vessels", _sets(manifest, TINY_P25)), tmp_path / "again")
    _assert_same_weights(_weights(out / "last.pt"), _weights(again.last_checkpoint))
    a, b = pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "again" / "metrics.csv")
    np.testing.assert_array_equal(a.loss, b.loss)
    other = train(load_config("vessels", _sets(manifest, TINY_P25, "train.seed=1")), tmp_path / "other")
    first, second = _weights(out / "last.pt"), _weights(other.last_checkpoint)
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_bf16_training_is_reproducible_and_close_to_fp32(manifest, tmp_path, small_run, no_curves):
    """``train.precision = "bf16"`` autocasts the forward pass: same seed, same weights; the losses stay within
    bf16's rounding of the fp32 run's; run.json records the precision used."""
    out, _, _ = small_run
    runs = [train(load_config("vessels", _sets(manifest, TINY_P25, "train.precision='bf16'")), tmp_path / name)
            for name in ("a", "b")]
    _assert_same_weights(_weights(runs[0].last_checkpoint), _weights(runs[1].last_checkpoint))
    fp32, bf16 = pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "a" / "metrics.csv")
    np.testing.assert_allclose(bf16.loss[0], fp32.loss[0], rtol=0.02)
    assert not np.array_equal(bf16.loss, fp32.loss)  # the forward pass did run in bf16
    assert json.loads((tmp_path / "a" / "run.json").read_text())["precision"] == "bf16"
    assert json.loads((out / "run.json").read_text())["precision"] == "fp32"


def _kill_midway(proc: subprocess.Popen, checkpoint, steps: int, timeout: float = 120.0) -> int | None:
    """SIGKILL ``proc`` once ``checkpoint`` holds a step in [1, steps - 1]; the step it was killed after, or None
    when the run ended on its own first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if proc.returncode != 0:
                pytest.fail(f"training subprocess failed with status {proc.returncode}")
            return None
        step = None
        if checkpoint.exists():
            try:
                step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
            except Exception:  # replaced while we read it: look again
                step = None
        if step is not None and 1 <= step <= steps - 1:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            final = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
            return final if proc.returncode == -signal.SIGKILL and final < steps else None
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail("training subprocess did not checkpoint in time")


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(manifest, tmp_path, no_curves):
    steps = 10
    sets = _sets(manifest, TINY_P25, "train.checkpoint_every=1", "train.val_every=4", "train.path2_fraction=0.3",
                 steps=steps)
    reference = train(load_config("vessels", sets), tmp_path / "a")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for attempt in range(3):
        out = tmp_path / f"b{attempt}"
        with open(tmp_path / f"b{attempt}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "seg25d", *_cli(out, sets)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                killed_after = _kill_midway(proc, out / "last.pt", steps)
            except BaseException:
                print((tmp_path / f"b{attempt}.log").read_text()[-3000:])
                raise
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if killed_after is not None:
            break
    else:
        pytest.fail("the training subprocess always finished before it could be killed")
    assert 1 <= killed_after < steps
    assert main(_cli(out, sets, "--resume")) == 0
    _assert_same_weights(_weights(reference.last_checkpoint), _weights(out / "last.pt"))
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.step) == list(range(steps))
    expected = pd.read_csv(tmp_path / "a" / "metrics.csv")
    np.testing.assert_array_equal(metrics.loss, expected.loss)
    assert list(metrics.path) == list(expected.path) == [1] * 7 + [2] * 3
    assert json.loads((out / "run.json").read_text())["resumed_at_step"] == killed_after


@pytest.mark.parametrize("schedule, resume_at", [("path1_then_path2", 4), ("path1_then_path2", 2),
                                                 ("alternate", 4)])
def test_resume_from_any_checkpoint(manifest, tmp_path, monkeypatch, no_curves, schedule, resume_at):
    """Resuming from the checkpoint of any step (in path 1, in path 2, between alternating paths) ends with the
    weights of the uninterrupted run."""
    steps = 6
    sets = _sets(manifest, TINY_P25, f"train.schedule={schedule}", "train.path2_fraction=0.5",
                 "train.alternate_every=2", "train.checkpoint_every=1", steps=steps)
    saved = _keep_last_checkpoints(monkeypatch)
    reference = train(load_config("vessels", sets), tmp_path / "a")
    run = tmp_path / "b"
    run.mkdir()
    (run / "last.pt").write_bytes(saved[resume_at])
    frame = pd.read_csv(tmp_path / "a" / "metrics.csv")
    frame[frame.step < resume_at + 2].to_csv(run / "metrics.csv", index=False)  # logs may run ahead of last.pt
    result = train(load_config("vessels", sets), run, resume=True)
    assert result.steps == steps
    _assert_same_weights(_weights(reference.last_checkpoint), _weights(run / "last.pt"))
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.step) == list(range(steps))
    np.testing.assert_array_equal(metrics.loss, frame.loss)


# --- weight averaging ------------------------------------------------------------------------------------------

def test_ema_is_the_average_of_the_training_weights(manifest, tmp_path, no_curves):
    """``train.ema``: the checkpoint predicts with d * average + (1 - d) * weights after every step (the first step's
    weights to start), worked out here from the weights each step leaves; training itself is unchanged."""
    from seg25d.pipeline.callbacks import TrainerCallback

    class Weights(TrainerCallback):
        def __init__(self):
            self.states = []

        def after_step(self, trainer, row):
            self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    decay, weights = 0.7, Weights()
    train(load_config("vessels", _sets(manifest, *MODELS["unet2d"], f"train.ema={decay}", steps=4)),
          tmp_path / "ema", callbacks=[weights])
    plain = train(load_config("vessels", _sets(manifest, *MODELS["unet2d"], steps=4)), tmp_path / "plain")
    state = load_checkpoint(tmp_path / "ema" / "last.pt")
    _assert_same_weights(state["training_state"], _weights(plain.last_checkpoint))
    expected = {k: v.double() for k, v in weights.states[0].items()}
    for step_state in weights.states[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * step_state[k].double() for k in expected}
    for k, v in state["model_state"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert state["ema_updates"] == 4
    assert not _equal(state["model_state"], state["training_state"])
    metrics = pd.read_csv(tmp_path / "ema" / "metrics.csv")
    assert metrics.val_dice_mean_raw.notna().sum() == 2 and "val_dice_mean_raw" not in pd.read_csv(
        tmp_path / "plain" / "metrics.csv")
    model = load_model(tmp_path / "ema" / "best.pt")  # predicts with the average
    assert model is not None


def test_ema_run_resumes_bit_identically(manifest, tmp_path, monkeypatch, no_curves):
    sets = _sets(manifest, TINY_P25, "train.ema=0.8", "train.checkpoint_every=1", steps=4)
    saved = _keep_last_checkpoints(monkeypatch)
    reference = train(load_config("vessels", sets), tmp_path / "a")
    run = tmp_path / "b"
    run.mkdir()
    (run / "last.pt").write_bytes(saved[2])
    train(load_config("vessels", sets), run, resume=True)
    a, b = load_checkpoint(reference.last_checkpoint), load_checkpoint(run / "last.pt")
    _assert_same_weights(a["model_state"], b["model_state"])
    _assert_same_weights(a["training_state"], b["training_state"])
    assert a["ema_updates"] == b["ema_updates"] == 4


@pytest.mark.parametrize("value", [1.0, -0.1, "yes"])
def test_ema_decay_checked(manifest, tmp_path, capsys, value):
    value = repr(value) if isinstance(value, str) else value
    assert main(_cli(tmp_path / "run", _sets(manifest, *MODELS["unet2d"], f"train.ema={value}"))) == 2
    err = capsys.readouterr().err
    assert "train.ema" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


# --- the two-path schedule -------------------------------------------------------------------------------------

UNET, REST = ("unet.",), ("filtration.", "head.")


def _schedule_run(manifest, out, monkeypatch, *extra, steps=6):
    states = _record_states(monkeypatch)
    sets = _sets(manifest, TINY_P25, "train.checkpoint_every=1", "train.val_every=100", *extra, steps=steps)
    train(load_config("vessels", sets), out)
    assert sorted(states) == list(range(1, steps + 1))
    return pd.read_csv(out / "metrics.csv"), states


def test_path1_then_path2(manifest, tmp_path, monkeypatch, no_curves):
    metrics, states = _schedule_run(manifest, tmp_path / "run", monkeypatch, "train.schedule=path1_then_path2",
                                    "train.path2_fraction=0.5")
    assert list(metrics.path) == [1, 1, 1, 2, 2, 2]
    assert metrics.loss_aux[metrics.path == 2].isna().all() and metrics.loss_aux[metrics.path == 1].notna().all()
    for step in (1, 2):  # path 1 trains the U-Net (state[s] holds the weights after s steps)
        assert not _equal(_part(states[step], UNET), _part(states[step + 1], UNET))
    for step in (3, 4, 5):  # path 2: U-Net bit-identical (weights and batch-norm buffers), F and head move
        assert _equal(_part(states[step], UNET), _part(states[step + 1], UNET))
        for key in _part(states[step], REST):
            assert not torch.equal(states[step][key], states[step + 1][key]), f"{key} did not change in path 2"
    assert load_checkpoint(tmp_path / "run" / "last.pt")["path2_started"] is True


def test_path2_and_evaluation_run_the_inference_views(manifest, tmp_path, monkeypatch, no_curves):
    from seg25d.models.projection25d import Projection25D

    seen, encode = [], Projection25D.encode

    def spy(self, x, views):
        seen.append((self.training and not self.unet_frozen, views.tolist()))
        return encode(self, x, views)

    monkeypatch.setattr(Projection25D, "encode", spy)
    sets = _sets(manifest, TINY_P25, "model.options.directions=4",
                 "train.schedule=path1_then_path2", "train.path2_fraction=0.5", "train.val_every=2", steps=4)
    train(load_config("vessels", sets), tmp_path / "run")
    path1 = [views for drawn, views in seen if drawn]
    rest = [views for drawn, views in seen if not drawn]
    assert len(path1) == 2 and all(len(views) == 2 for views in path1)  # train_directions
    assert rest and all(views == list(range(12)) for views in rest)  # every view: 4 per axis


def test_alternate_schedule(manifest, tmp_path, monkeypatch, no_curves):
    metrics, states = _schedule_run(manifest, tmp_path / "run", monkeypatch, "train.schedule=alternate",
                                    "train.alternate_every=3")
    assert list(metrics.path) == [1, 1, 2, 1, 1, 2]
    for step, path in enumerate(metrics.path):
        unet_same = _equal(_part(states.get(step, states[1]), UNET), _part(states[step + 1], UNET))
        if step == 0:
            continue
        assert unet_same == (path == 2), f"step {step} (path {path})"
        if path == 2:
            assert not _equal(_part(states[step], REST), _part(states[step + 1], REST))


def test_path1_schedule_never_uses_path2(manifest, tmp_path, monkeypatch, no_curves):
    metrics, states = _schedule_run(manifest, tmp_path / "run", monkeypatch, "train.schedule=path1",
                                    "train.path2_fraction=0.9")
    assert set(metrics.path) == {1}
    for step in range(1, 6):
        assert not _equal(_part(states[step], UNET), _part(states[step + 1], UNET))


def test_other_models_have_no_paths(manifest, tmp_path, no_curves):
    sets = _sets(manifest, *MODELS["unet2d"], "train.schedule=alternate", "train.alternate_every=1")
    train(load_config("vessels", sets), tmp_path / "run")
    assert set(pd.read_csv(tmp_path / "run" / "metrics.csv").path) == {0}


# --- run folders and errors ------------------------------------------------------------------------------------

def test_existing_run_needs_resume(small_run, tmp_path, capsys):
    out, config, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    sets = _sets(config["data"]["manifest"], TINY_P25)
    assert main(_cli(run, sets)) == 2
    err = capsys.readouterr().err
    assert f"{run}: holds a run already" in err and "--resume" in err
    assert (run / "last.pt").read_bytes() == (out / "last.pt").read_bytes()  # untouched
    # resuming a finished run is a no-op that succeeds
    assert main(_cli(run, sets, "--resume")) == 0


def test_resume_with_other_model_errors(small_run, tmp_path, capsys):
    out, config, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    assert main(_cli(run, _sets(config["data"]["manifest"], *MODELS["unet2d"]), "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{run / 'last.pt'}: holds a projection25d run" in err and "unet2d" in err


def test_resume_without_run_errors(manifest, tmp_path, capsys):
    assert main(_cli(tmp_path / "empty", _sets(manifest, *MODELS["unet2d"]), "--resume")) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("override, match", [
    ("train.schedule=both", "train.schedule"),
    ("train.scheduler=step", "train.scheduler"),
    ("train.precision=fp16", "train.precision"),
    ("model.name=unet4d", "unknown model 'unet4d'"),
    ("model.options={depth=2, widht=4}", "unknown option"),
    ("data.manifest=''", "no manifest given"),
])
def test_bad_settings(manifest, tmp_path, override, match):
    sets = _sets(manifest, *MODELS["unet2d"], override)
    with pytest.raises(InputError, match=match):
        train(load_config("vessels", sets), tmp_path / "run")


# --- data parallel ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_two_processes(manifest, tmp_path):
    steps = 4
    out = tmp_path / "ddp"
    sets = _sets(manifest, TINY_P25, "train.path2_fraction=0.5", steps=steps)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seg25d",
               *_cli(out, sets)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 4 steps") == 1  # only rank 0 reports
    assert {p.name for p in out.iterdir()} == RUN_FILES  # one last.pt: only rank 0 writes
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert load_checkpoint(out / "last.pt")["step"] == steps
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.step) == list(range(steps))
    assert list(metrics.path) == [1, 1, 2, 2]
    assert np.isfinite(metrics.loss).all()


def test_training_without_validation_cases_keeps_the_lowest_loss(manifest, tmp_path, no_curves, capsys):
    """No val split: best.pt still exists (lowest training loss) and the summary says there was no validation."""
    frame = pd.read_csv(manifest)
    frame.loc[frame.split == "val", "split"] = "test"
    alone = manifest.parent / "no_val.csv"
    frame.to_csv(alone, index=False)
    (manifest.parent / "no_val.json").write_text((manifest.parent / "manifest.json").read_text())
    out = tmp_path / "run"
    assert main(_cli(out, _sets(alone, *MODELS["unet2d"]))) == 0
    assert (out / "best.pt").exists()
    assert "no validation cases" in capsys.readouterr().out


def test_resume_refuses_other_data_model_or_loss_settings(manifest, tmp_path, no_curves, capsys):
    out = tmp_path / "run"
    sets = _sets(manifest, *MODELS["unet2d"], steps=2)
    assert main(_cli(out, sets)) == 0
    assert main(_cli(out, [*sets, "loss.dice_weight=2.0", "data.normalize='zscore'"], "--resume")) == 2
    err = capsys.readouterr().err
    assert "data.normalize" in err and "loss.dice_weight" in err
    assert main(_cli(out, [*sets[:1], "train.max_steps=3", *sets[2:]], "--resume")) == 0  # train.* may change
    assert len(pd.read_csv(out / "metrics.csv")) == 3


def test_projection25d_takes_its_views_in_millimetres(manifest, tmp_path, no_curves):
    """The planned spacing (here twice as coarse along D) reaches projection25d's geometry and its checkpoint."""
    from seg25d.pipeline.checkpoint import load_model
    from seg25d.projections import multi_axis_geometry

    sets = _sets(manifest, *MODELS["projection25d"], "data.spacing=[2.0, 1.0, 1.0]", steps=1)
    result = train(load_config("vessels", sets), tmp_path / "run")
    model = load_model(result.last_checkpoint)
    assert model.config["options"]["spacing"] == [2.0, 1.0, 1.0]
    shape = (12, 8, 8)
    expected = multi_axis_geometry(shape, {a: model.directions for a in model.axes}, (2.0, 1.0, 1.0))
    assert model.geometry(shape) == expected
    cubic = multi_axis_geometry(shape, {a: model.directions for a in model.axes})
    assert expected.detector_shape != cubic.detector_shape  # D is 24 mm deep, not 12
