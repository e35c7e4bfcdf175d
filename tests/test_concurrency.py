"""Two runs against one MLflow SQLite store at the same time both finish, each with its own correct runs."""

from __future__ import annotations

import os

import mlflow
import pytest

from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.cli import main
from nonxfer_bench.tracking.tracker import retry_concurrent, sqlite_uri
from tests.helpers import digits_suite


def start(suite, uri: str) -> int:
    """``nonxfer-bench run suite`` in a forked child logging to ``uri``; returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ["MLFLOW_TRACKING_URI"] = uri
            code = main(["run", str(suite)])
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.slow
def test_two_simultaneous_runs_into_one_new_sqlite_store_keep_separate_correct_results(tmp_path, digits_zoo):
    uri = sqlite_uri(tmp_path / "shared.db")  # created by whichever run comes first
    folders = {strength: tmp_path / f"run{strength:g}" for strength in (0.0, 30.0)}
    suites = {}
    for strength, folder in folders.items():  # the same suite and experiment, another encoder strength and run folder
        folder.mkdir()
        suites[strength] = digits_suite(
            folder,
            digits_zoo,
            dataset={"name": "digits", "limit": 60},
            encoders=[{"name": "patch", "strengths": [strength]}],
            tracking={"enabled": True, "experiment": "shared"},
        )
    pids = [start(suite, uri) for suite in suites.values()]
    assert [exit_code(pid) for pid in pids] == [0, 0]

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["shared"], output_format="list")
    parents = {r.data.tags["nxb.run_dir"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents.values())
    for strength, folder in folders.items():
        parent = parents[str((folder / "runs" / "digits").resolve())]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(
            float(c.data.tags["nxb.strength"]) for c in children if c.data.tags["nxb.encoder"] == "patch"
        ) == [strength]
        cells = CellStore(folder / "runs" / "digits" / "cells.jsonl").cells.values()
        logged = {(c.data.tags["nxb.group"], name): value for c in children for name, value in c.data.metrics.items()}
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        for cell in cells:  # every cell of this run, and only this run, in its own nested runs
            assert logged[(cell.group, f"acc.{cell.attack}.{cell.model}")] == pytest.approx(cell.accuracy)


def failing(times: int, message: str):
    """A call that raises ``message`` the first ``times`` times, then returns how often it was called."""
    calls = []

    def call() -> int:
        calls.append(1)
        if len(calls) <= times:
            raise RuntimeError(message)
        return len(calls)

    return call


def test_store_contention_is_retried_and_any_other_error_is_raised_at_once():
    assert retry_concurrent(failing(2, "(sqlite3.OperationalError) database is locked"), delay=0.001) == 3
    with pytest.raises(RuntimeError, match="database is locked"):
        retry_concurrent(failing(5, "database is locked"), attempts=3, delay=0.001)  # gives up after its attempts
    with pytest.raises(RuntimeError, match="no such table"):
        retry_concurrent(failing(1, "no such table"), delay=0.001)  # a retry would have succeeded
