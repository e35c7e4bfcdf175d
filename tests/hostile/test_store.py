"""Defects 5 and 6: the cell store accepts only whole cells, read-only commands never write it, and a kill
between storing a group's cells and drawing its sample grid loses no grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nonxfer_bench.cli import main
from tests.helpers import digits_suite
from tests.hostile.conftest import error_line, run_cli, tree_digest

SMALL = {
    "dataset": {"name": "digits", "limit": 40},
    "encoders": [{"name": "patch", "strengths": [0.0, 10.0]}],
    "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> Path:
    """The run folder of a small finished digits suite (three encoding groups with `clean`), computed once."""
    root = tmp_path_factory.mktemp("finished")
    suite = digits_suite(root, digits_zoo, **SMALL)
    assert main(["run", str(suite), "--no-tracking"]) == 0
    return root / "runs"


@pytest.fixture
def suite(finished: Path, tmp_path: Path, digits_zoo: Path) -> Path:
    """A suite whose run folder is a private copy of the finished one."""
    shutil.copytree(finished, tmp_path / "runs")
    return digits_suite(tmp_path, digits_zoo, **SMALL)


def store_of(suite: Path) -> Path:
    return suite.parent / "runs" / "digits" / "cells.jsonl"


def first_cell(suite: Path) -> dict:
    return json.loads(store_of(suite).read_text().splitlines()[0])


BAD_LINES = {
    "key only": lambda cell: json.dumps({"key": cell["key"]}),
    "key and garbage": lambda cell: json.dumps({"key": cell["key"], "accuracy": "high"}),
    "metric of the wrong type": lambda cell: json.dumps({**cell, "n": "forty"}),
    "negative count": lambda cell: json.dumps({**cell, "n": -1}),
    "accuracy above 1": lambda cell: json.dumps({**cell, "accuracy": 7.5}),
    "key not a string": lambda cell: json.dumps({**cell, "key": 12}),
    "a list": lambda cell: json.dumps([cell]),
    "a string": lambda cell: json.dumps("cell"),
    "null": lambda cell: "null",
    "binary": lambda cell: "\x00\x01\x02",
    "huge line": lambda cell: json.dumps({"key": cell["key"], "note": "x" * 5_000_000}),
}


@pytest.mark.parametrize(
    ("bad", "command"),
    [(bad, "leaderboard") for bad in BAD_LINES]
    + [(bad, c) for bad in ("key only", "a list") for c in ("run", "report")],
)
def test_a_line_that_is_not_a_cell_is_refused(suite: Path, cwd: Path, bad: str, command: str) -> None:
    path = store_of(suite)
    path.write_text(BAD_LINES[bad](first_cell(suite)) + "\n" + path.read_text())
    before = path.read_bytes()
    args = [command, suite] + (["--no-tracking"] if command == "run" else [])
    line = error_line(run_cli(*args, cwd=cwd), str(path), "line 1")
    assert len(line) < 600
    assert path.read_bytes() == before


@pytest.mark.parametrize("tail", ["complete line without newline", "torn line"])
@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_read_only_commands_never_write_the_store(suite: Path, cwd: Path, tail: str, command: str) -> None:
    path = store_of(suite)
    lines = path.read_text().splitlines()
    text = (
        "\n".join(lines)
        if tail == "complete line without newline"
        else "\n".join(lines) + "\n" + lines[0][: len(lines[0]) // 2]
    )
    path.write_text(text)
    outcome = run_cli(command, suite, cwd=cwd)
    assert outcome.code == 0, outcome.err[-2000:]
    assert path.read_text() == text


def test_a_complete_last_line_without_newline_is_kept_by_a_run(suite: Path, cwd: Path) -> None:
    """A run completes a last line that is a whole cell instead of dropping it: nothing is recomputed."""
    path = store_of(suite)
    text = path.read_text().rstrip("\n")
    path.write_text(text)
    outcome = run_cli("run", suite, "--no-tracking", cwd=cwd)
    assert outcome.code == 0, outcome.err[-2000:]
    assert "0 encodings computed" in outcome.out
    assert path.read_text() == text + "\n"


@pytest.mark.slow
def test_sample_grids_survive_a_kill_after_the_store_append(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    suite = digits_suite(tmp_path, digits_zoo, **SMALL)
    killed = run_cli("run", suite, "--no-tracking", cwd=cwd, env={"NXB_FAULT": "store_appended:1"}, isolate=True)
    assert killed.code == -9, killed.err[-2000:]
    resumed = run_cli("run", suite, "--no-tracking", cwd=cwd)
    assert resumed.code == 0, resumed.err[-2000:]
    samples = sorted(p.name for p in (tmp_path / "runs" / "digits" / "samples").iterdir())
    assert len(samples) == 3 and all(name.endswith(".png") for name in samples), samples  # clean + two patch strengths


def test_the_store_is_never_truncated_by_a_refused_command(suite: Path, cwd: Path) -> None:
    """A second run refused by the lock and a leaderboard run concurrently leave the store byte for byte."""
    before = tree_digest(suite.parent / "runs")
    lock = suite.parent / "runs" / "digits" / ".lock"
    import fcntl

    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        error_line(run_cli("run", suite, "--no-tracking", cwd=cwd), "in use")
        assert run_cli("leaderboard", suite, cwd=cwd).code == 0
    after = tree_digest(suite.parent / "runs")
    assert {k: v for k, v in after.items() if "cells.jsonl" in k} == {
        k: v for k, v in before.items() if "cells.jsonl" in k
    }
