"""Every committed results folder holds exactly the cells its suite plans: a change that re-keys cells by accident (a
new parameter with a default, a renamed field) would make a fresh clone recompute, and this names the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore, draws
from nonxfer_bench.execution.plan import stored_plan
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.settings import RunSettings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(folder.name for folder in (ROOT / "results").iterdir() if results_cells(folder).is_file() and (ROOT / "suites" / f"{folder.name}.yaml").is_file())


@pytest.mark.parametrize("name", COMMITTED)
def test_a_committed_folder_holds_every_cell_its_suite_plans(name: str) -> None:
    suite = load_suite(ROOT / "suites" / f"{name}.yaml", require_weights=False)
    store = CellStore(results_cells(ROOT / "results" / name), writable=False)
    planned = {key for group in stored_plan(suite, RunSettings.of(suite), draws(store.cells.values())) for key in group.cells.values()}
    missing = planned - set(store.cells)
    assert not missing, f"{name}: {len(missing)} of {len(planned)} planned cells are not among the committed ones (re-keyed?)"
