"""``seg25d bench compare``: every model trained under the same wall-clock budget on the same split and seed.

Each model trains in a fresh process (``seg25d train`` with ``train.max_minutes`` = the budget). The processes
take turns on the machine (:mod:`seg25d.pipeline.turns`: a few seconds of steps each, the one furthest behind
first), so that every model meets the shared machine's fast and slow minutes alike; ``turn_seconds=0`` trains
them one after the other. Then each model predicts the test split in this process (the time per volume counts
only the model's work, not start-up) and is evaluated. Reported per model: per-class Dice and HD95 on the test
split (and the competition score where the labels are the UW-Madison GI organs), training steps done, the
median training-step time, the peak extra resident memory of a training step and of an inference (measured in a
fresh process, see :mod:`seg25d.pipeline.memory`), inference seconds per volume.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json, write_text
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.memory import ENV as STEP_MEMORY_ENV
from seg25d.pipeline.provenance import provenance
from seg25d.pipeline.turns import TURN_SECONDS, run_in_turns

__all__ = ["bench_compare", "parse_model_spec", "run_entries", "DEFAULT_MODELS", "markdown_table"]

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("projection25d", "slicestack25d", "unet2d", "unet3d", "monai_unet")


def _monai_available() -> bool:
    try:
        import monai  # noqa: F401
    except ImportError:
        return False
    return True


def _train_command(model: str, options: dict | None, manifest: Path, run_dir: Path, minutes: float, seed: int,
                   config: str, extra) -> list[str]:
    """``seg25d train`` for one entry; ``options`` (when given) replace the preset's model options."""
    cmd = [sys.executable, "-m", "seg25d", "train", "--config", config, "--out", str(run_dir),
           "--set", f"data.manifest={json.dumps(str(manifest))}", "--set", f"model.name={json.dumps(model)}",
           "--set", f"train.max_minutes={minutes}", "--set", "train.max_steps=1000000",
           "--set", f"train.seed={seed}", "--set", "train.progress=false"]
    if options is not None:
        cmd += ["--set", "model.options={}"]
        for key, value in options.items():
            cmd += ["--set", f"model.options.{key}={_toml(value)}"]
    for item in extra:
        cmd += ["--set", item]
    return cmd


def _predict(checkpoint: Path, manifest: Path, out_dir: Path, device: str) -> float:
    """Predict the test split on ``device``; returns the median seconds of the model's work per volume."""
    import statistics

    from seg25d.pipeline.device import synchronize
    from seg25d.pipeline.io import read_volume, write_mask
    from seg25d.pipeline.predict import Predictor, jobs_from_manifest

    predictor = Predictor(checkpoint, device)
    seconds = []
    for job in jobs_from_manifest(manifest, "test"):
        volume = read_volume(job.image)
        start = time.perf_counter()
        probs = predictor.probabilities(volume)
        synchronize(predictor.device)
        seconds.append(time.perf_counter() - start)
        write_mask(out_dir / job.name, predictor.label(probs), volume.meta)
    return statistics.median(seconds)


def _toml(value) -> str:
    """A TOML literal for ``--set`` (tables and arrays of scalars)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def bench_compare(manifest, budget_minutes: float, out_dir, models=DEFAULT_MODELS, seed: int = 0,
                  config: str = "vessels", extra: tuple = (), turn_seconds: float = TURN_SECONDS,
                  encoder: str | None = None) -> pd.DataFrame:
    """Train, predict and evaluate each model; writes compare.csv, compare.json and compare.md in ``out_dir``.

    Models train with the preset's loss, data and schedule; the preset's own model with the preset's model
    options, the others with ``BENCH_OPTIONS`` or their defaults; a model given as ``NAME:KEY=VALUE,...`` trains
    with those options changed (see :func:`parse_model_spec`). With ``encoder``, each model with a 2D U-Net
    also trains as "MODEL ENCODER", its U-Net on that encoder with random weights.
    """
    from seg25d.models.encoders import ENCODER_OPTIONS, with_encoder
    from seg25d.pipeline.bench.models import BENCH_OPTIONS
    from seg25d.pipeline.config import load_config

    preset_model = load_config(config)["model"]
    entries = []
    for spec in models:
        model, changes = parse_model_spec(spec)
        if model == "monai_unet" and not _monai_available():
            log.warning("monai is not installed: skipping monai_unet")
            continue
        own = model == preset_model["name"]
        base = preset_model["options"] if own else BENCH_OPTIONS.get(model, {})
        label = " ".join([model, *(f"{key}={_toml(value)}" for key, value in changes.items())])
        entries.append((label, model, {**base, **changes} if changes else (None if own else base), ()))
        if encoder and model in ENCODER_OPTIONS:
            entries.append((f"{label} {encoder}", model, with_encoder(model, {**base, **changes}, encoder), ()))
    return run_entries(entries, manifest, budget_minutes, out_dir, seed, config, extra, name="compare",
                       turn_seconds=turn_seconds)


def parse_model_spec(spec: str) -> tuple[str, dict]:
    """``"NAME"`` or ``"NAME:KEY=VALUE,..."`` (values as JSON, else text) into the model's name and the options
    that replace its benchmark defaults, e.g. ``"projection25d:scale=1"``."""
    name, _, rest = spec.partition(":")
    items, depth, start = [], 0, 0
    for i, char in enumerate(rest + ","):  # commas inside brackets belong to a list value
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(rest[start:i])
            start = i + 1
    changes = {}
    for item in filter(None, items):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(spec, f"model option {item!r} is not KEY=VALUE")
        try:
            changes[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            changes[key.strip()] = text
    return name.strip(), changes


def run_entries(entries, manifest, budget_minutes: float, out_dir, seed: int, config: str, extra: tuple,
                name: str, turn_seconds: float = TURN_SECONDS) -> pd.DataFrame:
    """Train ``(label, model, options, overrides)`` entries in turns, then predict and evaluate each into
    ``out_dir/<name>.*``. An entry whose training fails is reported after the others are written."""
    from seg25d.pipeline.evaluate import evaluate
    from seg25d.pipeline.manifest import read_manifest
    from seg25d.pipeline.outputs import make_out_dir

    manifest = Path(manifest).resolve()
    read_manifest(manifest)  # a bad manifest is one line now, not a failed training per entry
    out_dir = make_out_dir(out_dir)
    bases = [out_dir / _slug(label) for label, *_ in entries]
    commands = []
    for base, (label, model, options, overrides) in zip(bases, entries):
        base.mkdir(parents=True, exist_ok=True)
        commands.append(_train_command(model, options, manifest, base / "run", budget_minutes, seed, config,
                                       (*extra, *overrides)))
    how = f"in turns of {turn_seconds:g} s" if turn_seconds > 0 else "one after another"
    print(f"[{name}] training {', '.join(label for label, *_ in entries)} for {budget_minutes:g} min each, {how}",
          flush=True)
    trained = run_in_turns(commands, [base / "train.log" for base in bases], turn_seconds,
                           env={STEP_MEMORY_ENV: "1"})  # metrics.csv gets each step's peak memory
    rows, failed = [], []
    for base, (label, *_), outcome in zip(bases, entries, trained):
        run_dir = base / "run"
        if outcome.status:
            failed.append(f"{label} (exit {outcome.status}; see {base / 'train.log'})")
            continue
        print(f"[{name}] {label}: testing", flush=True)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
        device = json.loads((run_dir / "config.json").read_text())["train"]["device"]  # as it trained
        infer = _predict(checkpoint, manifest, base / "predictions", device)
        scores = evaluate(base / "predictions", manifest, base / "evaluation", split="test")
        steps = metrics[metrics.path != 2] if "path" in metrics else metrics
        memory = _step_memory(checkpoint, manifest, device)
        precision = json.loads((run_dir / "run.json").read_text()).get("precision", "fp32")
        row = {"model": label, "precision": precision, "steps": len(metrics),
               "train_wall_seconds": round(outcome.seconds, 1), "turns": outcome.turns,
               "step_seconds": float(steps.step_seconds.median()), "peak_extra_mb": memory["step_peak_extra_mb"],
               "infer_peak_extra_mb": memory["infer_peak_extra_mb"], "infer_seconds_per_volume": infer,
               "parameters": _parameters(checkpoint), "cases": int(scores.case_id.nunique())}
        kaggle = _kaggle_score(base / "predictions", manifest)
        if kaggle is not None:
            row["kaggle_score"] = kaggle
        for cls, group in scores.dropna(subset=["class"]).groupby("class"):
            row[f"dice_{cls}"] = float(group.dice.mean())
            row[f"dice_sd_{cls}"] = float(group.dice.std())
            row[f"hd95_{cls}"] = float(group.hd95.mean())
        rows.append(row)
        frame = pd.DataFrame(rows)
        write_csv(out_dir / f"{name}.csv", frame)
        write_json(out_dir / f"{name}.json", {"benchmark": name, "provenance": provenance(),
                                              "manifest": str(manifest), "budget_minutes": budget_minutes,
                                              "seed": seed, "config": config, "turn_seconds": turn_seconds,
                                              "cpus": os.cpu_count(), "rows": rows})
        write_text(out_dir / f"{name}.md", markdown_table(frame, budget_minutes))
    if failed:
        raise InputError(out_dir, f"training failed for {'; '.join(failed)}")
    return pd.DataFrame(rows)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


def _kaggle_score(pred_dir: Path, manifest: Path) -> float | None:
    """The UW-Madison competition score of the test split's predictions when the labels are its three organs
    (``kaggle import``), else None."""
    from seg25d.pipeline.evaluate import find_prediction
    from seg25d.pipeline.io import read_volume
    from seg25d.pipeline.kaggle.layout import CLASSES
    from seg25d.pipeline.kaggle.score import score_volumes
    from seg25d.pipeline.manifest import label_spec_or_infer, read_manifest

    rows = read_manifest(manifest)
    rows = rows[(rows["split"] == "test") & rows["label"].notna()]
    spec = label_spec_or_infer(manifest, rows)
    if list(spec.classes) != list(CLASSES):
        return None

    def pairs():  # imported volumes are (slices, rows, columns), the layout the score reads
        for case in rows.itertuples(index=False):
            label = Path(case.label)
            truth = read_volume(label).array
            found = find_prediction(pred_dir, str(case.case_id), label)  # none: scored as empty, as the competition
            yield spec.masks(truth), spec.masks(read_volume(found).array if found else np.zeros_like(truth))

    return float(score_volumes(pairs())["score"])


def _step_memory(checkpoint: Path, manifest: Path, device: str) -> dict:
    """Peak extra memory of one training step and one inference of the trained model's architecture on a
    volume of the test cases' working shape, in a fresh memory-measuring process."""
    from seg25d.pipeline.bench.step import measure_in_fresh_processes
    from seg25d.pipeline.checkpoint import load_checkpoint
    from seg25d.pipeline.io import read_volume
    from seg25d.pipeline.predict import jobs_from_manifest
    from seg25d.pipeline.preprocess import Preprocessing

    payload = load_checkpoint(checkpoint)
    volume = read_volume(jobs_from_manifest(manifest, "test")[0].image)
    shape = Preprocessing.from_dict(payload["preprocessing"]).grid(volume.meta.shape, volume.meta.spacing)
    model, train = payload["model_config"], payload["config"]["train"]
    return measure_in_fresh_processes(model["name"], shape, model["options"], repeats=1,
                                      channels=(model["in_channels"], model["out_channels"]),
                                      batch=int(train["slices_per_step"]),
                                      patch=payload["config"]["data"].get("patch_size") or None,
                                      precision=train.get("precision", "fp32"), device=device)


def _parameters(checkpoint: Path) -> int:
    from seg25d.pipeline.checkpoint import load_model

    return int(sum(p.numel() for p in load_model(checkpoint).parameters()))


def markdown_table(frame: pd.DataFrame, budget_minutes: float) -> str:
    """The comparison as a Markdown table, best Dice first, with the winner marked."""
    dice_cols = [c for c in frame.columns if c.startswith("dice_") and not c.startswith("dice_sd_")]
    frame = frame.sort_values(dice_cols[0], ascending=False) if dice_cols else frame
    kaggle = "kaggle_score" in frame
    head = ["model", *[f"Dice {c[5:]} (mean ± sd)" for c in dice_cols], *[f"HD95 {c[5:]} mm" for c in dice_cols],
            *(["Kaggle score"] if kaggle else []), "steps", "step s", "peak extra MiB", "inference s/volume",
            "parameters"]
    lines = [f"Training budget {budget_minutes:g} min per model, same split and seed.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [r.model, *[f"{r[c]:.3f} ± {r['dice_sd_' + c[5:]]:.3f}" for c in dice_cols],
                 *[f"{r['hd95_' + c[5:]]:.2f}" for c in dice_cols], *([f"{r.kaggle_score:.3f}"] if kaggle else []),
                 str(int(r.steps)), f"{r.step_seconds:.3f}",
                 f"{r.peak_extra_mb:.0f}", f"{r.infer_seconds_per_volume:.2f}", f"{int(r.parameters):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
