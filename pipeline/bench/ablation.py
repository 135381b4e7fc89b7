"""``seg25d bench ablation``: the steps from the seed's random 2.5D U-Net to seg25d's default, each measured.

Every entry trains ``projection25d`` under the same time budget on the same split and seed (the
``vessels`` training preset) and is tested like ``bench compare``; the table shows each step's effect.
"""

from __future__ import annotations

from seg25d.pipeline.bench.compare import run_entries
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.turns import TURN_SECONDS

__all__ = ["ABLATIONS", "bench_ablation"]

_PAPER_3AXES = {"preset": "paper", "axes": [0, 1, 2], "directions": 8, "train_directions": 6}
# the U-Net's batch norms, as every entry before the last was measured
_BN = {"unet": {"norm": "batch"}}
# every view at inference and no line sums, as the entries before those two steps were measured
_ALL = {"infer_directions": 8, "sum_input": False, **_BN}
# the default before slab MIPs: backprojected and MIP-lifted channels, whole-ray MIPs, 6 views per step
_BOTH = {"lift": ["backproject", "mip"], "slabs": 1, "train_directions": 6, **_ALL}
_ONE_SLAB = {"slabs": 1, "train_directions": 6, **_ALL}
_DEFAULT_BN = {"preset": "default", **_BN}

# label -> (projection25d options, extra config overrides)
ABLATIONS: dict[str, tuple[dict, tuple]] = {
    "paper: 1 axis, MIP, F (ramp) + backprojection, T": ({"preset": "paper"}, ()),
    "paper + three rotation axes": (_PAPER_3AXES, ()),
    "+ MIP lifting, 2 channels per lift, volume head": ({"preset": "default", **_BOTH, "aux_loss": False}, ()),
    "+ 2D auxiliary loss": ({"preset": "default", **_BOTH}, ()),
    "both lifts, one rotation axis": ({"preset": "default", **_BOTH, "axes": [0], "directions": 24,
                                       "infer_directions": 24}, ()),
    "backprojection only": ({"preset": "default", **_BOTH, "lift": ["backproject"]}, ()),
    "MIP lifting only": ({"preset": "default", **_ONE_SLAB}, ()),
    "both lifts, Radon input": ({"preset": "default", **_BOTH, "mode": "radon"}, ()),
    "both lifts, ramp filtration init": ({"preset": "default", **_BOTH, "filter_init": "ramp"}, ()),
    "default, path 1 only": (_DEFAULT_BN, ("train.schedule=\"path1\"",)),
    "default, path 1 / path 2 alternating": (_DEFAULT_BN, ("train.schedule=\"alternate\"",)),
    "default at half resolution (scale 2)": ({**_DEFAULT_BN, "scale": 2}, ()),
    "both lifts, 3 slab MIPs per view, 3 views per step": ({"preset": "default", **_BOTH, "slabs": 3,
                                                            "train_directions": 3}, ()),
    "MIP lifting only, 3 slab MIPs per view, 3 views per step": ({"preset": "default", **_ALL}, ()),
    "+ 4 of 8 views per axis at inference and in path 2": ({**_DEFAULT_BN, "sum_input": False,
                                                             "infer_directions": 4}, ()),
    "+ line sums as a second U-Net input": ({**_DEFAULT_BN, "infer_directions": 4}, ()),
    "+ all 24 views at inference and in path 2 again": (_DEFAULT_BN, ()),
    "+ instance norm in the U-Net = default": ({"preset": "default"}, ()),
}


def bench_ablation(manifest, budget_minutes: float, out_dir, seed: int = 0, entries=None,
                   turn_seconds: float = TURN_SECONDS):
    """Run the ablation ladder, or its ``entries`` (numbers from 1 in :data:`ABLATIONS` order); writes
    ablation.csv/json/md."""
    numbers = list(entries or range(1, len(ABLATIONS) + 1))
    bad = [n for n in numbers if not 1 <= n <= len(ABLATIONS)]
    if bad:
        raise InputError("--entries", f"no ablation entries {bad}; there are 1 to {len(ABLATIONS)}")
    ladder = list(ABLATIONS.items())
    entries = [(label, "projection25d", options, extra) for label, (options, extra) in
               (ladder[n - 1] for n in sorted(set(numbers)))]
    return run_entries(entries, manifest, budget_minutes, out_dir, seed, "vessels", (), name="ablation",
                       turn_seconds=turn_seconds)
