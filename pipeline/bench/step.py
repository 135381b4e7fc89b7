"""One model's training step and whole-volume inference at a volume shape: time or peak extra memory.

Run in a fresh process per (model, shape, what) by ``seg25d bench scaling`` and ``bench compare``:
``python -m seg25d.pipeline.bench.step --model projection25d --shape 128 128 128 --what time`` prints one
JSON line. Memory is measured in a process started with :data:`seg25d.pipeline.memory.MEASURE_ENV`, time
in one without it, whose allocator keeps freed memory as ``seg25d train``'s does (see
:mod:`seg25d.pipeline.memory` and :mod:`seg25d.pipeline.allocator`). On a GPU (``--device cuda``) memory is
the peak GPU memory tensors take (``torch.cuda.max_memory_allocated``), and a step that runs out of it exits
with :data:`OOM_EXIT` after printing ``{"status": "oom"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from seg25d.pipeline.allocator import keep_freed_memory
from seg25d.pipeline.memory import MEASURE_ENV, PeakMemory

__all__ = ["measure", "measure_in_fresh_processes", "warmup_steps", "OOM_EXIT"]

OOM_EXIT = 3  # exit status of a measurement that ran out of GPU memory

#: warm-up steps of a model that draws views at random: its images come in several crop sizes (per view and
#: per how many of a step's views share one), and oneDNN sets up each shape's kernels the first time it sees it
RANDOM_VIEW_WARMUP = 10


def warmup_steps(model) -> int:
    """Untimed steps before a measurement: one (kernels, optimiser state), or :data:`RANDOM_VIEW_WARMUP` for a
    model with the two paths, which draws random views per step, so that what is timed is the step training
    pays after its first seconds."""
    from seg25d.models import feeding_of

    return RANDOM_VIEW_WARMUP if feeding_of(model).two_paths else 1


def measure(name: str, shape, options: dict | None = None, repeats: int = 3, seed: int = 0,
            channels: tuple[int, int] = (1, 1), batch: int = 16, patch=None, precision: str = "fp32",
            device: str = "cpu") -> dict:
    """Median seconds and largest peak extra MiB of a training step (forward, BCE+Dice loss, backward, AdamW
    step) after :func:`warmup_steps` untimed ones, and of a whole-volume inference, on a random volume of
    ``shape`` with a sparse random mask.

    ``precision``: that of the training step's forward pass, as ``train.precision``, also used for inference on
    a GPU (on the CPU inference runs in fp32, as ``seg25d predict``'s default). ``device``: as ``train.device``;
    on a GPU the memory columns are the peak GPU memory above what the model, optimiser and inputs hold.

    The training batch is what the trainer feeds the model (its feeding): the whole volume (``volume``, and
    ``patches`` unless ``patch`` is given), or ``batch`` slices or slice stacks.
    """
    from seg25d.models import build, feeding_of
    from seg25d.pipeline.losses import segmentation_loss
    from seg25d.pipeline.volume_inference import predict_logits

    from seg25d.models.projection25d import resolve_scale
    from seg25d.pipeline.device import (autocast, describe_device, grad_scaler, peak_memory, peak_memory_reset,
                                        resolve_device, resolve_precision, synchronize)

    device = resolve_device(device)
    torch.manual_seed(seed)
    options = dict(options or {})
    if options.get("scale") == "auto":
        options["scale"] = resolve_scale("auto", shape)
    model = build(name, *channels, **options).to(device)
    volume = torch.randn(1, channels[0], *shape, device=device)
    feeding = feeding_of(model)
    if feeding.kind == "volume" or feeding.kind == "patches" and not patch:
        x, y_shape = volume, (1, channels[1], *shape)
    elif feeding.kind == "patches":
        x, y_shape = torch.randn(1, channels[0], *patch, device=device), (1, channels[1], *patch)
    else:
        per_slice = channels[0] * (feeding.slices if feeding.kind == "stacks" else 1)
        x, y_shape = torch.randn(batch, per_slice, *shape[1:], device=device), (batch, channels[1], *shape[1:])
    y = (torch.rand(y_shape, device=device) > 0.97).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    precision = resolve_precision(precision, device)
    scaler = grad_scaler(device, precision)
    infer_precision = precision if device.type == "cuda" else "fp32"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = model(x)
            outs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(segmentation_loss(o.float(), y, True, "bce_dice") for o in outs) / len(outs)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def timed(work) -> tuple[float, float | None]:
        """Seconds and peak extra MiB of ``work()`` (GPU memory on a GPU, resident memory on the CPU)."""
        synchronize(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        peak_memory_reset(device)
        with PeakMemory() as mem:
            start = time.perf_counter()
            work()
            synchronize(device)
            seconds = time.perf_counter() - start
        gpu = peak_memory(device)
        return seconds, mem.extra_mb if gpu is None else gpu - before / 2**20

    model.train()
    for _ in range(warmup_steps(model)):
        step()
    times, peaks = zip(*(timed(step) for _ in range(repeats)))
    def infer():
        predict_logits(model, volume, precision=infer_precision)

    infer()
    infer_times, infer_peaks = zip(*(timed(infer) for _ in range(repeats)))
    return {
        "model": name, "shape": "x".join(map(str, shape)), "options": options, "train_input": list(x.shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": statistics.median(times), "step_peak_extra_mb": max(p or 0 for p in peaks),
        "infer_seconds": statistics.median(infer_times), "infer_peak_extra_mb": max(p or 0 for p in infer_peaks),
        "threads": torch.get_num_threads(), "precision": precision, "device": describe_device(device),
    }


def _command(name, shape, options, repeats, channels, batch, patch, precision, device):
    return [sys.executable, "-m", "seg25d.pipeline.bench.step", "--model", name, "--shape", *map(str, shape),
            "--options", json.dumps(options or {}), "--repeats", str(repeats), "--channels", *map(str, channels),
            "--batch", str(batch), "--precision", precision, "--device", str(device),
            *(["--patch", *map(str, patch)] if patch else [])]


def measure_in_fresh_processes(name: str, shape, options: dict | None = None, repeats: int = 3,
                               timeout: float = 1800, channels: tuple[int, int] = (1, 1), batch: int = 16,
                               patch=None, precision: str = "fp32", device: str = "cpu") -> dict:
    """Time from one fresh process, memory from another started with ``MEASURE_ENV``."""
    args = (channels, batch, patch, precision, device)
    timed = subprocess.run(_command(name, shape, options, repeats, *args), capture_output=True, text=True,
                           check=True, timeout=timeout)
    sized = subprocess.run(_command(name, shape, options, 1, *args), capture_output=True, text=True, check=True,
                           timeout=timeout, env={**os.environ, **MEASURE_ENV})
    t, m = json.loads(timed.stdout.splitlines()[-1]), json.loads(sized.stdout.splitlines()[-1])
    return {**t, "step_peak_extra_mb": m["step_peak_extra_mb"], "infer_peak_extra_mb": m["infer_peak_extra_mb"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", type=int, nargs="+", required=True, help="D H W, or one size for a cube")
    parser.add_argument("--options", default="{}", help="model options as JSON")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels", type=int, nargs=2, default=[1, 1], metavar=("IN", "OUT"))
    parser.add_argument("--batch", type=int, default=16, help="slices per step for 2D models")
    parser.add_argument("--patch", type=int, nargs=3, help="3D patch for unet3d/monai_unet")
    parser.add_argument("--precision", default="fp32", help="of the training step, as train.precision")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N, as train.device")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as seg25d train does; not in the memory process (MEASURE_ENV sets the allocator)
    shape = args.shape * 3 if len(args.shape) == 1 else args.shape
    try:
        result = measure(args.model, shape, json.loads(args.options), args.repeats, channels=tuple(args.channels),
                         batch=args.batch, patch=args.patch, precision=args.precision, device=args.device)
    except torch.cuda.OutOfMemoryError:
        print(json.dumps({"status": "oom"}), flush=True)
        sys.exit(OOM_EXIT)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
