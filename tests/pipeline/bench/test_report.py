"""``seg25d bench report``: tables made from results files hold exactly their numbers; docs/benchmarks.md is current."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from seg25d.pipeline.bench.report import load_results, render_benchmarks, verdict, write_benchmarks
from seg25d.pipeline.cli import main as cli_main
from seg25d.pipeline.errors import InputError

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs"


def _provenance(command: str, date: str = "2030-01-02") -> dict:
    return {"command": command, "machine": "Test CPU, 4 CPU cores", "torch": "9.9.9", "date": date}


def _compare_row(model: str, dice: float, sd: float = 0.01, steps: int = 100) -> dict:
    return {"model": model, "precision": "fp32", "steps": steps, "train_wall_seconds": 60.0, "step_seconds": 0.25,
            "peak_extra_mb": 123.4, "infer_peak_extra_mb": 50.0, "infer_seconds_per_volume": 0.5,
            "parameters": 1000, "dice_vessel": dice, "dice_sd_vessel": sd, "hd95_vessel": 1.5, "cases": 6}


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def _section(text: str, title_start: str) -> str:
    parts = text.split("\n## ")
    hits = [p for p in parts if p.startswith(title_start)]
    assert len(hits) == 1, f"{len(hits)} sections start with {title_start!r}"
    return hits[0]


@pytest.mark.parametrize("difference, se, expected", [
    (0.005, 0.0026, "level"),    # under two standard errors
    (0.006, 0.0026, "ahead"),
    (-0.006, 0.0026, "behind"),
    (0.0, 0.0, "level"),
    (0.01, float("nan"), "not measured"),
])
def test_verdict_is_level_under_two_standard_errors(difference, se, expected):
    assert verdict(difference, se) == expected


def test_seeds_of_one_comparison_make_one_table_with_their_numbers(tmp_path):
    ours = [0.930, 0.935, 0.925]
    theirs = [0.920, 0.921, 0.924]
    for seed, (a, b) in enumerate(zip(ours, theirs)):
        cmd = f"seg25d bench compare --manifest data/v/manifest.csv --budget-minutes 8 --seed {seed} --out c{seed}"
        _write(tmp_path / "results" / f"compare_seed{seed}.json",
               {"benchmark": "compare", "provenance": _provenance(cmd), "manifest": "data/v/manifest.csv",
                "budget_minutes": 8, "seed": seed, "config": "vessels",
                "rows": [_compare_row("projection25d", a, steps=100 + seed), _compare_row("unet2d", b, steps=200)]})
    text = render_benchmarks([tmp_path / "results"], tmp_path)
    section = _section(text, "Models on v: projection25d, unet2d (8 minutes each, 3 seeds)")

    # the independent reference: numpy over the seeds
    ref = _row(section, "`projection25d`")
    assert ref[1] == f"{np.mean(ours):.3f} ± {np.std(ours, ddof=1) / math.sqrt(3):.3f}"
    assert ref[3:] == ["101", "0.250", "123", "0.50", "reference"]
    other = _row(section, "`unet2d`")
    assert other[1] == f"{np.mean(theirs):.3f} ± {np.std(theirs, ddof=1) / math.sqrt(3):.3f}"
    diffs = np.subtract(theirs, ours)
    expected = "level" if abs(diffs.mean()) < 2 * diffs.std(ddof=1) / math.sqrt(3) else "behind"
    assert other[-1] == expected == "behind"
    for seed in range(3):  # every command that regenerates it, and the one provenance line
        assert f"--seed {seed} --out c{seed}" in section
    assert section.count("Measured on") == 1
    assert "Measured on Test CPU, 4 CPU cores; torch 9.9.9; 2030-01-02." in section
    assert "[`compare_seed0.json`](results/compare_seed0.json)" in section


def test_encoder_entries_are_judged_against_their_own_model(tmp_path):
    plain, encoded, other = [0.50, 0.52, 0.51], [0.60, 0.61, 0.63], [0.40, 0.41, 0.42]
    for seed in range(3):
        _write(tmp_path / "r" / f"enc{seed}.json",
               {"benchmark": "compare",
                "provenance": _provenance(f"seg25d bench compare --encoder resnet18 --seed {seed}"),
                "manifest": "data/g/manifest.csv", "budget_minutes": 2, "seed": seed, "config": "gi",
                "rows": [_compare_row("projection25d", other[seed]), _compare_row("unet2d", plain[seed]),
                         _compare_row("unet2d resnet18", encoded[seed])]})
    section = _section(render_benchmarks([tmp_path / "r"], tmp_path), "Models on g")
    diffs = np.subtract(encoded, plain)  # paired against unet2d, not against the reference projection25d
    assert diffs.mean() > 2 * diffs.std(ddof=1) / math.sqrt(3)
    assert _row(section, "`unet2d resnet18`")[-1] == "ahead vs `unet2d`"
    assert _row(section, "`unet2d`")[-1] == "ahead"  # against the reference


def test_kaggle_scores_are_a_column_with_their_standard_error(tmp_path):
    scores = [0.61, 0.64, 0.66]
    for seed in range(3):
        rows = [_compare_row("projection25d", 0.5), _compare_row("projection25d scale=1", 0.6)]
        for row, score in zip(rows, (scores[seed], 0.7)):
            row["kaggle_score"] = score
        _write(tmp_path / "r" / f"gi{seed}.json",
               {"benchmark": "compare", "provenance": _provenance(f"seg25d bench compare --seed {seed}"),
                "manifest": "data/g/manifest.csv", "budget_minutes": 15, "seed": seed, "config": "gi", "rows": rows})
    section = _section(render_benchmarks([tmp_path / "r"], tmp_path), "Models on g")
    assert "| HD95 vessel mm | Kaggle score | steps |" in section
    assert _row(section, "`projection25d`")[3] == f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1) / math.sqrt(3):.3f}"
    assert _row(section, "`projection25d scale=1`")[-1] == "ahead"


def test_an_unmeasured_hd95_is_an_empty_cell(tmp_path):
    empty = {**_compare_row("unet2d", 0.0), "hd95_vessel": None}  # predicted nothing: no surface distance
    _write(tmp_path / "r" / "c.json", {"benchmark": "compare", "provenance": _provenance("seg25d bench compare"),
                                       "manifest": "data/e/manifest.csv", "budget_minutes": 1, "seed": 0,
                                       "config": "vessels", "rows": [_compare_row("projection25d", 0.5), empty]})
    section = _section(render_benchmarks([tmp_path / "r"], tmp_path), "Models on e")
    assert _row(section, "`unet2d`")[2] == "" and _row(section, "`projection25d`")[2] == "1.50"


def test_one_seed_verdict_uses_the_test_volumes_spread(tmp_path):
    # 0.90 against 0.93 with sd 0.01 over 6 volumes each: se of the difference 0.0058, so clearly behind;
    # with sd 0.05 the se is 0.029 and the difference is level
    for name, sd, expected in (("narrow", 0.01, "behind"), ("wide", 0.05, "level")):
        _write(tmp_path / name / "compare.json",
               {"benchmark": "compare", "provenance": _provenance("seg25d bench compare ..."),
                "manifest": f"data/{name}/manifest.csv", "budget_minutes": 2, "seed": 0, "config": "vessels",
                "rows": [_compare_row("projection25d", 0.93, sd), _compare_row("unet3d", 0.90, sd)]})
        section = _section(render_benchmarks([tmp_path / name], tmp_path), f"Models on {name}")
        assert _row(section, "`unet3d`")[1] == f"0.900 ± {sd:.3f}"
        assert _row(section, "`unet3d`")[-1] == expected


def test_scaling_operators_and_demo_tables_hold_the_files_numbers(tmp_path):
    rows = [{"model": "projection25d", "size": 128, "status": "ok", "step_seconds": 0.2, "step_peak_extra_mb": 100.0,
             "infer_seconds": 0.3},
            {"model": "monai_unet", "size": 128, "status": "ok", "step_seconds": 0.9, "step_peak_extra_mb": 350.0,
             "infer_seconds": 0.4},
            {"model": "monai_unet", "size": 256, "status": "exceeds the memory limit (16 GiB)"}]
    _write(tmp_path / "r" / "scaling.json", {"benchmark": "scaling", "provenance": _provenance("seg25d bench scaling"),
                                             "memory_limit_gb": 16, "rows": rows})
    _write(tmp_path / "r" / "operators.json", {
        "benchmark": "operators", "provenance": _provenance("seg25d bench operators --out operators.json"),
        "size": 64, "directions": 8,
        "seconds": {"mip": 0.01, "radon": 0.002, "backprojection_fwd_bwd": 0.004, "scipy_rotate_mip": 0.5,
                    "grid_sample_mip": 0.05, "grid_sample_3d_mip": 0.25, "grid_sample_backprojection_fwd_bwd": 0.1},
        "ratios": {}})
    _write(tmp_path / "r" / "demo.json", {"test_dice": 0.8766, "test_hd95_mm": 1.234, "best_val_dice": 0.9012,
                                          "threshold_test_dice": 0.4, "threshold_val_dice": 0.6,
                                          "train_steps": 1100, "prediction_seconds_per_volume": 0.42})
    _write(tmp_path / "r" / "notes.json", {"something": "else"})  # not a results file: skipped
    text = render_benchmarks([tmp_path / "r"], tmp_path)

    scaling = _section(text, "Training step and memory")
    assert [c for c in scaling.splitlines() if c.startswith("| 128 | `monai_unet`")] == [
        "| 128 | `monai_unet` | 0.900 | 350 | 0.40 | 1 | 4.5× | 3.5× |"]
    assert "| 256 | `monai_unet` | exceeds the memory limit (16 GiB) |" in scaling
    operators = _section(text, "Operators")
    assert _row(operators, "backprojection, forward + backward")[1:] == [
        "0.004", "smear each view along its rays, rotate back with `grid_sample` (autograd)", "0.100", "25.0×"]
    demo = _section(text, "The demo")
    assert _row(demo, "`projection25d` (`best.pt`)")[1:] == ["0.901", "0.877", "1.23", "1100", "0.42"]
    assert "machine not recorded; torch version not recorded; date not recorded" in demo  # no provenance
    assert text.index("## The demo") < text.index("## Training step") < text.index("## Operators")
    assert "notes.json" not in text


def test_memory_table_holds_the_files_numbers_and_words_the_step_ratio(tmp_path):
    runs = [{"model": "unet2d", "cases": 4, "mode": "cache", "workers": 2, "peak_rss_mb": 1329.4, "peak_pss_mb": 513.2,
             "step_seconds": 0.0961, "data_seconds": 0.0043},
            {"model": "unet2d", "cases": 40, "mode": "memory", "workers": 0, "peak_rss_mb": 729.0, "peak_pss_mb": 530.0,
             "step_seconds": 0.073, "data_seconds": 0.049}]
    ratios = np.array([0.50 / 0.48, 0.53 / 0.52])
    summary = {"unet2d": {"step_ratio_cache_vs_memory": round(ratios.mean(), 3),
                          "step_ratio_se": round(ratios.std(ddof=1) / math.sqrt(2), 3), "step_pairs": 2}}
    _write(tmp_path / "r" / "memory.json", {
        "benchmark": "memory", "provenance": _provenance("seg25d bench memory --n 40 --repeats 2"), "n": 40,
        "shape": [64, 64, 64], "steps": 6, "workers": 2, "repeats": 2, "models": ["unet2d"], "summary": summary,
        "runs": runs, "pairs": [], "preprocess": {"cases": 40, "built": 40, "seconds": 3.9, "cases_per_second": 10.256,
                                                 "cache_mb": 50.2}})
    memory = _section(render_benchmarks([tmp_path / "r"], tmp_path), "Training memory")
    assert "| `unet2d` | 4 | cache, 2 workers | 1329 | 513 | 0.096 | 0.004 |" in memory
    assert "| `unet2d` | 40 | in memory | 729 | 530 | 0.073 | 0.049 |" in memory
    assert "10.26 cases/s, 50 MiB on disk" in memory and "64 × 64 × 64" in memory
    assert "standard error of 2 pairs of runs on the first 4 cases" in memory
    assert f"`unet2d` ×{ratios.mean():.3f} ± {ratios.std(ddof=1) / math.sqrt(2):.3f} (level with ×1.05)" in memory
    # 1.030 ± 0.011: within two standard errors of 1.05


def test_command_writes_the_page_and_names_a_missing_folder(tmp_path, capsys):
    _write(tmp_path / "r" / "demo.json", {"test_dice": 0.5, "test_hd95_mm": 2.0, "best_val_dice": 0.6,
                                          "threshold_test_dice": 0.1, "threshold_val_dice": 0.1,
                                          "train_steps": 3, "prediction_seconds_per_volume": 0.1})
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    assert cli_main(["bench", "report", str(tmp_path / "r"), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_benchmarks([tmp_path / "r"], out.parent)
    assert "[`demo.json`](../r/demo.json)" in out.read_text(encoding="utf-8")
    with pytest.raises(InputError, match="no such folder"):
        write_benchmarks([tmp_path / "missing"], out)
    with pytest.raises(InputError, match="no benchmark results"):
        render_benchmarks([tmp_path / "docs"], tmp_path)


def test_an_incomplete_results_file_is_named_in_one_line(tmp_path):
    bad = _write(tmp_path / "r" / "compare.json", {"benchmark": "compare", "manifest": "m.csv", "budget_minutes": 1,
                                                   "rows": [{"model": "unet2d", "dice_vessel": 0.5}]})
    with pytest.raises(InputError, match="not a complete compare results file") as err:
        render_benchmarks([tmp_path / "r"], tmp_path)
    assert str(bad) in str(err.value)


def test_committed_benchmarks_page_is_what_the_results_generate():
    """docs/benchmarks.md cannot drift from docs/results: regenerate it with
    ``seg25d bench report docs/results --out docs/benchmarks.md`` in the commit that changes the results."""
    assert (DOCS / "benchmarks.md").read_text(encoding="utf-8") == render_benchmarks([DOCS / "results"], DOCS)


def test_every_committed_results_file_carries_its_provenance():
    results = load_results([DOCS / "results"])
    assert results and len(results) == len(list((DOCS / "results").glob("*.json")))
    for result in results:
        assert {"command", "machine", "torch", "date"} <= set(result.provenance), result.path.name
