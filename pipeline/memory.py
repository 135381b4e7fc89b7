"""Peak resident memory of a block of code, from Linux's high-water mark (``VmHWM``).

``with PeakMemory() as m: ...`` resets the process's high-water mark, remembers the resident set size
at entry, and after the block ``m.extra_mb`` is the peak resident memory above that baseline: the extra
memory the block needed, including memory it freed again. Elsewhere (no ``/proc``) ``extra_mb`` is None.
:class:`StepMemory` measures every training step this way (a training callback the benchmarks install).

Caveat: glibc keeps freed memory for reuse (its mmap threshold grows after large frees), so a block that
reuses memory freed by an earlier one shows little growth. Benchmarks that report peak memory therefore
run in a fresh process with ``MALLOC_MMAP_THRESHOLD_`` fixed (:data:`MEASURE_ENV`): every large tensor is
then mapped on allocation and returned on release, and the resident set follows the live tensors. That
costs time (page faults), so time is measured in a separate process without it.
"""

from __future__ import annotations

from pathlib import Path

from seg25d.pipeline.callbacks import TrainerCallback

__all__ = ["PeakMemory", "StepMemory", "resident_mb", "MEASURE_ENV", "ENV"]

#: environment for a process whose resident memory should track its live tensors (see the module docstring)
MEASURE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
#: ``seg25d train`` installs :class:`StepMemory` when this environment variable is "1"
ENV = "SEG25D_STEP_MEMORY"

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def resident_mb() -> float | None:
    """Current resident set size in MiB (None where unknown)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


class PeakMemory:
    """Context manager measuring the peak extra resident memory (MiB) of its block."""

    def __init__(self):
        self.extra_mb: float | None = None
        self._baseline: int | None = None

    def __enter__(self) -> "PeakMemory":
        try:
            _CLEAR.write_text("5")  # reset VmHWM to the current RSS
            self._baseline = _status_kb("VmRSS")
        except OSError:
            self._baseline = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kb("VmHWM")
        if self._baseline is not None and peak is not None:
            self.extra_mb = max(0, peak - self._baseline) / 1024


class StepMemory(TrainerCallback):
    """Training callback: adds ``peak_extra_mb``, the step's peak extra resident memory, to each metrics row."""

    def __init__(self):
        self._memory: PeakMemory | None = None

    def before_step(self, trainer) -> None:
        self._memory = PeakMemory().__enter__()

    def after_step(self, trainer, row: dict) -> None:
        self._memory.__exit__(None, None, None)
        extra = self._memory.extra_mb
        row["peak_extra_mb"] = None if extra is None else round(extra, 1)
