"""Deterministic fault injection: named points where a test can make this process die or be interrupted.

The runner, the cell store, the tracker, the caches and the CLI call :func:`point` at the moments where
a crash could lose or duplicate work. Nothing happens unless the environment variable ``NXB_FAULT``
names the point, as ``NAME`` (first hit), ``NAME:N`` (N-th hit) or ``NAME:N:SIGNAL`` with SIGNAL one of
``KILL`` (default), ``TERM`` or ``INT``; the process then sends that signal to itself. A kill at a chosen
point reproduces a crash exactly, which a timed external kill cannot.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from nonxfer_bench.core.errors import UserError, excerpt

ENV = "NXB_FAULT"
POINTS = (
    "dataset_loaded",  # the evaluation images decoded
    "group_batch",  # one batch of an encoding group encoded, attacked and classified
    "store_append",  # finished cells about to be appended to cells.jsonl
    "store_appended",  # ... and appended (fsynced)
    "mlflow_parent_started",  # the parent run created, its params not yet logged
    "mlflow_group_before",  # before a group's nested run is created
    "mlflow_group_started",  # inside the nested run, tags set, metrics not yet logged
    "mlflow_metrics_logged",  # inside the nested run, after a batch of metrics
    "mlflow_group_after",  # the nested run ended
    "cache_write",  # a cache file written to its temporary name, not yet renamed into place
    "leaderboard_before",  # every cell finished, the leaderboard not yet written
    "leaderboard_written",  # the leaderboard written, the MLflow parent not yet ended
    "diffusion_staged",  # a trained DDPM complete in its staging folder, not yet swapped into place
    "release_image_written",  # one NE file of `encode` written to the staging folder
)
SIGNALS = ("KILL", "TERM", "INT")
_hits: Counter[str] = Counter()


def request() -> tuple[str, int, str] | None:
    """``NXB_FAULT`` parsed as (point, hit, signal), None when unset; a malformed value is one line (the CLI
    checks it before any work, so a typo never silently disables a fault test)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    target, _, rest = text.partition(":")
    count, _, signal_name = rest.partition(":")
    signal_name = signal_name or "KILL"
    if target not in POINTS or not (count or "1").isdigit() or int(count or 1) < 1 or signal_name not in SIGNALS:
        raise UserError(
            f"environment variable {ENV}={excerpt(text)}: expected POINT[:HIT[:SIGNAL]] with HIT >= 1, "
            f"SIGNAL one of {', '.join(SIGNALS)} and POINT one of {', '.join(POINTS)}"
        )
    return target, int(count or 1), signal_name


def point(name: str) -> None:
    """Mark a named point; signal this process if ``NXB_FAULT`` asks for it at this hit."""
    wanted = request()
    if wanted is None or wanted[0] != name:
        return
    _hits[name] += 1
    if _hits[name] == wanted[1]:
        os.kill(os.getpid(), getattr(signal, f"SIG{wanted[2]}"))
