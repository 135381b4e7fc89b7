"""Planning: fingerprint, target spacing (anisotropic rule), per-modality normalisation with foreground
statistics, input sizes within the memory budget, config overrides, the working grid's geometry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from seg25d.pipeline import planning
from seg25d.pipeline.cli import main
from seg25d.pipeline.config import load_config
from seg25d.pipeline.data import split_manifest, task_for
from seg25d.pipeline.images import image_paths, read_image
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.io.base import synthetic_meta
from seg25d.pipeline.planning import plan_from_manifest, prepare_training_data, target_spacing, working_meta


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, build):
    root = tmp_path_factory.mktemp("plan")
    source = build.nnunet(root / "raw", n=6, tests=0, regions=False)
    out = root / "manifest.csv"
    assert main(["dataset", "import", "--from", "nnunet", str(source), "--out", str(out)]) == 0
    return out


def _config(manifest, *sets):
    return load_config("vessels", [f"data.manifest='{manifest}'", *sets])


def test_target_spacing_median_and_anisotropic_slow_axis():
    assert target_spacing([(2.0, 1.0, 1.0), (2.0, 0.8, 0.8), (1.0, 1.0, 1.0)]) == ([2.0, 1.0, 1.0], False)
    spacings = [(5.0, 1.0, 1.0)] * 8 + [(3.0, 1.0, 1.0)] * 2  # thick slices: median 5 > 3 x 1
    assert target_spacing(spacings) == ([3.0, 1.0, 1.0], True)
    # never finer than the in-plane axes
    assert target_spacing([(5.0, 1.5, 1.5)] * 8 + [(0.5, 1.5, 1.5)] * 2) == ([1.5, 1.5, 1.5], True)


def test_ct_channel_uses_dataset_foreground_statistics(manifest):
    config = _config(manifest)
    plan = plan_from_manifest(config)
    assert plan.channels == ["CT", "T2"] and plan.normalize == ["ct", "case_zscore"]
    assert plan.spacing == [2.0, 1.0, 1.0]
    train_rows, val_rows = split_manifest(manifest, config["data"])
    values = []  # the reference: every foreground CT voxel of the training cases (fewer than the sample size)
    for row in train_rows.itertuples():
        ct = read_image(image_paths(row)).array[0].astype(np.float64)
        values.append(ct[read_volume(row.label).array > 0])
    values = np.concatenate(values)
    low, high = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, low, high)
    np.testing.assert_allclose([plan.stats[k][0] for k in ("low", "high", "mean", "std")],
                               [low, high, clipped.mean(), clipped.std()], rtol=1e-6)
    assert plan.fingerprint["cases"] == len(train_rows)
    assert plan.fingerprint["foreground_intensity"][0]["mean"] == pytest.approx(values.mean(), rel=1e-6)

    prep, plan2, train_cases, val_cases = prepare_training_data(config, task_for(manifest), train_rows, val_rows,
                                                                progress=False)
    assert plan2.to_dict() == plan.to_dict()
    case, row = train_cases[0], next(train_rows.itertuples())
    raw = read_image(image_paths(row)).array.astype(np.float32)
    np.testing.assert_allclose(case.image[0], (np.clip(raw[0], low, high) - clipped.mean()) / clipped.std(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(case.image[1], (raw[1] - raw[1].mean()) / raw[1].std(), rtol=1e-4, atol=1e-4)
    assert case.meta.spacing == pytest.approx((2.0, 1.0, 1.0))


def test_config_overrides_the_plan(manifest):
    plan = plan_from_manifest(_config(manifest, "data.spacing=[]", "data.normalize='zscore'"))
    assert plan.spacing is None and plan.normalize == ["zscore", "zscore"]
    assert plan.planned == {"spacing": [2.0, 1.0, 1.0], "normalize": ["ct", "case_zscore"]}
    plan = plan_from_manifest(_config(manifest, "data.spacing=[4.0, 2.0, 2.0]", "data.normalize=['none', 'ct']"))
    assert plan.spacing == [4.0, 2.0, 2.0] and plan.normalize == ["none", "ct"] and plan.stats["low"][1] > 0
    config = _config(manifest, "data.spacing=[4.0, 2.0, 2.0]")
    train_rows, val_rows = split_manifest(manifest, config["data"])
    _, _, cases, _ = prepare_training_data(config, task_for(manifest), train_rows, val_rows, progress=False)
    assert cases[0].image.shape == (2, 8, 8, 8) and cases[0].masks.shape == (2, 8, 8, 8)  # 16^3 at 2 x 1 x 1 mm
    assert cases[0].meta.spacing == pytest.approx((4.0, 2.0, 2.0)) and cases[0].meta.shape == (8, 8, 8)


def test_working_meta_keeps_the_volume_extent():
    meta = synthetic_meta((10, 20, 30), spacing=(3.0, 1.5, 1.5), origin=(4.0, -2.0, 7.0))
    work = working_meta(meta, (15, 10, 15))
    assert work.spacing == pytest.approx((2.0, 3.0, 3.0))
    for corner in ([-0.5, -0.5, -0.5], [9.5, 19.5, 29.5]):  # voxel edges map to the same world points
        scaled = (np.asarray(corner) + 0.5) * np.asarray(work.shape) / np.asarray(meta.shape) - 0.5
        np.testing.assert_allclose(work.affine @ [*scaled, 1], meta.affine @ [*corner, 1])


def test_patch_and_batch_fit_the_budget(monkeypatch):
    options = {"base_channels": 32}
    shape, batch, estimate = planning._plan_input("patches", (64, 200, 200), options, budget_mb=400.0)
    assert all(s % 16 == 0 and s <= m for s, m in zip(shape, (64, 200, 200)))
    assert estimate <= 400.0 and batch >= 1
    assert np.prod(shape) * 4 * 32 * 24 / 2**20 <= 400.0
    big, big_batch, _ = planning._plan_input("patches", (64, 200, 200), options, budget_mb=40000.0)
    assert np.prod(big) > np.prod(shape) and big_batch == 4
    shape, slices, _ = planning._plan_input("slices", (40, 256, 256), options, budget_mb=400.0)
    assert shape == [256, 256] and slices == int(400 // (256 * 256 * 4 * 32 * 24 / 2**20))


def test_plan_command_and_auto_patch_training(manifest, tmp_path, capsys):
    assert main(["plan", str(manifest), "--out", str(tmp_path / "plan.json"), "--set", "model.name='unet3d'",
                 "--set", "model.options={depth=2, base_channels=4}"]) == 0
    out = capsys.readouterr().out
    assert "target spacing: 2 x 1 x 1 mm" in out and "CT: ct, T2: case_zscore" in out and "unet3d (patches)" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"]["input"] == [16, 16, 16]  # the whole median volume fits
    config = _config(manifest, "model.name='unet3d'", "model.options={depth=2, base_channels=4}",
                     "data.patch_size='auto'")
    assert planning.planned_config(config, planning.Plan.from_dict(plan))["data"]["patch_size"] == [16, 16, 16]
    assert config["data"]["patch_size"] == "auto"  # the config itself (saved, compared on resume) is unchanged


def test_the_budget_is_most_of_a_gpus_memory(monkeypatch):
    import types

    import torch

    from seg25d.pipeline.planning import memory_budget_mb

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=80 * 2**30))
    assert memory_budget_mb("cuda:0") == pytest.approx(0.8 * 80 * 1024)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_budget_mb("cpu") == pytest.approx(ram / 4 / 2**20)
