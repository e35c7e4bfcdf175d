"""``leaderboard`` and ``report``: a suite's tables, plots and HTML report rebuilt from cells found elsewhere
(:mod:`nonxfer_bench.app.sources`), never over committed results they cannot replace.

A report shows the sample grid of each release that the run saved (``runs/<suite>/samples/``, or the group runs'
artifacts in MLflow); ``report --samples`` recomputes them instead (:func:`recompute_samples`), e.g. in a fresh clone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nonxfer_bench.app.destination import committed_draws
from nonxfer_bench.app.sources import FoundCells, MlflowQuery, find_cells
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.release import Release
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import draws
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import EncodingGroup, plan_suite
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import check_results_folder, claim_results_folder, suite_protocol
from nonxfer_bench.rendering.figures import file_stem
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.rendering.report import SampleGrid, write_report
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite
from nonxfer_bench.storage.samples import sample_file, save_sample_grid
from nonxfer_bench.tracking.readback import log_to_parent


def leaderboard(suite_file: Path | None, output: Path | None, query: MlflowQuery, out: Path | None) -> int:
    """``leaderboard``: the cells found (:func:`~nonxfer_bench.app.sources.find_cells`) as tables
    (:func:`rebuild_leaderboard`), then where they went and where the cells came from."""
    found = find_cells("leaderboard", suite_file, output, query)
    paths = rebuild_leaderboard(found, suite_file, out, _project(output))
    print(
        f"{paths[0]} ({len(found.cells)} cells from "
        f"{found.origin}{'; ' + found.source.partial if found.source.partial else ''})"
    )
    return 0


def report(suite_file: Path | None, output: Path | None, query: MlflowQuery, out: Path | None, samples: bool) -> int:
    """``report``: the cells found (:func:`~nonxfer_bench.app.sources.find_cells`) as an HTML report
    (:func:`build_report`), then its index page and what it shows."""
    found = find_cells("report", suite_file, output, query)
    index, grids = build_report(found, out, _project(output), samples=samples)
    print(f"{index} ({len(found.cells)} cells, {grids} sample grids)")
    return 0


def _project(output: Path | None) -> Path:
    """Where runs/ and results/ are without a suite file (reading from MLflow): ``output`` (--output), else the current
    folder."""
    return Path(output).absolute() if output else Path.cwd()


def rebuild_leaderboard(found: FoundCells, suite_file: Path | None, out: Path | None, project: Path) -> list[Path]:
    """``leaderboard``: the tables of ``found`` in ``out``, else the suite's results folder (only from every planned
    cell
    on its draws), else ``project/results/<name>`` (never over results already there); logged back to MLflow when the
    cells came from there. Returns the written paths."""
    if out is None and found.suite is None:  # cells from MLflow with no plan to check them against
        out = project / "results" / found.name
        if results_cells(out).is_file():
            raise UserError(
                f"{out} holds results, and without a suite file the cells from {found.origin} cannot be checked "
                "against its plan: give the suite file or --out DIR"
            )
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


def build_report(found: FoundCells, out: Path | None, project: Path, samples: bool = False) -> tuple[Path, int]:
    """``report``: the HTML report of ``found`` in ``out`` (default: ``runs/<suite>/report``) with the sample grid of
    each
    release, the run's or (``samples``) recomputed; returns the index page and how many grids it shows."""
    if samples and found.suite is None:
        raise UserError(
            "report --samples recomputes the sample images from the suite's models and data: give the suite file"
        )
    out = out or (found.suite.run_dir() if found.suite else project / "runs" / found.name) / "report"
    with tempfile.TemporaryDirectory() as scratch:
        if samples:
            grids = recompute_samples(found.suite, found.plan or plan_suite(found.suite), Path(scratch))
        elif found.tracked:
            keys = dict(zip(found.tracked.groups["tags.mlflow.runName"], found.tracked.groups["tags.nxb.group"]))
            grids = [
                SampleGrid(name, keys.get(name, ""), path)
                for name, path in found.tracked.download_samples(Path(scratch)).items()
            ]
        else:
            grids = [
                SampleGrid(group.label, group.key, sample_file(found.suite.run_dir(), group.label))
                for group in found.plan or plan_suite(found.suite)
            ]
            grids = [grid for grid in grids if grid.path.is_file()]
        protocol, ensemble = suite_protocol(found.suite) if found.suite else (None, None)
        return write_report(found.name, found.cells, found.models, grids, out, found.source, protocol, ensemble)


def recompute_samples(suite: Suite, plan: list[EncodingGroup], folder: Path) -> list[SampleGrid]:
    """The sample grid of each release's first group in ``plan``, as ``run --limit N --no-bounds`` computes it (N: the
    suite's ``output.sample_images``): the group's own stages on N images, scored by the authorized model alone.

    Attacks fit on those N images (fewer released NEs than the run's informed attacks saw), and attacks that adapt a
    model rather than the images are left out: their row would repeat the release. Writes only under ``folder``
    (and the attack-output cache, under the limited run's own keys)."""
    count = suite.output.sample_images
    if not count:
        raise UserError(
            f"suite {suite.name!r} sets output.sample_images: 0, so it has no sample images to recompute: set it to 1 "
            "or more"
        )
    runner = Runner(suite, RunSettings.of(suite, limit=count, bounds=False))
    limited = {group.label: group for group in runner.groups}
    first: dict[Release, EncodingGroup] = {}
    for group in plan:
        first.setdefault(
            Release(group.authorized, group.encoder.name, group.strength, group.storage, group.precision), group
        )
    grids = []
    for group in first.values():
        small = limited[group.label]
        missing = {
            (step, model): key
            for (step, model), key in small.cells.items()
            if model == small.authorized and not runner.attack(step).adapts_model
        }
        _, rows = runner.compute(small, missing)
        path = save_sample_grid(rows, folder / f"{file_stem(group.label)}.png", count)
        grids.append(SampleGrid(group.label, group.key, path, images=count, rows=tuple(rows)))
    return grids
