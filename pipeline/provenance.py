"""Where results came from: the command line recorded beside every result a report may show."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

__all__ = ["command_line"]


def command_line() -> str:
    """This process's invocation as a shell line (``seg25d ...`` when run as the command)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("seg25d", "__main__.py"):
        argv[0] = "seg25d"
    return shlex.join(argv)
