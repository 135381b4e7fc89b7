"""Errors for bad input: each names the file (or id) and the problem in one line."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input. ``str(err)`` is one line: ``<where>: <problem>``.

    The CLI prints it without a traceback and exits with status 2; batch commands record it
    per case and go on with the others.
    """

    def __init__(self, where: str | os.PathLike | None, problem):
        self.where = None if where is None else str(where)
        self.problem = problem = " ".join(str(problem).split()) or "error"
        super().__init__(problem if where is None else f"{where}: {problem}")


def error_line(err: BaseException, last: bool = True) -> str:
    """One line of a library's (often multi-line) error message: the last (SimpleITK, PIL put the reason
    there) or the first (torch's unpickling errors); ``"?"`` when empty."""
    lines = str(err).strip().splitlines() or ["?"]
    return lines[-1] if last else lines[0]
