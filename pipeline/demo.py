"""The main job on the embedded default: synthetic vessels -> train projection25d -> predict -> evaluate -> report."""

from __future__ import annotations

import json
import os
from pathlib import Path

from seg25d.pipeline.atomic import write_json

__all__ = ["run_demo"]


def run_demo(out_dir: str | os.PathLike = "seg25d_demo", minutes: float = 8.0, cases: int = 16,
             shape=(64, 96, 96), seed: int = 0, overrides: list[str] | tuple = ()) -> dict:
    """Run the whole pipeline in ``out_dir`` and return the headline numbers (also in ``demo.json``).

    Layout: ``data/`` (volumes and manifest), ``run/`` (checkpoints, metrics, curves), ``predictions/``,
    ``evaluation/`` (metrics.csv, summary.json, report.html).
    """
    from seg25d.pipeline.baselines import best_global_threshold, threshold_dice
    from seg25d.pipeline.config import load_config
    from seg25d.pipeline.device import resolve_device
    from seg25d.pipeline.evaluate import evaluate
    from seg25d.pipeline.predict import jobs_from_manifest, predict_batch
    from seg25d.pipeline.report import write_report
    from seg25d.pipeline.synth.vessels import write_vessel_dataset
    from seg25d.pipeline.training import train

    out = Path(out_dir)
    manifest = out / "data" / "manifest.csv"
    config = load_config("vessels", [f"data.manifest={json.dumps(str(manifest.resolve()))}",
                                     f"train.max_minutes={minutes}", f"train.seed={seed}", *overrides])
    resolve_device(config["train"]["device"])  # a device this machine lacks is refused before any work
    if not manifest.exists():
        print(f"[1/5] generating {cases} synthetic MRA-like volumes {tuple(shape)} -> {manifest.parent}")
        write_vessel_dataset(manifest.parent, n=cases, shape=tuple(shape), seed=seed)
    run = out / "run"
    resume = (run / "last.pt").exists()
    print(f"[2/5] training projection25d for up to {minutes:g} minutes -> {run}" + (" (resuming)" if resume else ""))
    result = train(config, run, resume=resume)
    checkpoint = result.best_checkpoint or result.last_checkpoint
    print(f"[3/5] predicting the test split with {checkpoint.name}")
    report = predict_batch(checkpoint, jobs_from_manifest(manifest, "test"), out / "predictions", overwrite=True,
                           device=config["train"]["device"])
    print("[4/5] evaluating")
    metrics = evaluate(out / "predictions", manifest, out / "evaluation", split="test")
    threshold, train_dice = best_global_threshold(manifest)
    summary = {
        "test_dice": float(metrics["dice"].mean()),
        "test_hd95_mm": float(metrics["hd95"].mean()),
        "best_val_dice": result.best_score,
        "best_global_threshold": threshold,
        "threshold_test_dice": threshold_dice(manifest, "test", threshold),
        "threshold_val_dice": threshold_dice(manifest, "val", threshold),
        "threshold_train_dice": train_dice,
        "train_steps": result.steps,
        "prediction_seconds_per_volume": report["seconds"] / max(1, report["predicted"]),
    }
    from seg25d.pipeline.provenance import provenance

    write_json(out / "demo.json", {**summary, "benchmark": "demo", "provenance": provenance()})
    page = write_report(out / "evaluation")
    print(f"[5/5] report: {page}")
    print(f"test Dice {summary['test_dice']:.3f} (best global threshold: {summary['threshold_test_dice']:.3f}); "
          f"HD95 {summary['test_hd95_mm']:.1f} mm")
    return summary
