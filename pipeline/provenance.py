"""Where results came from: the command line recorded beside every result a report may show."""

from __future__ import annotations

import json
import shlex
import sys
import os
from pathlib import Path

__all__ = ["command_line", "run_commands"]


def command_line() -> str:
    """This process's invocation as a shell line (``seg25d ...`` when run as the command)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("seg25d", "__main__.py"):
        argv[0] = "seg25d"
    return shlex.join(argv)


def run_commands(run_json: str | os.PathLike, resumed: bool) -> list[str]:
    """The command lines of a run: those ``run_json`` recorded before (when ``resumed``), then this process's."""
    previous: list[str] = []
    if resumed and Path(run_json).is_file():
        try:
            recorded = json.loads(Path(run_json).read_text())
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):  # "command": one line, as run.json held before resumes were kept
            previous = list(recorded.get("commands") or ([recorded["command"]] if recorded.get("command") else []))
    return [*previous, command_line()]
