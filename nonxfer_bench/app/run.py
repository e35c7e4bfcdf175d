"""``nonxfer-bench run``: a suite's work graph computed, logged and turned into its leaderboard.

Everything that can refuse is decided before any work: the suite and its files, the device, where the leaderboard
goes (:mod:`nonxfer_bench.app.destination`). A kill, Ctrl-C, a component's error or a full disk keeps every cell
finished before it, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from nonxfer_bench.analysis.tiers import tiered_plan
from nonxfer_bench.app.bundles import write_bundle
from nonxfer_bench.app.destination import committed_draws, run_differences
from nonxfer_bench.app.notices import notices
from nonxfer_bench.bundles.manifest import BUNDLE
from nonxfer_bench.cells.store import exclusive
from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import UserError, io_error, one_line
from nonxfer_bench.execution.executors import WorkerDied, create_executor, ray_device
from nonxfer_bench.execution.group import ComponentError
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import absolute, check_results_folder, claim_results_folder, load_suite, suite_protocol
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.tracking.tracker import Tracker, experiment_url


@dataclass(frozen=True)
class RunOptions:
    """How ``run`` computes and where it writes, besides the settings of the run itself."""

    output: Path | None = None  # --output DIR: runs/ and results/ under it
    fresh: bool = False  # recompute finished cells
    force: bool = False  # write results/<suite>/ even from a run that differs from the suite as its file says
    tracking: bool = True  # log to MLflow (when the suite's tracking is enabled)
    executor: str = "local"
    workers: int = 2
    address: str | None = None


def run_suite(suite_file: Path, overrides: dict, options: RunOptions) -> int:
    """Run ``suite_file`` with ``overrides`` of its settings (:meth:`RunSettings.of`); returns the exit code."""
    suite = load_suite(suite_file, output=options.output)
    check_results_folder(suite, suite_file)  # before any work: never into another suite's results
    settings = RunSettings.of(suite, **overrides)
    if options.executor != "ray":  # before any work: cuda asked for where there is none is one line, exit 2
        settings = settings.resolved()
    else:  # a Ray driver may have no GPU: its workers resolve their own, and the plan keys their draws
        settings = settings.on(ray_device(settings.device, suite.resources.gpus))
    # before any work: results/<suite>/ only for the suite as written on the committed cells' draws, else a folder of
    # the run's own
    differences = [] if options.force else run_differences(settings, suite, committed_draws(suite.results_dir()))
    board = suite.run_dir() / "leaderboard" if differences else suite.results_dir()
    elsewhere = (
        f" (not {suite.results_dir()}: this run differs from its committed results: {'; '.join(differences)}; --force "
        "replaces them)"
        if differences
        else ""
    )
    if differences:
        print(f"{suite.name}: the leaderboard goes to {board}{elsewhere}", flush=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    tracker = Tracker(suite, suite_file, settings) if suite.tracking.enabled and options.tracking else None
    kept = f"finished cells are kept in {suite.run_dir() / 'cells.jsonl'}; run the same command again to resume"
    try:
        with (
            exclusive(suite.run_dir()),
            notices(f"%(asctime)s {suite.name}: %(message)s", suite.run_dir() / "run.log"),
            tracker or contextlib.nullcontext(),
        ):
            executor = create_executor(options.executor, workers=options.workers, address=options.address)
            runner = Runner(suite, settings, fresh=options.fresh, executor=executor)
            protocol, ensemble = suite_protocol(suite)
            if protocol is not None:  # tier by tier, each release up to the tier that settles it
                plan = runner.groups
                runner.groups = tiered_plan(plan, runner.store.cells, protocol.verdict)
                while any(runner.missing(group) for group in runner.groups):
                    runner.run()
                    runner.groups = tiered_plan(plan, runner.store.cells, protocol.verdict)
            runner.on_group = tracker.log_group if tracker else None
            result = runner.run()  # what is left to compute; then each group's cells go to the tracker
            faults.point("leaderboard_before")
            if not differences:
                claim_results_folder(
                    suite, suite_file
                )  # after the work: a results folder that cannot be written loses no cell
            source = Source.store(suite_file, suite.run_dir() / "cells.jsonl")
            paths = write_leaderboard(
                suite.name, result.cells, [m.name for m in suite.models], board, source, protocol, ensemble
            )  # every planned cell
            faults.point("leaderboard_written")
            if not differences and (board / BUNDLE).is_file():
                _refresh_bundle(suite_file, options.output, board)
            if tracker:
                tracker.log_results(paths)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {kept}", file=sys.stderr)
        raise
    except (
        ComponentError
    ) as error:  # an encoder or attack of the suite raised: name its entry, keep the finished groups
        raise UserError(f"{absolute(suite_file)}: {error}; {kept} once the entry is fixed") from None
    except WorkerDied as error:  # the parent run is marked FAILED; a rerun resumes it
        print(f"nonxfer-bench: {error}; {kept}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a read-only folder: the store holds every cell finished before it
        raise UserError(f"{io_error(error)}; {kept}") from None
    print(
        f"{suite.name}: {result.computed_groups} encodings computed, {result.skipped_groups} reused; "
        f"{len(result.cells)} cells. Leaderboard: {paths[0]}{elsewhere}"
        + (
            f"; MLflow: {tracker.uri} (experiment {suite.tracking.experiment or suite.name}{_mlflow_link(tracker)})"
            if tracker
            else ""
        )
    )
    return 0


def _refresh_bundle(suite_file: Path, output: Path | None, folder: Path) -> None:
    """The run rewrote a bundle's tables: its BUNDLE.json is rewritten to record them (and the code that computed
    them), so that the folder stays a bundle the checker passes; where that is refused (cells of uncommitted code),
    one line says that the folder's BUNDLE.json no longer matches and why."""
    try:
        write_bundle(suite_file, output)
    except UserError as error:
        print(
            one_line(f"{folder / BUNDLE}: not refreshed, so it no longer matches this run's files: {error}", 600),
            flush=True,
        )
    else:
        print(f"{folder / BUNDLE}: refreshed for this run's files", flush=True)


def _mlflow_link(tracker: Tracker) -> str:
    """Where to open the run's experiment: a server's own link, or how to start the UI on a local store."""
    if tracker.uri.startswith(("http://", "https://")):
        return f", {experiment_url(tracker.uri, tracker.experiment_id)}"
    return f"; open it with `nonxfer-bench ui {tracker.suite_path}`"
