"""``seg25d bench memory``: training memory and step time with the preprocessed cache against loading into memory.

On ``n`` synthetic vessel volumes (all in the training split) and on the first ``n // 10`` of them, each model
trains ``steps`` steps in a fresh ``seg25d train`` process, once from the cache with ``workers`` batch-making
processes and once as before (cases in memory, batches made in the training process), each run alone on the
machine. The process tree (workers included) is sampled from ``/proc``: peak summed resident memory (RSS, every
0.1 s; shared pages counted in every process) and peak summed proportional set size (PSS, every second: pages
shared between the trainer and its forked workers counted once, the tree's real footprint). First-run
preprocessing throughput and the cache's size on disk are measured before the runs, which then reuse the cache.

Step time, cache against memory, is measured apart: on a shared machine the speed of a step drifts by tens of
percent from minute to minute, more than the difference asked about. So each of ``repeats`` pairs (on the first
``n // 10`` cases) trains the two modes at once, in turns of a few seconds of steps
(:mod:`seg25d.pipeline.turns`; a waiting trainer's workers stop once its batches are made ahead), and the ratio
of the two runs' median step times is paired. Step and data-wait times are medians from ``metrics.csv`` after
the first step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json, write_text
from seg25d.pipeline.manifest import read_manifest, sidecar_path, write_manifest
from seg25d.pipeline.provenance import provenance
from seg25d.pipeline.turns import TURN_SECONDS, run_in_turns

__all__ = ["bench_memory", "tree_memory_mb", "MEMORY_MODELS"]

MEMORY_MODELS = ("projection25d", "unet2d")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _field_kb(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        stack += _children(p)
    return pids


def tree_memory_mb(pid: int, pss: bool = True) -> tuple[float, float]:
    """Summed RSS and PSS (MiB; PSS 0 unless ``pss``) of ``pid`` and all its descendants, from ``/proc``."""
    pids = _tree(pid)
    rss = sum(_field_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
    return rss / 1024, sum(_field_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids) / 1024 if pss else 0.0


class _Peaks:
    """Peak RSS and PSS of the process trees of the processes :meth:`watch` is given, each tree apart, sampled in
    a thread while the ``with`` block runs. PSS is sampled every ``pss_every``-th time only: reading
    ``smaps_rollup`` walks a process's page tables under its memory-map lock, which would slow the steps being
    timed."""

    def __init__(self, interval: float = 0.1, pss_every: int = 10):
        self.interval, self.pss_every = interval, pss_every
        self.pids: list[int] = []
        self.peaks: dict[int, dict] = {}
        self._done = threading.Event()

    def watch(self, process: subprocess.Popen) -> None:
        self.peaks[process.pid] = {"rss": 0.0, "pss": 0.0}
        self.pids.append(process.pid)

    def _sample(self) -> None:
        count = 0
        while not self._done.is_set():
            for pid in list(self.pids):
                rss, pss = tree_memory_mb(pid, pss=count % self.pss_every == 0)
                peak = self.peaks[pid]
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            count += 1
            self._done.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def row(self, pid: int) -> dict:
        return {"peak_rss_mb": round(self.peaks[pid]["rss"], 1), "peak_pss_mb": round(self.peaks[pid]["pss"], 1)}


def _train(commands: list[list[str]], logs: list[Path], turn_seconds: float) -> list[dict]:
    """Run training ``commands`` (alone one after the other, or in turns); each one's seconds and peak memory."""
    peaks = _Peaks()
    with peaks:
        outcomes = run_in_turns(commands, logs, turn_seconds, started=peaks.watch)
    rows = []
    for command, log, outcome, pid in zip(commands, logs, outcomes, peaks.pids):
        if outcome.status:
            raise RuntimeError(f"{' '.join(command)} failed ({outcome.status}); see {log}")
        rows.append({"wall_seconds": round(outcome.seconds, 2), **peaks.row(pid)})
    return rows


def _medians(run: Path) -> dict:
    metrics = pd.read_csv(run / "metrics.csv").iloc[1:]  # the first step warms up
    if not len(metrics):
        return {"step_seconds": None, "data_seconds": None}
    return {"step_seconds": round(float(metrics.step_seconds.median()), 4),
            "data_seconds": round(float(metrics.data_seconds.median()), 4)}


def _dataset(out: Path, n: int, shape, seed: int) -> tuple[Path, Path]:
    """The full manifest (every case in the training split) and one of its first ``n // 10`` cases."""
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    manifest = out / "data" / "manifest.csv"
    if not manifest.exists():
        write_vessel_dataset(out / "data", n=n, shape=tuple(shape), seed=seed, progress=False)
    frame = read_manifest(manifest).assign(split="train")
    full, small = out / "data" / "all.csv", out / "data" / "first.csv"
    for path, rows in ((full, frame), (small, frame.iloc[: max(1, n // 10)])):
        write_manifest(path, rows)
        write_text(sidecar_path(path), sidecar_path(manifest).read_text(encoding="utf-8"))
    return full, small


def bench_memory(out: str | os.PathLike, n: int = 400, shape=(128, 128, 128), steps: int = 20,
                 models=MEMORY_MODELS, workers: int = 2, seed: int = 0, config: str = "vessels",
                 overrides: tuple[str, ...] = (), repeats: int = 1) -> dict:
    """Run the benchmark (see the module docstring) into ``out``: ``memory.csv`` (one row per run alone) and
    ``memory.json`` (those runs, the ``repeats`` step-time pairs in turns, preprocessing throughput, cache size
    and the ratios the issue asks about; the step-time ratio is the mean over the pairs)."""
    from seg25d.pipeline.cache import CacheStats, prepare_data
    from seg25d.pipeline.config import load_config

    out = Path(out)
    full, small = _dataset(out, n, shape, seed)
    cache = out / "cache"
    if cache.exists():  # a rerun measures first-run preprocessing afresh
        shutil.rmtree(cache)
    common = [f"train.max_steps={steps}", f"train.checkpoint_every={steps}", f"train.val_every={steps}",
              "train.max_minutes=0", "train.schedule=path1", "train.progress=false", *overrides]  # every step loads

    stats = CacheStats()
    first = load_config(config, [f"data.manifest={str(full)!r}", f"model.name={models[0]}", *common])
    _, _, cached, _ = prepare_data(first, cache, progress=False, stats=stats)
    size = sum(p.stat().st_size for c in cached for p in (c.image_path, c.masks_path) if p is not None)
    preprocess = {"cases": len(cached), "built": stats.built, "seconds": round(stats.seconds, 2),
                  "cases_per_second": round(stats.built / stats.seconds, 3) if stats.built else None,
                  "cache_mb": round(size / 2**20, 3)}

    modes = {"cache": [f"data.cache={str(cache)!r}", f"train.workers={workers}"],
             "memory": ["data.cache=off", "train.workers=0"]}

    def command(model: str, manifest: Path, mode: str, run: Path) -> list[str]:
        cmd = [sys.executable, "-m", "seg25d", "train", "--config", config, "--out", str(run)]
        for text in [f"data.manifest={str(manifest)!r}", f"model.name={model}", *common, *modes[mode]]:
            cmd += ["--set", text]
        if run.exists():  # every run measures afresh
            shutil.rmtree(run)
        run.parent.mkdir(parents=True, exist_ok=True)
        return cmd

    rows, pairs = [], []
    few = max(1, n // 10)
    for model in models:
        for manifest, cases in ((small, few), (full, n)):
            for mode in modes:
                run = out / "runs" / f"{model}-{cases}-{mode}"
                cmd = command(model, manifest, mode, run)
                row = {"model": model, "cases": cases, "mode": mode, "workers": workers if mode == "cache" else 0}
                row.update(_train([cmd], [out / "runs" / f"{run.name}.log"], turn_seconds=0)[0], **_medians(run))
                rows.append(row)
        for repeat in range(repeats):
            order = list(modes)[:: 1 if repeat % 2 == 0 else -1]  # alternate which takes the first turn
            runs = [out / "runs" / f"{model}-{few}-{mode}-turns" for mode in order]
            commands = [command(model, small, mode, run) for mode, run in zip(order, runs)]
            _train(commands, [out / "runs" / f"{run.name}.log" for run in runs], turn_seconds=TURN_SECONDS)
            pairs += [{"model": model, "cases": few, "mode": mode, "repeat": repeat, **_medians(run)}
                      for mode, run in zip(order, runs)]

    frame, paired = pd.DataFrame(rows), pd.DataFrame(pairs)
    summary = {}
    for model in models:
        r = frame[frame.model == model].set_index(["cases", "mode"]).peak_pss_mb
        times = paired[paired.model == model].pivot_table(index="repeat", columns="mode", values="step_seconds")
        ratios = (times["cache"] / times["memory"]).dropna()
        summary[model] = {
            "pss_ratio_cache_all_vs_first": round(float(r[(n, "cache")] / r[(few, "cache")]), 3),
            "pss_ratio_memory_all_vs_first": round(float(r[(n, "memory")] / r[(few, "memory")]), 3),
            "step_ratio_cache_vs_memory": round(float(ratios.mean()), 3),
            "step_ratio_se": round(float(ratios.std(ddof=1) / len(ratios) ** 0.5), 3) if len(ratios) > 1 else None,
            "step_pairs": int(len(ratios)),
        }
    result = {"benchmark": "memory", "provenance": provenance(), "n": n, "shape": list(shape), "steps": steps,
              "workers": workers, "repeats": repeats, "models": list(models), "preprocess": preprocess,
              "summary": summary, "runs": rows, "pairs": pairs}
    write_csv(out / "memory.csv", frame)
    write_json(out / "memory.json", result)
    return result


def format_memory(result: dict) -> str:
    frame = pd.DataFrame(result["runs"])
    p = result["preprocess"]
    lines = [frame.to_string(index=False), pd.DataFrame(result["pairs"]).to_string(index=False),
             f"preprocessing: {p['built']} cases in {p['seconds']} s ({p['cases_per_second']} cases/s), "
             f"cache {p['cache_mb']} MiB"]
    for model, s in result["summary"].items():
        lines.append(f"{model}: peak PSS {result['n']} vs {max(1, result['n'] // 10)} cases: "
                     f"cache x{s['pss_ratio_cache_all_vs_first']}, memory x{s['pss_ratio_memory_all_vs_first']}; "
                     f"step time cache/memory x{s['step_ratio_cache_vs_memory']} ± {s['step_ratio_se']} "
                     f"({s['step_pairs']} pairs in turns)")
    return "\n".join(lines)
