"""``bench memory`` on a tiny dataset: the results files hold every run and summary field (not timings)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from seg25d.pipeline.bench.memory import bench_memory, tree_memory_mb


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc")
def test_tree_memory_counts_this_process():
    rss, pss = tree_memory_mb(os.getpid())
    assert rss > 10 and 0 < pss <= rss


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc")
def test_bench_memory_writes_its_results(tmp_path):
    result = bench_memory(tmp_path, n=2, shape=(16, 16, 16), steps=2, models=["unet2d"], workers=1,
                          overrides=("model.options.base_channels=4", "model.options.depth=2",
                                     "train.slices_per_step=2"), repeats=2)
    frame = pd.read_csv(tmp_path / "memory.csv")
    assert list(zip(frame.cases, frame["mode"])) == [(1, "cache"), (1, "memory"), (2, "cache"), (2, "memory")]
    assert set(frame.columns) >= {"model", "cases", "mode", "workers", "wall_seconds", "peak_rss_mb", "peak_pss_mb",
                                  "step_seconds", "data_seconds"}
    assert (frame.peak_pss_mb > 0).all() and (frame.peak_rss_mb >= frame.peak_pss_mb).all()
    assert list(frame.workers) == [1, 0, 1, 0]
    pairs = pd.DataFrame(result["pairs"])  # on the first case, in turns; the second pair's memory run went first
    assert list(zip(pairs.repeat, pairs["mode"])) == [(0, "cache"), (0, "memory"), (1, "memory"), (1, "cache")]
    assert (pairs.cases == 1).all() and (pairs.step_seconds > 0).all()
    times = pairs.pivot(index="repeat", columns="mode", values="step_seconds")
    ratios = times["cache"] / times["memory"]
    assert result["summary"]["unet2d"]["step_ratio_cache_vs_memory"] == round(ratios.mean(), 3)
    assert result["summary"]["unet2d"]["step_ratio_se"] == round(ratios.std(ddof=1) / 2 ** 0.5, 3)
    saved = json.loads((tmp_path / "memory.json").read_text())
    assert saved["preprocess"]["cases"] == 2 and saved["preprocess"]["built"] == 2
    assert saved["preprocess"]["cache_mb"] > 0 and saved["preprocess"]["cases_per_second"] > 0
    assert set(saved["summary"]["unet2d"]) == {"pss_ratio_cache_all_vs_first", "pss_ratio_memory_all_vs_first",
                                               "step_ratio_cache_vs_memory", "step_ratio_se", "step_pairs"}
    assert saved["summary"]["unet2d"]["step_pairs"] == 2
    assert saved["runs"] == result["runs"] and saved["pairs"] == result["pairs"]
