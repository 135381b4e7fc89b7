"""``seg25d bench memory``: training memory and step time with the preprocessed cache against loading into memory.

On ``n`` synthetic vessel volumes (all in the training split) and on the first ``n // 10`` of them, each model
trains ``steps`` steps in a fresh ``seg25d train`` process, once from the cache with ``workers`` batch-making
processes and once as before (cases in memory, batches made in the training process), the two modes one after
the other for each case count (``repeats`` times, alternating which goes first). The process tree (workers
included) is sampled from ``/proc``: peak summed resident memory (RSS, every 0.1 s; shared pages counted in
every process) and peak summed proportional set size (PSS, every second: pages shared between the trainer and
its forked workers counted once, the tree's real footprint). Step and data-wait times are medians from
``metrics.csv`` after the first step. First-run preprocessing throughput and the cache's size on disk are
measured before the runs, which then reuse the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json, write_text
from seg25d.pipeline.manifest import read_manifest, sidecar_path, write_manifest
from seg25d.pipeline.provenance import provenance

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


def _watched(cmd: list[str], log: Path, interval: float = 0.1, pss_every: int = 10) -> dict:
    """Run ``cmd``; its wall time and the peak memory of its process tree. PSS is sampled every ``pss_every``-th
    time only: reading ``smaps_rollup`` walks a process's page tables under its memory-map lock, which would
    slow the steps being timed."""
    peak = {"rss": 0.0, "pss": 0.0}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        done = threading.Event()

        def sample():
            count = 0
            while not done.is_set():
                rss, pss = tree_memory_mb(proc.pid, pss=count % pss_every == 0)
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
                count += 1
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    if code:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {log}")
    return {"wall_seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak["rss"], 1),
            "peak_pss_mb": round(peak["pss"], 1)}


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
    """Run the benchmark (see the module docstring) into ``out``: ``memory.csv`` (one row per run) and
    ``memory.json`` (the runs, preprocessing throughput, cache size and the ratios the issue asks about).
    ``repeats`` runs every pair again, the other mode first; the step-time ratio is the mean of the pairs."""
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

    rows = []
    for repeat in range(repeats):
        modes = [("cache", [f"data.cache={str(cache)!r}", f"train.workers={workers}"]),
                 ("memory", ["data.cache=off", "train.workers=0"])]
        for model in models:
            for manifest, cases in ((small, max(1, n // 10)), (full, n)):
                for mode, sets in modes[:: 1 if repeat % 2 == 0 else -1]:  # alternate which goes first
                    run = out / "runs" / f"{model}-{cases}-{mode}"
                    cmd = [sys.executable, "-m", "seg25d", "train", "--config", config, "--out", str(run)]
                    for text in [f"data.manifest={str(manifest)!r}", f"model.name={model}", *common, *sets]:
                        cmd += ["--set", text]
                    if run.exists():  # every repeat measures afresh
                        shutil.rmtree(run)
                    run.parent.mkdir(parents=True, exist_ok=True)
                    row = {"model": model, "cases": cases, "mode": mode, "repeat": repeat,
                           "workers": workers if mode == "cache" else 0}
                    row.update(_watched(cmd, out / "runs" / f"{run.name}.log"))
                    metrics = pd.read_csv(run / "metrics.csv").iloc[1:]  # the first step warms up
                    row["step_seconds"] = round(float(metrics.step_seconds.median()), 4) if len(metrics) else None
                    row["data_seconds"] = round(float(metrics.data_seconds.median()), 4) if len(metrics) else None
                    rows.append(row)

    frame = pd.DataFrame(rows)
    summary = {}
    for model in models:
        r = frame[frame.model == model].groupby(["cases", "mode"]).peak_pss_mb.max()
        few, many = max(1, n // 10), n
        # paired step ratios: the two modes of one repeat on the same cases ran one after the other
        times = frame[frame.model == model].pivot_table(index=["cases", "repeat"], columns="mode",
                                                          values="step_seconds")
        ratios = (times["cache"] / times["memory"]).dropna()
        summary[model] = {
            "pss_ratio_cache_all_vs_first": round(float(r[(many, "cache")] / r[(few, "cache")]), 3),
            "pss_ratio_memory_all_vs_first": round(float(r[(many, "memory")] / r[(few, "memory")]), 3),
            "step_ratio_cache_vs_memory": round(float(ratios.mean()), 3),
            "step_ratio_se": round(float(ratios.std(ddof=1) / len(ratios) ** 0.5), 3) if len(ratios) > 1 else None,
            "step_pairs": int(len(ratios)),
        }
    result = {"benchmark": "memory", "provenance": provenance(), "n": n, "shape": list(shape), "steps": steps,
              "workers": workers, "repeats": repeats, "models": list(models), "preprocess": preprocess,
              "summary": summary, "runs": rows}
    write_csv(out / "memory.csv", frame)
    write_json(out / "memory.json", result)
    return result


def format_memory(result: dict) -> str:
    frame = pd.DataFrame(result["runs"])
    p = result["preprocess"]
    lines = [frame.to_string(index=False),
             f"preprocessing: {p['built']} cases in {p['seconds']} s ({p['cases_per_second']} cases/s), "
             f"cache {p['cache_mb']} MiB"]
    for model, s in result["summary"].items():
        lines.append(f"{model}: peak PSS {result['n']} vs {max(1, result['n'] // 10)} cases: "
                     f"cache x{s['pss_ratio_cache_all_vs_first']}, memory x{s['pss_ratio_memory_all_vs_first']}; "
                     f"step time cache/memory x{s['step_ratio_cache_vs_memory']} ± {s['step_ratio_se']} "
                     f"({s['step_pairs']} pairs)")
    return "\n".join(lines)
