"""The NXB_* environment variables, parsed in one place and checked before any work starts.

A value that cannot be used (``NXB_CACHE_MAX_GB=lots``, ``nan``, a negative size, a malformed
``NXB_FAULT``, an ``NXB_CACHE`` that is a file) is one line naming the variable and what would be valid,
not a traceback halfway through a run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import UserError, excerpt

GIGABYTES = {"NXB_CACHE_MAX_GB": 20.0, "NXB_RELEASE_MAX_GB": 2.0}  # variable -> default
MAX_GIGABYTES = 1e6


def gigabytes(name: str) -> float:
    """A size in GB from environment variable ``name`` (unset or empty: its default)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return GIGABYTES[name]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_GIGABYTES):
        raise UserError(
            f"environment variable {name}={excerpt(text)}: expected a number of GB from 0 to {MAX_GIGABYTES:g}, "
            f"e.g. {GIGABYTES[name]:g}"
        )
    return value


def cache_root() -> Path:
    """``$NXB_CACHE``, default ``~/.cache/nonxfer-bench``."""
    return Path(os.environ.get("NXB_CACHE") or Path.home() / ".cache" / "nonxfer-bench")


def check_environment() -> None:
    """Every NXB_* variable this package reads, checked at once (the CLI calls this before a command)."""
    for name in GIGABYTES:
        gigabytes(name)
    faults.request()
    root = cache_root()
    if root.exists() and not root.is_dir():
        raise UserError(
            f"environment variable NXB_CACHE={excerpt(str(root))}: not a folder; point it at a folder (or unset it)"
        )
