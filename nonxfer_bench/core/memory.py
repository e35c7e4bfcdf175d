"""Giving freed memory back to the system, so that a run's footprint follows its live data and not its history."""

from __future__ import annotations

import ctypes
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: its allocator has no such call
        return None


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps freed batch-sized blocks in its heap, which fragments: without this, RSS grows with the number of
    batches at 224 px (measured +50 % at 1,500 images). Called once per batch it costs milliseconds, where the
    previous cure, a fixed 1 MiB mmap threshold, mapped and zeroed every activation anew and made CPU forwards
    at 224 px 2.3-2.7x slower (efficientnet_b0, batch 32).
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
