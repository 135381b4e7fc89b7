"""Where results came from: the command line and the machine recorded beside every result a report may show."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

__all__ = ["command_line", "machine", "provenance", "run_commands"]


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


def machine() -> str:
    """The processor (and GPU, when torch sees one) in a few words, e.g. ``<CPU model name>, 2 CPU cores``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    words = f"{cpu}, {os.cpu_count()} CPU cores"
    import torch

    if torch.cuda.is_available():
        words += f", {torch.cuda.get_device_name()}"
    return words


def provenance() -> dict:
    """What a results file records about its making: command, machine, torch version and date (UTC)."""
    import torch

    return {"command": command_line(), "machine": machine(), "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}
