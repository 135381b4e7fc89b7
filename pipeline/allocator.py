"""Keep freed memory in the process, so that volume-sized tensors reuse pages instead of faulting in new ones.

glibc's ``malloc`` maps each allocation above its mmap threshold separately and unmaps it on release, and gives
the top of its heap back to the system once more than its trim threshold is free there. A training step frees
and reallocates volume-sized tensors, so every step then faults in fresh pages, which the kernel zeroes one
page at a time. :func:`keep_freed_memory` raises the mmap threshold to glibc's largest (32 MiB) and stops
trimming, so freed memory stays in the process for the next step; the resident memory stays at its
high-water mark. Arithmetic and results do not change.

Where it helps: training on whole volumes (``projection25d`` steps about a tenth faster; slice-wise 2D
networks gain nothing, their tensors are small). So the training commands (``seg25d train``, ``demo``,
``kaggle train``) call it once at start, and nothing else does. It changes nothing where the C library is
not glibc, where ``SEG25D_KEEP_FREED_MEMORY=0`` (glibc's own behaviour), or where the environment configures
the allocator itself with a ``MALLOC_*`` variable or a ``glibc.malloc`` tunable (the memory benchmarks do,
see :mod:`seg25d.pipeline.memory`).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["keep_freed_memory", "is_glibc", "ENV_SWITCH", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
#: set to 0 to leave glibc's allocator as it is
ENV_SWITCH = "SEG25D_KEEP_FREED_MEMORY"
#: allocations above this are mapped separately (the largest value glibc accepts on 64-bit systems)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory at the top of the heap kept before giving any back (the largest ``int``: in effect, never)
TRIM_THRESHOLD = 2**31 - 1


def is_glibc() -> bool:
    """Whether this process runs on GNU libc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name on this system
        return False


def _left_alone(environ) -> bool:
    """Switched off, or the allocator configured through the environment."""
    return (environ.get(ENV_SWITCH, "1") == "0" or any(key.startswith("MALLOC_") for key in environ)
            or "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""))


def keep_freed_memory(environ=None) -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); returns whether it was changed."""
    environ = os.environ if environ is None else environ
    if _left_alone(environ) or not is_glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = [libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD), libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(done)  # mallopt returns 1 on success
