"""Which code this is: the package version and, in a git checkout, the last commit that changed the code.

Cells record it as run metadata (:data:`nonxfer_bench.cells.cell.RUN_METADATA`), leaderboards say which code
computed their cells and which wrote the tables.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import nonxfer_bench

UNKNOWN = "unknown"
CODE_PATHS = ("nonxfer_bench", "attacks")  # what computes cells; committing results/ does not change the version


def git(folder: Path, *args: str) -> str | None:
    """``git -C folder args`` output, stripped; None when git is missing, hangs, fails or ``folder`` is no checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # never another repository's
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.TimeoutExpired):  # no git on the PATH, a hung filesystem
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)  # two git calls; a process runs one version of the code
def code_version() -> str:
    """The package version and, in a git checkout, the last commit that changed its code (+ a note when that
    code has uncommitted changes); ``unknown`` for the commit of an installed package."""
    root = Path(nonxfer_bench.__file__).resolve().parents[1]
    commit = UNKNOWN
    if (root / ".git").exists() and (last := git(root, "log", "-1", "--format=%H", "--", *CODE_PATHS)):
        commit = last[:12] + (
            " with uncommitted changes" if git(root, "status", "--porcelain", "--", *CODE_PATHS) else ""
        )
    return f"nonxfer-bench {nonxfer_bench.__version__}, git {commit}"
