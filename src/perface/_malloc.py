"""Stop glibc from handing activation buffers back to the kernel after every CPU forward pass.

glibc's malloc serves blocks above its mmap threshold (dynamic, at most 32 MiB) with fresh
``mmap`` pages and trims the heap top once more than twice that threshold is free. A CNN's
activations are exactly such blocks, so every forward pass then page-faults and zeroes tens of
megabytes anew: SFace at batch 32 spent over half its CPU time in the kernel doing so on our
2-core test CPU. :func:`tune_malloc` pins the mmap threshold at 32 MiB (SFace's
``cpu_chunk`` keeps its activations below it) and keeps up to ``TRIM_THRESHOLD`` of freed
heap for reuse. It runs once per process, when the first ``PerFace`` is created, only
on Linux with glibc, and never overrides the user's own malloc settings (``GLIBC_TUNABLES``,
``MALLOC_*_`` variables, a preloaded allocator). ``PERFACE_TUNE_MALLOC=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # freed heap kept for reuse instead of returned to the kernel
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3

_applied: Optional[bool] = None


def _user_configured() -> bool:
    env = os.environ
    if env.get("PERFACE_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return True
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", "") or any(k.startswith("MALLOC_") for k in env):
        return True
    return any(name in env.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))


def tune_malloc() -> bool:
    """Apply the malloc settings above once per process; True if they are in effect."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and not _user_configured():
            try:
                libc = ctypes.CDLL(None)
                libc.gnu_get_libc_version  # noqa: B018 (glibc only: AttributeError on musl)
                _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                )
            except (OSError, AttributeError):
                _applied = False
    return _applied
