"""Training processes that take turns on the machine, so that models compared under one budget meet the same one.

On a shared machine the speed of a step drifts by tens of percent from minute to minute. Models trained one
after the other under the same wall-clock budget then meet different machines. :func:`run_in_turns` starts
every training process at once and lets one train at a time, for turns of ``turn_seconds`` of its own step
time, always the one furthest behind; each model sees every stretch of the run in small slices.

Protocol (pipes named by ``SEG25D_TURNS=read_fd,write_fd`` in the trainer's environment): the trainer writes
``wait <step seconds so far>`` and blocks until it reads ``go <seconds>``; then it trains until its step
seconds pass that mark and waits again. A trainer keeps the turn until it exits (its last validation,
checkpoints and logs). On the trainer's side this is :class:`TurnTaker`, a training callback that
``seg25d train`` installs when the variable is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, NamedTuple, TextIO

from seg25d.pipeline.callbacks import TrainerCallback

__all__ = ["ENV", "TURN_SECONDS", "TurnTaker", "Outcome", "run_in_turns"]

ENV = "SEG25D_TURNS"
TURN_SECONDS = 5.0  # bench compare's default turn, in seconds of a model's own training steps


class TurnTaker(TrainerCallback):
    """A trainer's side: :meth:`hold` before every step with the run's step seconds so far."""

    def __init__(self, receive: TextIO, send: TextIO):
        self._receive, self._send, self._until = receive, send, None

    @classmethod
    def from_environment(cls) -> TurnTaker | None:
        value = os.environ.get(ENV)
        if not value:
            return None
        read_fd, write_fd = (int(fd) for fd in value.split(","))
        return cls(os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w"))

    def before_step(self, trainer) -> None:
        self.hold(trainer.elapsed)

    def hold(self, elapsed: float) -> None:
        """Return at once while this turn lasts; else hand the turn back and wait for the next."""
        if self._until is not None and elapsed < self._until:
            return
        self._send.write(f"wait {elapsed!r}\n")
        self._send.flush()
        line = self._receive.readline()
        if not line:
            raise RuntimeError("the process handing out training turns has gone")
        self._until = elapsed + float(line.split()[1])


class Outcome(NamedTuple):
    status: int  # the command's exit status
    seconds: float  # wall seconds it held the turn (the whole process when run one after another)
    turns: int  # turns it was given (0 when run one after another)


@dataclasses.dataclass
class _Player:
    process: subprocess.Popen
    send: TextIO
    receive: TextIO
    elapsed: float = 0.0  # the trainer's step seconds, as it last reported them
    held: float = 0.0  # wall seconds it held the turn
    turns: int = 0
    done: bool = False

    def await_turn_end(self) -> None:
        line = self.receive.readline()
        if line:
            self.elapsed = float(line.split()[1])
            return
        self.process.wait()  # the pipe closed: the trainer exited
        self.done = True
        self.receive.close()
        with contextlib.suppress(BrokenPipeError):
            self.send.close()


def run_in_turns(commands: list[list[str]], logs: list[Path], turn_seconds: float, env: dict | None = None,
                 started: Callable[[subprocess.Popen], None] | None = None) -> list[Outcome]:
    """Run training ``commands`` (stderr to ``logs``, ``env`` added to the environment) in turns of
    ``turn_seconds``; ``turn_seconds <= 0`` runs them one after the other instead. ``started`` is called with
    each process as it starts (the memory benchmark watches them)."""
    env = {**os.environ, **(env or {})}
    started = started or (lambda process: None)
    if turn_seconds <= 0:
        results = []
        for command, log in zip(commands, logs):
            start = time.perf_counter()
            with Path(log).open("w") as err:
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
                try:
                    started(process)
                    status = process.wait()
                except BaseException:  # interrupted: leave no trainer behind
                    process.kill()
                    process.wait()
                    raise
            results.append(Outcome(status, time.perf_counter() - start, 0))
        return results
    players: list[_Player] = []
    try:
        for command, log in zip(commands, logs):
            players.append(_start(command, Path(log), env))
            started(players[-1].process)
        for player in players:  # every trainer has loaded its data and waits for a first turn
            player.await_turn_end()
        while active := [p for p in players if not p.done]:
            player = min(active, key=lambda p: p.elapsed)  # the one furthest behind; ties in the given order
            start = time.perf_counter()
            try:
                player.send.write(f"go {turn_seconds!r}\n")
                player.send.flush()
            except BrokenPipeError:  # it died waiting: the read below sees the closed pipe
                pass
            player.await_turn_end()
            player.held += time.perf_counter() - start
            player.turns += 1
    finally:
        for player in players:
            if player.process.poll() is None:
                player.process.kill()
                player.process.wait()
    return [Outcome(p.process.returncode, p.held, p.turns) for p in players]


def _start(command: list[str], log: Path, env: dict) -> _Player:
    child_reads, parent_writes = os.pipe()
    parent_reads, child_writes = os.pipe()
    env = {**env, ENV: f"{child_reads},{child_writes}"}
    try:
        with log.open("w") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                       pass_fds=(child_reads, child_writes))
    except BaseException:
        os.close(parent_writes)
        os.close(parent_reads)
        raise
    finally:
        os.close(child_reads)
        os.close(child_writes)
    return _Player(process, os.fdopen(parent_writes, "w"), os.fdopen(parent_reads, "r"))
