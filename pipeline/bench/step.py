"""One model's training step and whole-volume inference at a cube size: time and peak extra memory.

Run in a fresh process per (model, size) by ``seg25d bench scaling`` so that memory measurements do not
mix; ``python -m seg25d.pipeline.bench.step --model projection25d --size 128`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seg25d.pipeline.memory import PeakMemory

__all__ = ["measure"]


def _model(name: str, options: dict):
    from seg25d.models import build

    return build(name, 1, 1, **options)


def measure(name: str, size: int, options: dict | None = None, repeats: int = 3, seed: int = 0) -> dict:
    """Median seconds and peak extra MiB of a training step (forward, BCE+Dice loss, backward, AdamW step)
    and of a whole-volume inference, on a random ``size^3`` volume with a sparse random mask."""
    from seg25d.pipeline.losses import segmentation_loss

    torch.manual_seed(seed)
    model = _model(name, options or {})
    x = torch.randn(1, 1, size, size, size)
    y = (torch.rand(1, 1, size, size, size) > 0.97).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = segmentation_loss(model(x), y, True, "bce_dice")
        loss.backward()
        optimizer.step()

    model.train()
    step()  # warm-up: tables, allocator, optimiser state
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory() as mem:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        peaks.append(mem.extra_mb)
    model.eval()
    infer_times, infer_peaks = [], []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            with PeakMemory() as mem:
                start = time.perf_counter()
                model(x)
                infer_times.append(time.perf_counter() - start)
            infer_peaks.append(mem.extra_mb)
    return {
        "model": name, "size": size, "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": statistics.median(times), "step_peak_extra_mb": max(p or 0 for p in peaks),
        "infer_seconds": statistics.median(infer_times), "infer_peak_extra_mb": max(p or 0 for p in infer_peaks),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--options", default="{}", help="model options as JSON")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.size, json.loads(args.options), args.repeats)))


if __name__ == "__main__":
    main()
