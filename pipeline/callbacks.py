"""The training loop's hooks: what the benchmarks attach to a run (:func:`seg25d.pipeline.training.train`)."""

from __future__ import annotations

import os

__all__ = ["TrainerCallback", "from_environment"]


class TrainerCallback:
    """Hooks into the training loop; each does nothing unless overridden. ``trainer`` exposes ``step`` (steps
    done), ``elapsed`` (step seconds so far), ``model`` and ``config``."""

    def before_step(self, trainer) -> None:
        """Before a training step (and before its timing starts)."""

    def after_step(self, trainer, row: dict) -> None:
        """After a training step; ``row`` is its metrics.csv row, to which a callback may add columns."""

    def after_validation(self, trainer, scores: dict) -> None:
        """After a validation, with its scores (``val_dice_<class>``, ``val_dice_mean``)."""


def from_environment() -> list[TrainerCallback]:
    """The callbacks ``seg25d bench`` asks for through the environment of the training runs it starts: turns
    on the machine (:mod:`seg25d.pipeline.turns`) and each step's peak memory (:mod:`seg25d.pipeline.memory`)."""
    from seg25d.pipeline import memory, turns

    found: list[TrainerCallback] = []
    taker = turns.TurnTaker.from_environment()
    if taker is not None:
        found.append(taker)
    if os.environ.get(memory.ENV) == "1":
        found.append(memory.StepMemory())
    return found
