"""Every committed results folder holds every cell its suite plans (a protocol suite: up to the tier that broke each
release): a change that re-keys cells by accident (a new parameter with a default, a renamed field) would make a fresh
clone recompute, and this names the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonxfer_bench.app.sources import plan_of
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.settings import RunSettings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(
    folder.name
    for folder in (ROOT / "results").iterdir()
    if results_cells(folder).is_file() and (ROOT / "suites" / f"{folder.name}.yaml").is_file()
)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMITTED)
def test_a_committed_folder_holds_every_cell_its_suite_plans(name: str) -> None:
    suite = load_suite(ROOT / "suites" / f"{name}.yaml", require_weights=False)
    cells = CellStore(results_cells(ROOT / "results" / name), writable=False).cells
    planned = {key for group in plan_of(suite, RunSettings.of(suite), cells) for key in group.cells.values()}
    missing = planned - set(cells)
    assert not missing, (
        f"{name}: {len(missing)} of {len(planned)} planned cells are not among the committed ones (re-keyed?)"
    )
