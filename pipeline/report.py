"""A self-contained HTML report of a run or an evaluation: per-class table, training curves, MIP overlays.

``write_report(folder)`` accepts an evaluation folder (``summary.json`` + ``metrics.csv`` from ``seg25d evaluate``;
it follows ``summary.json`` to the predictions, the manifest and, through ``prediction.json``, the run) or a
run folder (``metrics.csv`` + ``curves.png`` from ``seg25d train``). Figures are embedded as PNG data, so the
page is one file; the PNGs are also kept beside it in ``report_figures/``.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import write_text
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.outputs import check_out_dir, inside, safe_name

__all__ = ["write_report"]

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f6f6f6;padding:2px 4px;display:block;white-space:pre-wrap;margin:.3em 0}"""


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="–", border=0)


def _case_overlays(summary: dict, metrics: pd.DataFrame, figures: Path) -> list[tuple[str, Path]]:
    """MIP overlays for the best, median and worst case by mean Dice."""
    from seg25d.pipeline.evaluate import find_prediction
    from seg25d.pipeline.figures import mip_overlay
    from seg25d.pipeline.images import image_paths, read_image
    from seg25d.pipeline.io import read_volume
    from seg25d.pipeline.manifest import read_label_spec, read_manifest

    manifest, pred_dir = Path(summary.get("manifest", "")), Path(summary.get("pred_dir", ""))
    if not manifest.is_file() or not pred_dir.is_dir():
        return []
    scored = metrics[metrics["error"].isna()] if "error" in metrics else metrics
    per_case = scored.groupby("case_id")["dice"].mean().dropna().sort_values()
    if per_case.empty:
        return []
    picks = {"worst": per_case.index[0], "median": per_case.index[len(per_case) // 2], "best": per_case.index[-1]}
    for case_id in picks.values():  # they name the figure files
        safe_name(str(case_id), figures.parent / "metrics.csv")
    rows = read_manifest(manifest).set_index("case_id")
    spec = read_label_spec(manifest)
    out = []
    for tag, case_id in picks.items():
        row = rows.loc[case_id]
        image = read_image(image_paths(row))  # (C, D, H, W): the first channel is drawn
        truth = read_volume(row.label).array
        pred = read_volume(find_prediction(pred_dir, case_id, Path(row.label))).array
        truth_fg = spec.masks(truth).any(0) if spec else truth > 0
        pred_fg = spec.masks(pred).any(0) if spec else pred > 0
        path = inside(figures, f"{tag}_{case_id}.png")
        mip_overlay(image.array[0].astype(np.float32), truth_fg, pred_fg, image.meta.spacing, path,
                    title=f"{tag}: {case_id}, mean Dice {per_case[case_id]:.3f}")
        out.append((f"{tag} case: {case_id} (mean Dice {per_case[case_id]:.3f})", path))
    return out


def write_report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` for an evaluation or run folder; returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    if out is not None:
        if Path(out).is_dir():
            raise InputError(out, "--out is a folder; give the HTML file to write")
        check_out_dir(Path(out).parent, "--out's folder")
    summary = _read_json(folder / "summary.json")
    run_dir = folder if (folder / "config.json").is_file() else None
    commands: list[str] = []
    if summary:
        prediction = _read_json(Path(summary.get("pred_dir", "")) / "prediction.json")
        if prediction.get("checkpoint"):
            candidate = Path(prediction["checkpoint"]).parent
            run_dir = candidate if (candidate / "metrics.csv").is_file() else None
        commands = [c for c in (prediction.get("command"), summary.get("command")) if c]
    elif run_dir is None:
        raise InputError(folder, "holds neither an evaluation (summary.json) nor a training run (config.json)")
    if run_dir is not None:
        run = _read_json(run_dir / "run.json")
        commands[:0] = run.get("commands") or [run.get("command", "")]
    figures = folder / "report_figures"
    figures.mkdir(exist_ok=True)
    parts = [f"<h1>seg25d report: {html.escape(folder.name)}</h1>"]
    if summary:
        metrics = pd.read_csv(folder / "metrics.csv")
        table = []
        for name, stats in summary.get("classes", {}).items():
            entry = {"class": name, "cases": stats.get("n_cases")}
            for metric in ("dice", "iou", "precision", "sensitivity", "hd95"):
                s = stats.get(metric, {})
                entry[metric] = s.get("mean")
                entry[f"{metric} sd"] = s.get("sd")
            table.append(entry)
        parts.append(f"<h2>Per-class results ({html.escape(str(summary.get('n_cases')))} cases, "
                     f"empty-mask policy {html.escape(str(summary.get('empty_policy')))})</h2>")
        parts.append(_table(pd.DataFrame(table)))
        if summary.get("failures"):
            parts.append("<h3>Failed cases</h3>" + _table(pd.DataFrame(summary["failures"])))
        overlays = _case_overlays(summary, metrics, figures)
        if overlays:
            parts.append("<h2>Best, median and worst case (maximum-intensity projections)</h2>")
            parts += [f"<h3>{html.escape(title)}</h3>{_img(path)}" for title, path in overlays]
    if run_dir is not None:
        curves = run_dir / "curves.png"
        if curves.is_file():
            parts.append(f"<h2>Training curves ({html.escape(str(run_dir))})</h2>{_img(curves)}")
        if (run_dir / "metrics.csv").is_file():
            last = pd.read_csv(run_dir / "metrics.csv").tail(1)
            parts.append("<h3>Last training step</h3>" + _table(last))
    commands = [c for c in commands if c]
    if commands:
        parts.append("<h2>Commands</h2>" + "".join(f"<code>{html.escape(c)}</code>" for c in commands))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>seg25d report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    out = Path(out) if out else folder / "report.html"
    write_text(out, page)
    return out
