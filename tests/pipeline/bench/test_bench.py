"""Benchmark plumbing on tiny inputs: the numbers are the benchmarks' business, the shape of the results ours."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from seg25d.pipeline.bench import compare, oracle, scaling, step
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.synth.vessels import write_vessel_dataset


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=4, shape=(12, 16, 16), seed=0, progress=False)


@pytest.mark.parametrize("name, options, batch_shape", [
    ("projection25d", {"directions": 2, "train_directions": 2, "unet": {"depth": 2, "base_channels": 4},
                       "scale": "auto"}, [1, 1, 8, 12, 10]),
    ("unet2d", {"depth": 2, "base_channels": 4}, [4, 1, 12, 10]),
    ("slicestack25d", {"slices": 3, "backbone_options": {"depth": 2, "base_channels": 4}}, [4, 3, 12, 10]),
    ("unet3d", {"depth": 2, "base_channels": 4}, [1, 1, 8, 12, 10]),
])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_measure_feeds_each_family_its_batch(name, options, batch_shape, precision):
    result = step.measure(name, (8, 12, 10), options, repeats=1, batch=4, precision=precision)
    assert result["train_input"] == batch_shape and result["precision"] == precision
    assert result["step_seconds"] > 0 and result["infer_seconds"] > 0
    assert result["parameters"] > 0 and result["options"].get("scale", 1) == 1  # "auto" resolved by size


def test_step_warms_up_random_view_models_over_their_crop_shapes():
    from seg25d.models import build

    projection = build("projection25d", 1, 1, directions=2, train_directions=2, unet={"depth": 2, "base_channels": 4})
    assert step.warmup_steps(projection) == step.RANDOM_VIEW_WARMUP > 1
    assert step.warmup_steps(build("unet2d", 1, 1, depth=2, base_channels=4)) == 1


def test_oracle_ceilings_are_dice_values(tiny_manifest):
    sets = {"one axis": ("axes", (0,), 4), "three axes": ("axes", (0, 1, 2), 2), "sphere": ("sphere", None, 3)}
    rows = oracle.bench_oracle(tiny_manifest, "test", sets, slabs=(1, 2))
    assert [(r["directions"], r["slabs"]) for r in rows] == [("one axis", 1), ("one axis", 2), ("three axes", 1),
                                                             ("three axes", 2), ("sphere", 1)]  # no sphere slabs
    for r in rows:
        for key in ("visual_hull_dice", "mip_lift_dice", "hull_and_mip_lift_dice"):
            assert 0.0 < r[key] <= 1.0
    by = {(r["directions"], r["slabs"]): r for r in rows}
    assert by[("three axes", 2)]["visual_hull_dice"] >= by[("three axes", 1)]["visual_hull_dice"]  # bands carve
    with pytest.raises(InputError, match="no labelled cases"):
        oracle.bench_oracle(tiny_manifest, "nonexistent", sets)


@pytest.mark.parametrize("slabs", [1, 7])
def test_oracle_hull_of_one_axis_view_is_the_mask_grown_across_its_rays(slabs):
    """One view at angle 0 about D (rays along H): with one slab per H row, the hull is each row of the mask
    dilated by the grown detector cell in D and W; with one slab, every H row gets the union of the rows."""
    from scipy import ndimage

    from seg25d.projections import axis_geometry

    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((6, 7, 9)) > 0.45)
    image = rng.random(mask.shape).astype(np.float32)
    in_hull, at_maxima = oracle.lifted_ceilings(image, mask, axis_geometry(mask.shape, [0.0]), slabs)
    rows = mask if slabs == 7 else np.broadcast_to(mask.any(axis=1, keepdims=True), mask.shape)
    np.testing.assert_array_equal(in_hull, ndimage.binary_dilation(rows, np.ones((3, 1, 3), bool)))
    # MIP lifting: in each band of each ray whose mask is on, its brightest voxel
    bands = np.array_split(np.arange(7), slabs)
    expected = np.zeros_like(mask)
    for band in bands:
        hit = mask[:, band].any(axis=1)
        brightest = band[image[:, band].argmax(axis=1)]
        d, w = np.nonzero(hit)
        expected[d, brightest[d, w], w] = True
    np.testing.assert_array_equal(at_maxima, expected)


def test_compare_helpers():
    assert compare._toml({"a": [1, 2], "b": {"c": "x"}, "d": True}) == '{a = [1, 2], b = {c = "x"}, d = true}'
    assert compare._slug("default, path 1 only") == "default__path_1_only"
    frame = pd.DataFrame([
        {"model": "b", "dice_vessel": 0.5, "dice_sd_vessel": 0.1, "hd95_vessel": 3.0, "steps": 10, "step_seconds": 0.2,
         "peak_extra_mb": 50.0, "infer_seconds_per_volume": 0.1, "parameters": 1000},
        {"model": "a", "dice_vessel": 0.7, "dice_sd_vessel": 0.05, "hd95_vessel": 2.0, "steps": 12,
         "step_seconds": 0.3, "peak_extra_mb": 60.0, "infer_seconds_per_volume": 0.2, "parameters": 2000},
    ])
    table = compare.markdown_table(frame, 8)
    lines = table.splitlines()
    assert lines[2].startswith("| model | Dice vessel (mean ± sd) | HD95 vessel mm |")
    assert lines[4].startswith("| a | 0.700 ± 0.050 | 2.00 | 12 |")  # best Dice first
    assert lines[5].startswith("| b | 0.500 ± 0.100 |")


def test_scaling_watch_reports_instead_of_failing(tmp_path):
    ok, status = scaling._watch([sys.executable, "-c", "print('{\"x\": 1}')"], {}, 10_000, 60)
    assert ok == {"x": 1} and status == "ok"
    big, status = scaling._watch([sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(5)"],
                                 {}, 100, 60)
    assert big is None and status.startswith("exceeds the memory limit")
    slow, status = scaling._watch([sys.executable, "-c", "import time; time.sleep(30)"], {}, 10_000, 1)
    assert slow is None and status.startswith("slower than")
    failed, status = scaling._watch([sys.executable, "-c", "raise SystemExit('boom')"], {}, 10_000, 60)
    assert failed is None and status == "failed: boom"


def test_scaling_figure_marks_failed_runs(tmp_path):
    frame = pd.DataFrame([
        {"model": "m", "size": 32, "status": "ok", "step_seconds": 0.1, "step_peak_extra_mb": 10.0},
        {"model": "m", "size": 64, "status": "ok", "step_seconds": 0.8, "step_peak_extra_mb": 80.0},
        {"model": "n", "size": 64, "status": "exceeds the memory limit (1 GiB)"},
    ])
    scaling.scaling_figure(frame, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(frame.loc[frame.status == "ok", "step_seconds"]).all()


def test_compare_model_specs_change_options_over_the_benchmark_defaults(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(compare, "run_entries", lambda entries, *args, **kw: seen.setdefault("entries", entries))
    compare.bench_compare("m.csv", 1, tmp_path, ["projection25d", "projection25d:scale=1", "unet2d",
                                                 "slicestack25d:slices=5,backbone=unet2d"], config="gi")
    labels, options = zip(*[(label, opts) for label, _, opts, _ in seen["entries"]])
    assert labels == ("projection25d", "projection25d scale=1", "unet2d", 'slicestack25d slices=5 backbone="unet2d"')
    assert options[0] == {"preset": "default", "scale": "auto"} and options[1] == {"preset": "default", "scale": 1}
    assert options[2] == {}
    assert options[3]["slices"] == 5 and options[3]["stride"] == 2  # the preset's own model keeps its other options
    assert compare.parse_model_spec("unet2d") == ("unet2d", {})
    assert compare.parse_model_spec('projection25d:lift=["slab","mip"],slabs=8,projection=mean') == \
        ("projection25d", {"lift": ["slab", "mip"], "slabs": 8, "projection": "mean"})
    with pytest.raises(InputError, match="'depth' is not KEY=VALUE"):
        compare.parse_model_spec("unet2d:depth")


def test_compare_scores_gi_predictions_as_the_competition_scores_their_csv(tmp_path, tiny_manifest):
    from seg25d.pipeline.io import read_volume, write_mask
    from seg25d.pipeline.kaggle.layout import import_kaggle, read_train_csv
    from seg25d.pipeline.kaggle.score import score_submission
    from seg25d.pipeline.manifest import read_manifest, write_manifest
    from seg25d.pipeline.synth.gi import write_gi_dataset

    root = tmp_path / "gi"
    write_gi_dataset(root, cases=2, seed=1, days=(1, 1), slices=(8, 10), sizes=[(40, 32, 1.5, 1.5)], progress=False)
    manifest = import_kaggle(root, tmp_path / "nifti")
    cases = read_manifest(manifest).assign(split="test")
    write_manifest(manifest, cases)
    missed = cases.case_id.iat[0]  # its stomach (bit 4) is left out of the prediction
    for case in read_manifest(manifest).itertuples():
        label = read_volume(case.label)
        write_mask(tmp_path / "pred" / f"{case.case_id}.nii.gz",
                   label.array & ~np.uint8(4) if case.case_id == missed else label.array, label.meta)
    submission = read_train_csv(root / "train.csv").rename(columns={"segmentation": "predicted"})
    submission.loc[submission.id.str.startswith(missed + "_") & (submission["class"] == "stomach"), "predicted"] = ""
    submission[["id", "class", "predicted"]].to_csv(tmp_path / "submission.csv", index=False)
    expected = score_submission(tmp_path / "submission.csv", root / "train.csv", root)["score"]
    assert 0.3 < expected < 0.95
    assert compare._kaggle_score(tmp_path / "pred", manifest) == pytest.approx(expected)
    lost = cases.case_id.iat[1]  # a prediction that is not there counts as predicting nothing
    (tmp_path / "pred" / f"{lost}.nii.gz").unlink()
    submission.loc[submission.id.str.startswith(lost + "_"), "predicted"] = ""
    submission[["id", "class", "predicted"]].to_csv(tmp_path / "submission.csv", index=False)
    expected = score_submission(tmp_path / "submission.csv", root / "train.csv", root)["score"]
    assert compare._kaggle_score(tmp_path / "pred", manifest) == pytest.approx(expected)
    assert compare._kaggle_score(tmp_path / "pred", tiny_manifest) is None  # vessels: no competition score


def test_ablation_runs_the_chosen_entries_in_ladder_order(monkeypatch, tmp_path):
    from seg25d.pipeline.bench import ablation

    seen = {}
    monkeypatch.setattr(ablation, "run_entries", lambda entries, *args, **kw: seen.setdefault("entries", entries))
    ablation.bench_ablation("m.csv", 1, tmp_path, entries=[4, 1, 4])
    labels = list(ablation.ABLATIONS)
    assert [e[0] for e in seen["entries"]] == [labels[0], labels[3]]
    assert seen["entries"][0][2] == {"preset": "paper"} and all(e[1] == "projection25d" for e in seen["entries"])
    n = len(ablation.ABLATIONS)
    with pytest.raises(InputError, match=f"no ablation entries \\[{n + 1}\\]"):
        ablation.bench_ablation("m.csv", 1, tmp_path, entries=[n + 1])


def test_every_ablation_entry_builds_and_runs():
    """A ladder entry with options that do not go together would fail only after its training budget."""
    import torch

    from seg25d.models import build
    from seg25d.pipeline.bench.ablation import ABLATIONS

    x = torch.randn(1, 1, 6, 8, 10)
    for label, (options, _) in ABLATIONS.items():
        small = {**options.get("unet", {}), "depth": 2, "base_channels": 4}
        model = build("projection25d", 1, 1, **{**options, "unet": small})
        assert model(x).shape == x.shape, label
    # from the paper's head to the default, each step of the ladder changes one thing
    labels = list(ABLATIONS)
    first, last = labels.index("+ MIP lifting, 2 channels, volume head"), labels.index(
        "+ instance norm in the U-Net = default")
    steps = [build("projection25d", 1, 1, **ABLATIONS[label][0]) for label in labels[first:last + 1]]
    assert ABLATIONS[labels[last]][0] == {"preset": "default"}

    def norm(m):
        return {type(n).__name__ for n in m.unet.modules() if "Norm" in type(n).__name__}

    seen = [(m.aux_loss, m.slabs, m.train_directions, m.sum_input, norm(m)) for m in steps]
    assert seen == [(False, 1, 6, False, {"BatchNorm2d"}), (True, 1, 6, False, {"BatchNorm2d"}),
                    (True, 3, 3, False, {"BatchNorm2d"}), (True, 3, 3, True, {"BatchNorm2d"}),
                    (True, 3, 3, True, {"InstanceNorm2d"})]
