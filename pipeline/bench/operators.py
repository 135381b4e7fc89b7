"""``seg25d bench operators``: the projectors against plain implementations, measured side by side.

Baselines implemented here plainly: (a) ``scipy.ndimage.rotate`` + max per angle; (b) torch
``affine_grid``/``grid_sample`` rotation + max per angle, with the slices as channels of a 2D rotation
(b2: the same as a trilinear 3D rotation); for the backprojection, smearing each view along its rays and
rotating it back with ``grid_sample`` (forward and backward through autograd).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

from seg25d.pipeline.memory import MEASURE_ENV, PeakMemory

__all__ = ["bench_operators"]


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rotation_2d(theta: float, n: int) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=torch.float32).expand(n, 2, 3)


def scipy_mip(volume: np.ndarray, angles) -> list[np.ndarray]:
    """(a): rotate the (H, W) planes with scipy (linear, grown to hold the rotated volume), max along H."""
    from scipy import ndimage

    return [ndimage.rotate(volume, math.degrees(t), axes=(1, 2), reshape=True, order=1).max(axis=1) for t in angles]


def grid_sample_mip(volume: torch.Tensor, angles) -> list[torch.Tensor]:
    """(b): rotate with ``affine_grid``/``grid_sample`` (slices as channels), max along H."""
    d, h, w = volume.shape[-3:]
    x = volume.reshape(1, d, h, w)
    out = []
    for t in angles:
        grid = F.affine_grid(_rotation_2d(t, 1), [1, d, h, w], align_corners=False)
        out.append(F.grid_sample(x, grid, align_corners=False).amax(dim=2))
    return out


def grid_sample_mip_3d(volume: torch.Tensor, angles) -> list[torch.Tensor]:
    """(b2): the same with a trilinear 3D rotation of the 5D volume."""
    out = []
    for t in angles:
        c, s = math.cos(t), math.sin(t)
        theta = torch.tensor([[[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
        grid = F.affine_grid(theta, list(volume.shape), align_corners=False)
        out.append(F.grid_sample(volume, grid, align_corners=False).amax(dim=3))
    return out


def grid_sample_backprojection(views: torch.Tensor, angles, shape) -> torch.Tensor:
    """Smear each view (1, 1, P, D, W) along its rays over H and rotate it back with ``grid_sample``."""
    d, h, w = shape
    out = views.new_zeros(1, d, h, w)
    for p, t in enumerate(angles):
        smear = views[0, 0, p][:, None, :].expand(d, h, w).reshape(1, d, h, w)
        grid = F.affine_grid(_rotation_2d(-t, 1), [1, d, h, w], align_corners=False)
        out = out + F.grid_sample(smear, grid, align_corners=False)
    return out


def bench_operators(size: int = 128, directions: int = 32, repeats: int = 3, seed: int = 0) -> dict:
    """Times (median seconds) and ratios at ``size^3`` with ``directions`` angles about D, one run."""
    from seg25d.projections import MaxIntensityProjection, RayTransform, axis_geometry

    torch.manual_seed(seed)
    angles = np.arange(directions) * math.pi / directions
    volume = torch.rand(1, 1, size, size, size)
    geometry = axis_geometry((size,) * 3, angles)
    mip, radon = MaxIntensityProjection(geometry), RayTransform(geometry)
    start = time.perf_counter()
    mip(volume), radon(volume)
    first_call = time.perf_counter() - start
    rows = {}
    rows["mip"] = _time(lambda: mip(volume), repeats)
    rows["radon"] = _time(lambda: radon(volume), repeats)
    y = torch.rand(1, 1, directions, *geometry.detector_shape)

    def ours_bp():
        yy = y.clone().requires_grad_(True)
        radon.adjoint(yy).square().sum().backward()

    rows["backprojection_fwd_bwd"] = _time(ours_bp, repeats)
    rows["scipy_rotate_mip"] = _time(lambda: scipy_mip(volume[0, 0].numpy(), angles), 1)
    rows["grid_sample_mip"] = _time(lambda: grid_sample_mip(volume, angles), repeats)
    rows["grid_sample_3d_mip"] = _time(lambda: grid_sample_mip_3d(volume, angles), 1)
    views = torch.rand(1, 1, directions, size, size)

    def baseline_bp():
        vv = views.clone().requires_grad_(True)
        grid_sample_backprojection(vv, angles, (size,) * 3).square().sum().backward()

    rows["grid_sample_backprojection_fwd_bwd"] = _time(baseline_bp, 1)
    volume_mb = volume.numel() * 4 / 2**20
    output_mb = directions * math.prod(geometry.detector_shape) * 4 / 2**20
    probe = subprocess.run([sys.executable, "-m", "seg25d.pipeline.bench.operators", str(size), str(directions)],
                           capture_output=True, text=True, check=True, env={**os.environ, **MEASURE_ENV})
    memory = json.loads(probe.stdout.splitlines()[-1])
    result = {
        "size": size, "directions": directions, "threads": torch.get_num_threads(), "seconds": rows,
        "first_call_seconds": first_call,
        "ratios": {
            "mip_vs_scipy_rotate": rows["scipy_rotate_mip"] / rows["mip"],
            "mip_vs_grid_sample": rows["grid_sample_mip"] / rows["mip"],
            "mip_vs_grid_sample_3d": rows["grid_sample_3d_mip"] / rows["mip"],
            "backprojection_vs_grid_sample": rows["grid_sample_backprojection_fwd_bwd"] / rows["backprojection_fwd_bwd"],
        },
        "memory_mb": {"volume": volume_mb, "output": output_mb,
                      **{f"{k}_peak_extra": v for k, v in memory.items()},
                      **{f"{k}_extra_beyond_output_in_volumes": (None if v is None else (v - output_mb) / volume_mb)
                         for k, v in memory.items()}},
    }
    return result


def _memory_probe(size: int, directions: int) -> dict:
    """Peak extra memory (MiB) of one MIP and one Radon projection after the tables are built; run in a
    fresh process with ``MEASURE_ENV`` (see :mod:`seg25d.pipeline.memory`)."""
    from seg25d.projections import MaxIntensityProjection, RayTransform, axis_geometry

    volume = torch.rand(1, 1, size, size, size)
    geometry = axis_geometry((size,) * 3, np.arange(directions) * math.pi / directions)
    memory = {}
    with torch.no_grad():
        for name, op in (("mip", MaxIntensityProjection(geometry)), ("radon", RayTransform(geometry))):
            op(volume)  # tables
            with PeakMemory() as peak:
                out = op(volume)
            del out
            memory[name] = peak.extra_mb
    return memory


def format_operators(result: dict) -> str:
    s, r, m = result["seconds"], result["ratios"], result["memory_mb"]
    lines = [f"operators at {result['size']}^3, {result['directions']} directions about D, "
             f"{result['threads']} threads (median seconds)",
             "| operation | seg25d | baseline | baseline seconds | speed-up |", "|---|---|---|---|---|",
             f"| MIP | {s['mip']:.3f} | (a) scipy.ndimage.rotate + max | {s['scipy_rotate_mip']:.3f} | "
             f"{r['mip_vs_scipy_rotate']:.1f}x |",
             f"| MIP | {s['mip']:.3f} | (b) grid_sample rotate + max (slices as channels) | {s['grid_sample_mip']:.3f} | "
             f"{r['mip_vs_grid_sample']:.1f}x |",
             f"| MIP | {s['mip']:.3f} | (b2) grid_sample 3D rotate + max | {s['grid_sample_3d_mip']:.3f} | "
             f"{r['mip_vs_grid_sample_3d']:.1f}x |",
             f"| backprojection fwd+bwd | {s['backprojection_fwd_bwd']:.3f} | grid_sample smear-and-rotate | "
             f"{s['grid_sample_backprojection_fwd_bwd']:.3f} | {r['backprojection_vs_grid_sample']:.1f}x |",
             f"| Radon projection | {s['radon']:.3f} | | | |",
             "",
             f"first call (tables built once, cached): {result['first_call_seconds']:.2f} s; volume {m['volume']:.1f} MiB, "
             f"projections {m['output']:.1f} MiB"]
    for name in ("mip", "radon"):
        extra = m.get(f"{name}_peak_extra")
        if extra is not None:
            lines.append(f"{name}: peak extra memory {extra:.1f} MiB = output + "
                         f"{m[f'{name}_extra_beyond_output_in_volumes']:.2f} x the volume")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_memory_probe(int(sys.argv[1]), int(sys.argv[2]))))
