"""Crashes lose nothing: a run killed (SIGKILL) at any named fault point, then rerun, ends exactly where an
uninterrupted run ends, in the cell store, the leaderboard and MLflow; Ctrl-C and SIGTERM stop cleanly.

Each killed run is a forked copy of this test process calling the CLI's ``main``, killed by
:mod:`nonxfer_bench.faults` at a chosen hit of a chosen point: deterministic, and without paying the
imports of a fresh interpreter for each of the 29 runs. Runs share one autoencoder cache, except the
ones that must write it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import mlflow
import pytest

from nonxfer_bench.cli import main
from nonxfer_bench.core import faults
from nonxfer_bench.tracking.tracker import sqlite_uri
from tests.helpers import digits_suite

# Two encoding groups (clean, patch@0) of two batches each (the clean images face only identity); the autoencoder attack
# writes a cache entry.
AUTOENCODER = {"dataset": {"name": "digits", "params": {"split": "train"}}, "epochs": 1, "width": 8, "bottleneck": 2}
KILLS = [
    ("mlflow_parent_started", 1),
    ("dataset_loaded", 1),
    ("cache_write", 1),
    ("group_batch", 1),  # mid first group
    ("group_batch", 3),  # mid second group
    ("store_append", 2),
    ("store_appended", 1),
    ("mlflow_group_before", 2),
    ("mlflow_group_started", 1),
    ("mlflow_metrics_logged", 2),
    ("mlflow_group_after", 1),
    ("leaderboard_before", 1),
    ("leaderboard_written", 1),
]


def write_suite(folder: Path, zoo: Path) -> Path:
    folder.mkdir()
    return digits_suite(
        folder, zoo, dataset={"name": "digits", "limit": 40}, batch_size=20,
        encoders=[{"name": "patch", "strengths": [0.0]}],
        attacks=[{"name": "identity"}, {"name": "autoencoder", "strengths": [0.0], "params": AUTOENCODER}],
        output={"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 2},
        tracking={"enabled": True, "uri": sqlite_uri(folder / "mlflow.db"), "experiment": "faults"},
    )  # fmt: skip


def run_forked(suite: Path, fault: str | None, cache: Path) -> int:
    """``nonxfer-bench run suite`` in a forked child; its exit status, or -N if signal N killed it."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            signal.signal(
                signal.SIGINT, signal.default_int_handler
            )  # as in a terminal: pytest-xdist's workers ignore SIGINT
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.environ["NXB_CACHE"] = str(cache)
            if fault:
                os.environ[faults.ENV] = fault
            code = main(["run", str(suite)])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def outcome(folder: Path) -> dict:
    """What a finished run leaves: the leaderboard table, the cell store and every MLflow run."""
    lines = (folder / "runs" / "digits" / "cells.jsonl").read_text().splitlines()
    mlflow.set_tracking_uri(sqlite_uri(folder / "mlflow.db"))
    runs = mlflow.search_runs(experiment_names=["faults"], output_format="list")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {
        "cells.csv": (folder / "results" / "digits" / "cells.csv").read_text(),
        "store keys": sorted(json.loads(line)["key"] for line in lines),
        "statuses": sorted(r.info.status for r in runs),
        "parents": len(runs) - len(children),
        "groups": sorted(r.data.tags["nxb.group"] for r in children),
        "metrics": sorted((r.data.tags["nxb.group"], sorted(r.data.metrics.items())) for r in children),
    }


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_zoo, shared_cache) -> dict:
    folder = tmp_path_factory.mktemp("faults") / "reference"
    assert run_forked(write_suite(folder, digits_zoo), None, shared_cache) == 0
    result = outcome(folder)
    assert result["statuses"] == ["FINISHED"] * 3 and len(result["groups"]) == 2
    return result


@pytest.mark.slow
@pytest.mark.parametrize("point, hit", KILLS, ids=[f"{p}:{h}" for p, h in KILLS])
def test_a_run_killed_at_a_fault_point_and_rerun_ends_as_an_uninterrupted_run(
    tmp_path, digits_zoo, reference, shared_cache, point, hit
):
    suite = write_suite(tmp_path / "run", digits_zoo)
    cache = tmp_path / "cache" if point == "cache_write" else shared_cache  # the autoencoder is trained here
    assert run_forked(suite, f"{point}:{hit}", cache) == -signal.SIGKILL, f"the run never reached {point}:{hit}"
    assert run_forked(suite, None, cache) == 0
    result = outcome(tmp_path / "run")
    assert result["store keys"] == sorted(set(result["store keys"])), "a cell was stored twice"
    assert "RUNNING" not in result["statuses"]
    assert result == reference  # same numbers, one FINISHED parent, each group logged once


# killed in tests/hostile: train diffusion (test_weights.py) and encode (test_releases.py), which are not suite runs
EXERCISED_ELSEWHERE = {"diffusion_staged", "release_image_written"}


def test_every_fault_point_is_exercised():
    assert {point for point, _ in KILLS} | EXERCISED_ELSEWHERE == set(faults.POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, code", [("TERM", 143), ("INT", 130)])
def test_sigterm_and_ctrl_c_stop_cleanly_keep_finished_cells_and_mark_the_run_killed(
    tmp_path, digits_zoo, shared_cache, capfd, signal_name, code
):
    suite = write_suite(tmp_path / "run", digits_zoo)
    assert run_forked(suite, f"group_batch:3:{signal_name}", shared_cache) == code  # mid second group
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "interrupted: finished cells are kept in" in stderr
    stored = (tmp_path / "run" / "runs" / "digits" / "cells.jsonl").read_text().splitlines()
    assert (
        len(stored) == 1 * 3
    )  # the first group, the clean images: identity x 3 models (they face only the no-attack step)
    mlflow.set_tracking_uri(sqlite_uri(tmp_path / "run" / "mlflow.db"))
    runs = mlflow.search_runs(experiment_names=["faults"], output_format="list")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parent] == ["KILLED"]
    assert [r.info.status for r in runs if r not in parent] == ["FINISHED"]
