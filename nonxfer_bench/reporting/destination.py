"""Whether cells may replace a suite's results folder, ``results/<suite>/`` (the committed results of the shipped suites).

That folder holds the suite *as its file says*, run to the end. It is (re)written only from every planned cell
of such a run, whose draws (CPU or CUDA: :func:`~nonxfer_bench.core.device.draw_kind`) are those of the cells
already in it: exactly the runs that plan the committed cells' keys, so an identical rerun writes the same
bytes. Anything else (``--limit``, ``--precision`` or ``--no-bounds`` changing what the file says, other
draws, a partial store) gets a folder of its own, and a leaderboard of a partial set says so in its first lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterable

from nonxfer_bench.core.cell import Cell
from nonxfer_bench.core.device import draw_kind
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.execution.store import CellStore
from nonxfer_bench.reporting.leaderboard import results_cells
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
            f"partial: {self.found:,} of {self.planned:,} planned cells "
            f"({self.groups_found:,} of {self.groups_planned:,} encoding groups complete)"
        )


def coverage(keys: Container[str], plan: list[EncodingGroup]) -> Coverage:
    """How many of ``plan``'s cells (and whole groups) are among ``keys``."""
    found = [[key in keys for key in group.cells.values()] for group in plan]
    return Coverage(sum(map(sum, found)), sum(map(len, found)), sum(map(all, found)), len(found))


def draws(cells: Iterable[Cell]) -> str | None:
    """The draws (``cpu`` or ``cuda``) ``cells`` were computed with, from the device type each records: ``cuda``
    if any was computed there (CPU-only attacks record ``cpu`` on a GPU run too), None if none records one."""
    devices = {cell.device for cell in cells} - {None}
    return "cuda" if "cuda" in devices else "cpu" if devices else None


def committed_draws(folder: Path) -> str | None:
    """The draws of the cells a results folder holds (None without cells)."""
    path = results_cells(folder)
    return draws(CellStore(path, writable=False).cells.values()) if path.is_file() else None


def run_differences(written: Suite, run: Suite, committed: str | None) -> list[str]:
    """Why a run of ``run`` (the suite after the command line's overrides, its device resolved) is not the suite
    file ``written`` as committed results with draws ``committed`` hold it; empty when it may replace them."""
    reasons = []
    if run.dataset.limit != written.dataset.limit:
        reasons.append(f"--limit {run.dataset.limit} (the suite: {written.dataset.limit or 'every image'})")
    if run.precision != written.precision:
        reasons.append(f"--precision {run.precision} (the suite: {written.precision})")
    if run.bounds != written.bounds:
        reasons.append("--no-bounds")
    kind = draw_kind(run.device)
    if written.device != "auto" and kind != draw_kind(written.device):
        reasons.append(f"{kind} draws (the suite's device: {written.device})")
    elif committed and kind != committed:
        reasons.append(f"{kind} draws (the committed cells: {committed} draws)")
    return reasons
