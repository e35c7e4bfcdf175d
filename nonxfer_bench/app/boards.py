"""``leaderboard`` and ``report``: a suite's tables, plots and HTML report rebuilt from cells found elsewhere
(:mod:`nonxfer_bench.app.sources`), never over committed results they cannot replace."""

from __future__ import annotations

import tempfile
from pathlib import Path

from nonxfer_bench.app.destination import committed_draws
from nonxfer_bench.app.sources import FoundCells
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import draws
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import check_results_folder, claim_results_folder, suite_protocol
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.rendering.report import write_report
from nonxfer_bench.storage.samples import sample_file
from nonxfer_bench.tracking.readback import log_to_parent


def rebuild_leaderboard(found: FoundCells, suite_file: Path | None, out: Path | None, project: Path) -> list[Path]:
    """``leaderboard``: the tables of ``found`` in ``out``, else the suite's results folder (only from every planned cell
    on its draws), else ``project/results/<name>`` (never over results already there); logged back to MLflow when the
    cells came from there. Returns the written paths."""
    if out is None and found.suite is None:  # cells from MLflow with no plan to check them against
        out = project / "results" / found.name
        if results_cells(out).is_file():
            raise UserError(f"{out} holds results, and without a suite file the cells from {found.origin} cannot be checked against its plan: give the suite file or --out DIR")
    elif out is None:
        out = found.suite.results_dir()
        check_results_folder(found.suite, suite_file)
        _check_replaces(out, found.cells, found.source, found.origin, suite_file)
        claim_results_folder(found.suite, suite_file)
    protocol, ensemble = suite_protocol(found.suite) if found.suite else (None, None)
    paths = write_leaderboard(found.name, found.cells, found.models, out, found.source, protocol, ensemble)
    if found.tracked:
        log_to_parent(found.tracked, paths)
    return paths


def _check_replaces(folder: Path, cells: list[Cell], source: Source, origin: str, suite_file: Path) -> None:
    """A suite's results folder is rewritten only from every planned cell, on the draws of the cells it holds
    (:mod:`nonxfer_bench.app.destination`); else one line naming why and ``--out``."""
    if source.partial:
        raise UserError(
            f"{folder} is rewritten only from every planned cell, and {origin} holds {source.partial}: finish the run "
            f"(`nonxfer-bench run {suite_file}`) or write this leaderboard elsewhere with --out DIR"
        )
    kind, committed = draws(cells), committed_draws(folder)
    if kind and committed and kind != committed:
        raise UserError(
            f"{folder} holds cells of {committed} draws and {origin} cells of {kind} draws (other cells of the same "
            "experiment): write their leaderboard elsewhere with --out DIR"
        )


def build_report(found: FoundCells, out: Path | None, project: Path) -> tuple[Path, int]:
    """``report``: the HTML report of ``found`` in ``out`` (default: ``runs/<suite>/report``), with the sample grids of
    its groups; returns the index page and how many grids it shows."""
    out = out or (found.suite.run_dir() if found.suite else project / "runs" / found.name) / "report"
    with tempfile.TemporaryDirectory() as downloads:
        if found.tracked:
            samples = found.tracked.download_samples(Path(downloads))
        else:
            grids = {group.label: sample_file(found.suite.run_dir(), group.label) for group in plan_suite(found.suite)}
            samples = {label: path for label, path in grids.items() if path.is_file()}
        protocol, ensemble = suite_protocol(found.suite) if found.suite else (None, None)
        return write_report(found.name, found.cells, found.models, samples, out, found.source, protocol, ensemble), len(samples)
