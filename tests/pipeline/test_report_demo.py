"""The main job end to end on a tiny synthetic set (golden run), and the HTML report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seg25d.pipeline.cli import main as cli_main
from seg25d.pipeline.io import read_volume, same_geometry
from seg25d.pipeline.manifest import read_manifest
from seg25d.pipeline.report import write_report

TINY_MODEL = ["model.options.directions=2", "model.options.train_directions=2",
              "model.options.unet={depth = 2, base_channels = 4}", "model.options.head_channels=4",
              "model.options.filter_size=7", "train.max_steps=6", "train.val_every=3", "train.checkpoint_every=3",
              "train.progress=false"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from seg25d.pipeline.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, minutes=5, cases=4, shape=(12, 16, 16), seed=0, overrides=TINY_MODEL)
    return out, summary


def test_demo_runs_the_whole_pipeline(demo):
    out, summary = demo
    written = json.loads((out / "demo.json").read_text())
    assert {k: written[k] for k in summary} == pytest.approx(summary, nan_ok=True)
    assert written["benchmark"] == "demo" and set(written["provenance"]) == {"command", "machine", "torch", "date"}
    assert 0.0 <= summary["test_dice"] <= 1.0 and 0.0 <= summary["threshold_test_dice"] <= 1.0
    assert summary["train_steps"] == 6
    manifest = out / "data" / "manifest.csv"
    tests = read_manifest(manifest).query("split == 'test'")
    for row in tests.itertuples():  # every test case predicted with its input's exact geometry
        prediction = read_volume(out / "predictions" / f"{row.case_id}.nii.gz")
        assert same_geometry(prediction.meta, read_volume(row.image).meta)
        assert prediction.array.dtype.kind in "iu" and set(np.unique(prediction.array)) <= {0, 1}
    assert (out / "evaluation" / "metrics.csv").exists() and (out / "run" / "curves.png").exists()


def test_report_of_the_demo_evaluation(demo):
    out, _ = demo
    page = (out / "evaluation" / "report.html").read_text()
    assert "Per-class results" in page and "vessel" in page
    assert page.count("data:image/png;base64,") >= 4  # curves + best, median, worst overlays
    assert "Training curves" in page and "seg25d" in page  # the commands that produced it
    overlays = sorted(p.name.split("_")[0] for p in (out / "evaluation" / "report_figures").glob("*.png"))
    assert overlays == ["best", "median", "worst"]


def test_report_of_a_run_folder_and_bad_folders(demo, tmp_path, capsys):
    out, _ = demo
    assert cli_main(["report", str(out / "run"), "--out", str(tmp_path / "run.html")]) == 0
    assert "Training curves" in (tmp_path / "run.html").read_text()
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "neither an evaluation" in capsys.readouterr().err
    with pytest.raises(Exception):
        write_report(tmp_path / "missing")
