"""``seg25d bench scaling``: training-step time and peak extra memory against cube size, a fresh process each.

Each (model, size) runs :mod:`seg25d.pipeline.bench.step` in fresh processes (memory in one started with
``MEASURE_ENV``, time in a plain one), watched: when a process's resident memory passes the limit it is
stopped and the row says so ("exceeds the memory limit") instead of failing. On a GPU (``device="cuda"``)
memory is peak GPU memory, and a size whose step runs out of it is recorded with status "oom": the largest
size with status "ok" is the largest cube the model trains as a whole volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import atomic_path, write_csv, write_json
from seg25d.pipeline.bench.step import OOM_EXIT
from seg25d.pipeline.memory import MEASURE_ENV
from seg25d.pipeline.provenance import provenance

__all__ = ["bench_scaling", "SCALING_MODELS", "physical_memory_gb"]

# MONAI's UNet with channels 16-32-64-128-256, strides 2, two residual units; projection25d's scale by size.
SCALING_MODELS = {
    "projection25d": {"scale": "auto"},
    "unet3d": {},
    "monai_unet": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
}


def physical_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _watch(cmd: list[str], env: dict, limit_mb: float, timeout: float) -> tuple[dict | None, str]:
    """Run ``cmd`` while watching its resident memory; ``(json result, status)``."""
    # output to files: a pipe the watcher does not read could fill up and stall the child
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env={**os.environ, **env})
        start = time.time()
        while proc.poll() is None:
            if _rss_mb(proc.pid) > limit_mb:
                proc.kill()
                proc.wait()
                return None, f"exceeds the memory limit ({limit_mb / 1024:.0f} GiB)"
            if time.time() - start > timeout:
                proc.kill()
                proc.wait()
                return None, f"slower than the {timeout:.0f} s limit"
            time.sleep(0.05)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode == OOM_EXIT:
        return None, "oom"
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["?"])[-1]
        return None, "out of memory" if "memory" in last.lower() else f"failed: {last}"
    return json.loads(stdout.strip().splitlines()[-1]), "ok"


def _run(model: str, size: int, options: dict, limit_mb: float, timeout: float, repeats: int,
         precision: str, device: str = "cpu") -> dict:
    """Memory from a process with :data:`MEASURE_ENV` (stopped at the limit), then time from a plain one."""
    base = [sys.executable, "-m", "seg25d.pipeline.bench.step", "--model", model, "--shape", str(size),
            "--options", json.dumps(options), "--precision", precision, "--device", device]
    sized, status = _watch(base + ["--repeats", "1"], MEASURE_ENV, limit_mb, timeout)
    if sized is None:
        return {"model": model, "size": size, "status": status}
    timed, status = _watch(base + ["--repeats", str(repeats)], {}, limit_mb * 2, timeout)
    if timed is None:
        return {"model": model, "size": size, "status": status}
    return {**timed, "size": size, "status": "ok", "step_peak_extra_mb": sized["step_peak_extra_mb"],
            "infer_peak_extra_mb": sized["infer_peak_extra_mb"]}


def bench_scaling(sizes=(64, 96, 128, 192, 256), out_dir="bench_scaling", models=None, memory_limit_gb=None,
                  timeout: float = 1800, repeats: int = 5, precision: str = "fp32",
                  device: str = "cpu") -> pd.DataFrame:
    """Measure every model at every size; writes scaling.csv, scaling.json and scaling.png in ``out_dir``.
    ``precision``: that of the training steps, as ``train.precision``; ``device``: as ``train.device``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit_gb = memory_limit_gb or min(16.0, 0.75 * physical_memory_gb())
    rows = []
    for model in models or SCALING_MODELS:
        for size in sizes:
            print(f"[scaling] {model} at {size}^3", flush=True)
            row = _run(model, size, SCALING_MODELS.get(model, {}), limit_gb * 1024, timeout, repeats, precision,
                       device)
            print(f"[scaling]   {row.get('status')}: step {row.get('step_seconds', float('nan')):.3f} s, "
                  f"{row.get('step_peak_extra_mb', float('nan')):.0f} MiB", flush=True)
            rows.append(row)
            frame = pd.DataFrame(rows)
            write_csv(out_dir / "scaling.csv", frame)
            write_json(out_dir / "scaling.json", {"benchmark": "scaling", "provenance": provenance(),
                                                  "memory_limit_gb": limit_gb, "device": device, "rows": rows})
    frame = pd.DataFrame(rows)
    scaling_figure(frame, out_dir / "scaling.png")
    return frame


def scaling_figure(frame: pd.DataFrame, path) -> None:
    """Log-log step time and peak extra memory against size, with N^2 and N^3 reference slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame.status == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, column, label in ((axes[0], "step_seconds", "training step (s)"),
                              (axes[1], "step_peak_extra_mb", "peak extra memory of a step (MiB)")):
        for model, group in ok.groupby("model"):
            ax.loglog(group["size"], group[column], marker="o", label=model)
        if len(ok):
            n = np.array(sorted(ok["size"].unique()), dtype=float)
            ref = ok[column].median()
            for power, style in ((2, ":"), (3, "--")):
                ax.loglog(n, ref * (n / n[len(n) // 2]) ** power, "k" + style, lw=0.8, label=f"~N^{power}")
        failed = frame[frame.status != "ok"]
        for _, r in failed.iterrows():
            ax.annotate(f"{r['model']}: {r['status']}", (r["size"], ax.get_ylim()[1]), fontsize=7, rotation=90,
                        va="top")
        ax.set_xlabel("cube size N (voxels per side)"), ax.set_ylabel(label), ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
