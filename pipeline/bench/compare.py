"""``seg25d bench compare``: every model trained under the same wall-clock budget on the same split and seed.

Each model trains in a fresh process (``seg25d train`` with ``train.max_minutes`` = the budget), then predicts
the test split in this process (the time per volume counts only the model's work, not start-up) and is
evaluated. Reported per model: per-class Dice and HD95 on the test split, training steps done, the median
training-step time and the largest peak extra resident memory of a step, inference seconds per volume.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json, write_text

__all__ = ["bench_compare", "DEFAULT_MODELS", "markdown_table"]

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("projection25d", "slicestack25d", "unet2d", "unet3d", "monai_unet")


def _monai_available() -> bool:
    try:
        import monai  # noqa: F401
    except ImportError:
        return False
    return True


def _train(model: str, manifest: Path, run_dir: Path, minutes: float, seed: int, config: str, extra) -> float:
    from seg25d.pipeline.bench.models import BENCH_OPTIONS

    options = BENCH_OPTIONS.get(model)
    cmd = [sys.executable, "-m", "seg25d", "train", "--config", config, "--out", str(run_dir),
           "--set", f"data.manifest={json.dumps(str(manifest))}", "--set", f"model.name={json.dumps(model)}",
           "--set", f"train.max_minutes={minutes}", "--set", "train.max_steps=1000000",
           "--set", f"train.seed={seed}", "--set", "train.progress=false"]
    if model != "projection25d":  # the vessels preset's options are projection25d's
        cmd += ["--set", "model.options={}"]
    for key, value in (options or {}).items():
        cmd += ["--set", f"model.options.{key}={json.dumps(value)}"]
    for item in extra:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=(run_dir.parent / "train.log").open("w"))
    return time.perf_counter() - start


def _predict(checkpoint: Path, manifest: Path, out_dir: Path) -> float:
    """Predict the test split; returns the median seconds of the model's work per volume."""
    import statistics

    from seg25d.pipeline.io import read_volume, write_mask
    from seg25d.pipeline.predict import Predictor, jobs_from_manifest

    predictor = Predictor(checkpoint)
    seconds = []
    for job in jobs_from_manifest(manifest, "test"):
        volume = read_volume(job.image)
        start = time.perf_counter()
        probs = predictor.probabilities(volume)
        seconds.append(time.perf_counter() - start)
        write_mask(out_dir / job.name, predictor.label(probs), volume.meta)
    return statistics.median(seconds)


def bench_compare(manifest, budget_minutes: float, out_dir, models=DEFAULT_MODELS, seed: int = 0,
                  config: str = "vessels", extra: tuple = ()) -> pd.DataFrame:
    """Train, predict and evaluate each model; writes compare.csv, compare.json and compare.md in ``out_dir``."""
    from seg25d.pipeline.evaluate import evaluate

    manifest, out_dir = Path(manifest).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in models:
        if model == "monai_unet" and not _monai_available():
            log.warning("monai is not installed: skipping monai_unet")
            continue
        base = out_dir / model
        run_dir = base / "run"
        base.mkdir(parents=True, exist_ok=True)
        print(f"[compare] {model}: training for {budget_minutes:g} min", flush=True)
        wall = _train(model, manifest, run_dir, budget_minutes, seed, config, extra)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
        infer = _predict(checkpoint, manifest, base / "predictions")
        scores = evaluate(base / "predictions", manifest, base / "evaluation", split="test")
        steps = metrics[metrics.get("path", 0) != 2] if "path" in metrics else metrics
        row = {"model": model, "steps": len(metrics), "train_wall_seconds": round(wall, 1),
               "step_seconds": float(steps.step_seconds.median()),
               "peak_extra_mb": float(metrics.peak_extra_mb.max()),
               "infer_seconds_per_volume": infer,
               "parameters": _parameters(checkpoint)}
        for name, group in scores.dropna(subset=["class"]).groupby("class"):
            row[f"dice_{name}"] = float(group.dice.mean())
            row[f"dice_sd_{name}"] = float(group.dice.std())
            row[f"hd95_{name}"] = float(group.hd95.mean())
        rows.append(row)
        frame = pd.DataFrame(rows)
        write_csv(out_dir / "compare.csv", frame)
        write_json(out_dir / "compare.json", {"manifest": str(manifest), "budget_minutes": budget_minutes,
                                              "seed": seed, "threads": os.cpu_count(), "rows": rows})
        write_text(out_dir / "compare.md", markdown_table(frame, budget_minutes))
    return pd.DataFrame(rows)


def _parameters(checkpoint: Path) -> int:
    from seg25d.pipeline.checkpoint import load_checkpoint

    return int(sum(t.numel() for t in load_checkpoint(checkpoint)["model_state"].values() if t.is_floating_point()))


def markdown_table(frame: pd.DataFrame, budget_minutes: float) -> str:
    """The comparison as a Markdown table, best Dice first, with the winner marked."""
    dice_cols = [c for c in frame.columns if c.startswith("dice_") and not c.startswith("dice_sd_")]
    frame = frame.sort_values(dice_cols[0], ascending=False) if dice_cols else frame
    head = ["model", *[f"Dice {c[5:]} (mean ± sd)" for c in dice_cols], *[f"HD95 {c[5:]} mm" for c in dice_cols],
            "steps", "step s", "peak extra MiB", "inference s/volume", "parameters"]
    lines = [f"Training budget {budget_minutes:g} min per model, same split and seed.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [r.model, *[f"{r[c]:.3f} ± {r['dice_sd_' + c[5:]]:.3f}" for c in dice_cols],
                 *[f"{r['hd95_' + c[5:]]:.2f}" for c in dice_cols], str(int(r.steps)), f"{r.step_seconds:.3f}",
                 f"{r.peak_extra_mb:.0f}", f"{r.infer_seconds_per_volume:.2f}", f"{int(r.parameters):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
