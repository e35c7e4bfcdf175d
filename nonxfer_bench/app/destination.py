"""Whether cells may replace a suite's results folder, ``results/<suite>/`` (the committed results of the shipped
suites).

That folder holds the suite *as its file says*, run to the end. It is (re)written only from every planned cell
of such a run, whose draws (CPU or CUDA: :func:`~nonxfer_bench.core.device.draw_kind`) are those of the cells
already in it: exactly the runs that plan the committed cells' keys, so an identical rerun writes the same
bytes. Anything else (``--limit``, ``--precision`` or ``--no-bounds`` changing what the file says, other
draws, a partial store) gets a folder of its own, and a leaderboard of a partial set says so in its first lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Container

from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore, draws
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite


@dataclass(frozen=True)
class Coverage:
    """How much of a planned suite a set of cells holds: cells, and encoding groups with every cell."""

    found: int
    planned: int
    groups_found: int
    groups_planned: int

    @property
    def complete(self) -> bool:
        return self.found == self.planned

    def note(self) -> str:
        return (
            f"partial: {self.found:,} of {self.planned:,} planned cells ({self.groups_found:,} of "
            f"{self.groups_planned:,} encoding groups complete)"
        )


def coverage(keys: Container[str], plan: list[EncodingGroup]) -> Coverage:
    """How many of ``plan``'s cells (and whole groups) are among ``keys``."""
    found = [[key in keys for key in group.cells.values()] for group in plan]
    return Coverage(sum(map(sum, found)), sum(map(len, found)), sum(map(all, found)), len(found))


def committed_draws(folder: Path) -> str | None:
    """The draws of the cells a results folder holds (None without cells)."""
    path = results_cells(folder)
    return draws(CellStore(path, writable=False).cells.values()) if path.is_file() else None


def run_differences(settings: RunSettings, suite: Suite, committed: str | None) -> list[str]:
    """Why a run of ``suite`` with ``settings`` (its device resolved) is not the suite as its file says on the draws
    ``committed`` of the cells its results folder holds; empty when it may replace them."""
    reasons = settings.differences(suite)
    if committed and settings.draws != committed and not any("draws" in reason for reason in reasons):
        reasons.append(f"{settings.draws} draws (the committed cells: {committed} draws)")
    return reasons
