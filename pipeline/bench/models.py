"""``seg25d bench models``: parameter count and whole-volume forward time of every registered model."""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["bench_models", "BENCH_OPTIONS"]

# Each model's own defaults, projection25d's default preset with its scale chosen by volume size, and MONAI's
# UNet at the widths of the plain comparison (16-32-64-128).
BENCH_OPTIONS: dict[str, dict] = {"projection25d": {"preset": "default", "scale": "auto"},
                                  "monai_unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}}


def bench_models(shape=(64, 96, 96), repeats: int = 3, models=None, device: str = "cpu") -> list[dict]:
    """Per model: parameters and median seconds of a whole-volume forward (eval, no gradients, fp32) at ``shape``
    on ``device`` (as ``train.device``).

    2D models run slice by slice, ``slicestack25d`` on slice stacks, ``projection25d`` on all its views.
    """
    from seg25d.models import build, list_models
    from seg25d.pipeline.device import describe_device, resolve_device, synchronize
    from seg25d.pipeline.volume_inference import predict_logits

    device = resolve_device(device)
    rows = []
    x = torch.randn(1, 1, *shape, device=device)
    for name in models or list_models():
        options = dict(BENCH_OPTIONS.get(name, {}))
        if options.get("scale") == "auto":
            from seg25d.models.projection25d import resolve_scale

            options["scale"] = resolve_scale("auto", shape)
        try:
            model = build(name, 1, 1, **options).eval().to(device)
        except ValueError as err:  # e.g. monai missing
            rows.append({"model": name, "error": str(err)})
            continue
        predict_logits(model, x)
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            predict_logits(model, x)
            synchronize(device)
            times.append(time.perf_counter() - start)
        rows.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()),
                     "forward_seconds": statistics.median(times), "shape": "x".join(map(str, shape)),
                     "options": options, "device": describe_device(device)})
    return rows
