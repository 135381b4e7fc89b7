"""``seg25d bench ablation``: the steps from the paper's random 2.5D U-Net to seg25d's default, each trained.

Every entry trains ``projection25d`` under the same time budget on the same split and seed (the
``vessels`` training preset) and is tested like ``bench compare``; the table shows each step's effect.
"""

from __future__ import annotations

from seg25d.pipeline.bench.compare import run_entries
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.turns import TURN_SECONDS

__all__ = ["ABLATIONS", "bench_ablation"]

# the default before each of its last steps: batch norms in the U-Net, no line sums, whole-ray MIPs
_BN = {"preset": "default", "unet": {"norm": "batch"}}
_NO_SUMS = {**_BN, "sum_input": False}
_ONE_SLAB = {**_NO_SUMS, "slabs": 1, "train_directions": 6}

# label -> (projection25d options, extra config overrides)
ABLATIONS: dict[str, tuple[dict, tuple]] = {
    "paper: 1 axis, MIP, F (ramp) + backprojection, T": ({"preset": "paper"}, ()),
    "paper + three rotation axes": ({"preset": "paper", "axes": [0, 1, 2], "directions": 8, "train_directions": 6},
                                    ()),
    "+ MIP lifting, 2 channels, volume head": ({**_ONE_SLAB, "aux_loss": False}, ()),
    "+ 2D auxiliary loss": (_ONE_SLAB, ()),
    "+ 3 slab MIPs per view, 3 views per step": (_NO_SUMS, ()),
    "+ line sums as a second U-Net input": (_BN, ()),
    "+ instance norm in the U-Net = default": ({"preset": "default"}, ()),
    "default, path 1 only": ({"preset": "default"}, ("train.schedule=\"path1\"",)),
    "default, path 1 / path 2 alternating": ({"preset": "default"}, ("train.schedule=\"alternate\"",)),
    "default at half resolution (scale 2)": ({"preset": "default", "scale": 2}, ()),
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
