"""Where results came from: the command line and the machine recorded beside every result a report may show."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

__all__ = ["command_line", "machine", "provenance"]


def command_line() -> str:
    """This process's invocation as a shell line (``seg25d ...`` when run as the command)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("seg25d", "__main__.py"):
        argv[0] = "seg25d"
    return shlex.join(argv)


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
