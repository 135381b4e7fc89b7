"""Training processes taking turns (`bench compare`): who trains when, failures, and the trainer's side."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from seg25d.pipeline.synth.vessels import write_vessel_dataset
from seg25d.pipeline.turns import run_in_turns

# A stand-in trainer: steps of a fixed cost (reported, not slept), each logged as "<name> <step>" to a shared file.
FAKE = """
import sys
from seg25d.pipeline.turns import TurnTaker
name, steps, cost, log, fail_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
turns, elapsed = TurnTaker.from_environment(), 0.0
for step in range(steps):
    if step == fail_at:
        raise SystemExit(3)
    if turns:
        turns.hold(elapsed)
    with open(log, "a") as f:
        f.write(f"{name} {step}\\n")
    elapsed += cost
"""


def _fake(name: str, steps: int, cost: float, log: Path, fail_at: int = -1) -> list[str]:
    return [sys.executable, "-c", FAKE, name, str(steps), str(cost), str(log), str(fail_at)]


def _order(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()]


def test_the_trainer_furthest_behind_gets_the_next_turn(tmp_path):
    log = tmp_path / "steps.log"
    # turns of 0.5 s: a holds 4 steps of 0.125 s, b 2 of 0.25 s; binary fractions keep the sums exact
    outcomes = run_in_turns([_fake("a", 8, 0.125, log), _fake("b", 4, 0.25, log)],
                            [tmp_path / "a.err", tmp_path / "b.err"], turn_seconds=0.5)
    assert _order(log) == ["a"] * 4 + ["b"] * 2 + ["a"] * 4 + ["b"] * 2
    assert [(o.status, o.turns) for o in outcomes] == [(0, 2), (0, 2)]
    assert all(o.seconds > 0 for o in outcomes)


def test_a_trainer_that_fails_does_not_stop_the_others(tmp_path):
    log = tmp_path / "steps.log"
    commands = [_fake("a", 6, 0.25, log, fail_at=0),  # dies before its first turn
                _fake("b", 6, 0.25, log, fail_at=3),  # dies in its second turn
                _fake("c", 6, 0.25, log)]
    outcomes = run_in_turns(commands, [tmp_path / f"{n}.err" for n in "abc"], turn_seconds=0.5)
    assert [o.status for o in outcomes] == [3, 3, 0]
    assert _order(log) == ["b", "b", "c", "c", "b", "c", "c", "c", "c"]


def test_turn_seconds_zero_runs_one_after_another(tmp_path):
    log = tmp_path / "steps.log"
    outcomes = run_in_turns([_fake("a", 3, 0.25, log), _fake("b", 2, 0.25, log)],
                            [tmp_path / "a.err", tmp_path / "b.err"], turn_seconds=0)
    assert _order(log) == ["a", "a", "a", "b", "b"]
    assert [(o.status, o.turns) for o in outcomes] == [(0, 0), (0, 0)]


@pytest.mark.slow
def test_seg25d_train_waits_for_its_turn_before_every_step(tmp_path):
    """Turns shorter than any step: each of the three steps of each run needs a turn of its own."""
    manifest = write_vessel_dataset(tmp_path / "data", n=4, shape=(8, 12, 12), seed=0, progress=False)
    commands, logs = [], []
    for model in ("unet2d", "unet3d"):
        commands.append([sys.executable, "-m", "seg25d", "train", "--out", str(tmp_path / model),
                         "--set", f"data.manifest=\"{manifest}\"", "--set", f"model.name=\"{model}\"",
                         "--set", "model.options={depth=2, base_channels=4}", "--set", "train.max_steps=3",
                         "--set", "train.progress=false"])
        logs.append(tmp_path / f"{model}.err")
    outcomes = run_in_turns(commands, logs, turn_seconds=1e-9)
    assert [(o.status, o.turns) for o in outcomes] == [(0, 3), (0, 3)], [log.read_text()[-500:] for log in logs]
    for model in ("unet2d", "unet3d"):
        metrics = pd.read_csv(tmp_path / model / "metrics.csv")
        assert len(metrics) == 3 and "step_seconds" in metrics
        assert "peak_extra_mb" not in metrics  # the memory callback only where bench asks for it


@pytest.mark.slow
def test_bench_compare_reports_a_failed_model_after_testing_the_others(tmp_path):
    from seg25d.pipeline.bench.compare import run_entries
    from seg25d.pipeline.errors import InputError

    manifest = write_vessel_dataset(tmp_path / "data", n=6, shape=(8, 12, 12), seed=0, progress=False)
    entries = [("tiny", "unet2d", {"depth": 2, "base_channels": 4}, ()),
               ("broken", "unet2d", {"depth": 2, "no_such_option": 1}, ())]
    with pytest.raises(InputError, match=r"training failed for broken \(exit 2; see .*broken/train\.log\)"):
        run_entries(entries, manifest, 0.02, tmp_path / "out", 0, "vessels", ("train.val_every=1000",),
                    name="compare", turn_seconds=0.5)
    rows = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert rows.model.tolist() == ["tiny"] and rows.turns[0] >= 1 and rows.steps[0] >= 1
    assert "no_such_option" in (tmp_path / "out" / "broken" / "train.log").read_text()
    metrics = pd.read_csv(tmp_path / "out" / "tiny" / "run" / "metrics.csv")
    assert (metrics.peak_extra_mb >= 0).all()  # bench's trainings measure each step's memory
