"""What was run, for the first lines of a leaderboard and the HTML report.

Everything comes from the cells and where they were read from, never from the clock: the suite, the
images per cell, seeds, encodings, attack steps, models, precision and device, the code that computed the
cells and the code that wrote the tables, and the
UTC date the newest cell was written (the cell store's last change, or the newest MLflow group run's end).
A rerun that computes nothing therefore writes the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from nonxfer_bench.analysis.frame import STEP
from nonxfer_bench.core.errors import shown_path
from nonxfer_bench.core.version import UNKNOWN, code_version, git


@dataclass(frozen=True)
class Source:
    """Where the cells were read from: the suite file (as the user named it) and the UTC date of the newest cell."""

    suite_file: str | None = None
    written: str | None = None
    written_as: str = "newest cell written"  # what ``written`` dates
    origin: str = "the cell store"  # where the cells were read (a file), for messages
    partial: str | None = None  # how much of the suite's plan the cells are, when not all of it (reporting.destination)

    @classmethod
    def store(cls, suite_file: Path, store: Path) -> Source:
        """Cells from a cell store: it is only ever appended to, so its last change is the newest cell."""
        written = datetime.fromtimestamp(store.stat().st_mtime, UTC) if store.is_file() else None
        return cls(shown_path(suite_file), _date(written), origin=shown_path(store))

    @classmethod
    def results(cls, suite_file: Path, cells: Path) -> Source:
        """Cells from a results folder's ``cells.jsonl`` (a fresh clone): a checkout does not keep when they were
        written, so the date is the last commit of that file (none when it is not committed as it is)."""
        committed = None
        if not git(cells.parent, "status", "--porcelain", "--", cells.name):
            committed = git(cells.parent, "log", "-1", "--format=%ct", "--", cells.name)
        moment = datetime.fromtimestamp(int(committed), UTC) if committed and committed.isdigit() else None
        return cls(shown_path(suite_file), _date(moment), "cells committed", shown_path(cells))

    @classmethod
    def mlflow(cls, suite_file: Path | None, groups: pd.DataFrame) -> Source:
        """Cells read back from MLflow group runs (a ``search_runs`` frame): the newest run's end."""
        ends = pd.to_datetime(groups.get("end_time", pd.Series(dtype="datetime64[ns, UTC]")), utc=True).dropna()
        return cls(
            shown_path(suite_file) if suite_file else None, _date(ends.max().to_pydatetime() if len(ends) else None)
        )


def _date(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d")


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _values(series: pd.Series, separator: str = ", ", missing: str = "not recorded") -> str:
    """The distinct values of a column, and how many cells lack it (written before it was recorded)."""
    shown, lacking = separator.join(sorted(str(v) for v in series.dropna().unique())), int(series.isna().sum())
    if not shown:
        return missing
    return shown + (f" (not recorded for {_counted(lacking, 'older cell')})" if lacking else "")


def run_summary(suite_name: str, frame: pd.DataFrame, source: Source | None) -> str:
    """One paragraph: what was run, as far as the cells (and ``source``) say."""
    source = source or Source()
    n = pd.to_numeric(frame["n"], errors="coerce").dropna()
    images = (
        UNKNOWN if n.empty else (f"{int(n.min()):,}" if n.min() == n.max() else f"{int(n.min()):,} to {int(n.max()):,}")
    )
    seeds = sorted(int(s) for s in frame.seed.unique())
    encodings = frame[frame.encoder != "clean"].drop_duplicates(["authorized", "encoder", "strength"])
    steps = frame.drop_duplicates(STEP)
    models = frame.drop_duplicates("model")
    controls = int((models.role == "control").sum())
    suite = f"`{suite_name}`" + (f" (`{source.suite_file}`)" if source.suite_file else " (suite file not given)")
    parts = [
        f"**What was run**: suite {suite}",
        f"{images} images per cell",
        f"{_counted(len(seeds), 'seed')} ({', '.join(map(str, seeds))})",
        f"{_counted(len(encodings), 'encoding')} of {_counted(frame.authorized.nunique(), 'authorized model')} "
        "(besides `clean`)",
        f"{_counted(len(steps), 'attack step')} of {_counted(steps.attack.nunique(), 'attack')} (no attack included)",
        f"{_counted(len(models), 'model')}"
        + (f" ({controls} control{'s' if controls > 1 else ''})" if controls else ""),
        f"precision {_values(frame['precision'])}",
        f"device {_values(frame['device'])}",
        f"cells computed by {_values(frame['code'], ' and ', missing='unknown code (not recorded)')}",
        f"tables written by {code_version()}",
        f"{source.written_as} {source.written or UNKNOWN} (UTC)",
    ]
    return "; ".join(parts) + "."
