"""Where the cells of ``leaderboard`` and ``report`` come from: the suite's cell store, its committed results folder
(a fresh clone has no ``runs/``), or MLflow, with how much of the suite's plan they are."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from nonxfer_bench.analysis.tiers import tiered_plan
from nonxfer_bench.app.destination import coverage
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore, draws
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import EncodingGroup, stored_plan
from nonxfer_bench.loading import absolute, load_suite, suite_protocol
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite
from nonxfer_bench.tracking.readback import TrackedSuite, read_suite
from nonxfer_bench.tracking.tracker import tracking_uri


@dataclass
class FoundCells:
    """Cells for ``leaderboard`` and ``report``: the suite (None when read from MLflow without one), its name, the
    cells, the models, the MLflow invocation they were read from (or None), where they came from (with how much of
    the suite's plan they are) and that plan (None without a suite)."""

    suite: Suite | None
    name: str
    cells: list[Cell]
    models: list[str]
    tracked: TrackedSuite | None
    source: Source
    plan: list[EncodingGroup] | None = None

    @property
    def origin(self) -> str:
        return f"MLflow {self.tracked.uri}, run {self.tracked.parent_id}" if self.tracked else self.source.origin


@dataclass(frozen=True)
class MlflowQuery:
    """Where to read cells back from MLflow (``--experiment``, ``--tracking-uri``, ``--run-id``); ``asked``:
    --mlflow."""

    asked: bool = False
    experiment: str | None = None
    tracking_uri: str | None = None
    run_id: str | None = None

    @property
    def wanted(self) -> bool:
        return bool(self.asked or self.experiment or self.tracking_uri or self.run_id)


def plan_of(suite: Suite, settings: RunSettings, cells: Mapping[str, Cell]) -> list[EncodingGroup]:
    """The plan ``cells`` were computed for: with the draws they record; for a protocol suite, cut per release at the
    tier that settled it (:mod:`nonxfer_bench.analysis.tiers`), as its run was."""
    plan = stored_plan(suite, settings, draws(cells.values()))
    protocol, _ = suite_protocol(suite)
    return plan if protocol is None else tiered_plan(plan, cells, protocol.verdict)


def find_cells(
    command: str,
    suite_file: Path | None,
    output: Path | None = None,
    query: MlflowQuery = MlflowQuery(),
    weights: bool = True,
) -> FoundCells:
    """The cells of ``suite_file``: from its cell store, else its committed results folder (a fresh clone), or read back
    from MLflow. Cells computed elsewhere are planned with the draws (CPU or CUDA) they record, not this machine's.
    ``weights``: the suite's weight files must be there (they identify its models in the cell keys)."""
    if suite_file is None and not query.experiment:
        raise UserError(f"{command}: give a suite file, or --experiment NAME to read from MLflow")
    suite = load_suite(suite_file, require_weights=weights and not query.wanted, output=output) if suite_file else None
    settings = RunSettings.of(suite) if suite else None
    if query.wanted:
        uri = query.tracking_uri or (tracking_uri(suite) if suite else os.environ.get("MLFLOW_TRACKING_URI"))
        if not uri:
            raise UserError("--experiment without a suite file needs --tracking-uri URI (or MLFLOW_TRACKING_URI)")
        tracked = read_suite(uri, query.experiment or (suite.tracking.experiment or suite.name), query.run_id)
        source = Source.mlflow(suite_file, tracked.groups)
        plan = plan_of(suite, settings, {cell.key: cell for cell in tracked.cells}) if suite else None
        if plan is not None:
            found = coverage({cell.key for cell in tracked.cells}, plan)
            source = replace(source, partial=None if found.complete else found.note())
        return FoundCells(suite, tracked.suite_name, tracked.cells, tracked.models, tracked, source, plan)
    store = CellStore(suite.run_dir() / "cells.jsonl", writable=False)  # read-only: never truncates or locks
    committed = results_cells(suite.results_dir())
    for candidate, origin in (
        (store, Source.store),
        (CellStore(committed, writable=False) if committed.is_file() else None, Source.results),
    ):
        if candidate is None:
            continue
        plan = plan_of(suite, settings, candidate.cells)
        keys = [key for group in plan for key in group.cells.values()]
        if any(key in candidate for key in keys):  # the store, else a fresh clone's committed results
            found = coverage(candidate, plan)
            source = replace(origin(suite_file, candidate.path), partial=None if found.complete else found.note())
            cells = [candidate.cells[k] for k in keys if k in candidate]
            return FoundCells(suite, suite.name, cells, [m.name for m in suite.models], None, source, plan)
    raise UserError(
        f"{absolute(suite_file)}: no finished cells in {store.path}; run `nonxfer-bench run {suite_file}` first"
    )
