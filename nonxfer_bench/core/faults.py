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
)
_hits: Counter[str] = Counter()


def point(name: str) -> None:
    """Mark a named point; signal this process if ``NXB_FAULT`` asks for it at this hit."""
    request = os.environ.get(ENV)
    if not request:
        return
    target, _, rest = request.partition(":")
    if target != name:
        return
    count, _, signal_name = rest.partition(":")
    _hits[name] += 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{signal_name or 'KILL'}"))
