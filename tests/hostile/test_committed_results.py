"""Data loss 5: `run --limit N` and a plain `leaderboard` rewrote the committed `results/<suite>/` tables from a
partial or local store. `results/<suite>/` holds the suite as its file says, run to the end: it is rewritten only
from every planned cell of such a run, with the draws (CPU or CUDA) of the cells already there; any other run
writes its leaderboard into its own run folder (or, for `leaderboard`, is refused without `--out`), and a
leaderboard of a partial set says so in its first lines.

Each case runs on a copy of one tiny project (this repository's layout: suites/, runs/, results/) whose
results folder plays the committed results."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import digits_suite, write_yaml
from tests.hostile.conftest import REPO, refused, run_cli, tree_digest


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> Path:
    """A project whose suites/digits.yaml ran to the end once: its results/digits/ is the committed results."""
    folder = tmp_path_factory.mktemp("committed")
    small = {
        "dataset": {"name": "digits", "limit": 60},
        "encoders": [{"name": "reference", "strengths": [20.0]}],
        "attacks": [{"name": "identity"}],
    }
    suite = yaml.safe_load(digits_suite(folder, digits_zoo, **small).read_text())
    suite["output"] = {"sample_images": 4}  # runs/ and results/ beside suites/, as in this repository
    (folder / "project" / "suites").mkdir(parents=True)
    write_yaml(folder / "project" / "suites" / "digits.yaml", suite)
    done = run_cli("run", "suites/digits.yaml", cwd=folder / "project")
    assert done.code == 0, done.err[-2000:]
    return folder / "project"


@pytest.fixture
def project(committed: Path, tmp_path: Path) -> Path:
    """A fresh copy of the committed project for one test."""
    return Path(shutil.copytree(committed, tmp_path / "project"))


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def store_lines(project: Path) -> list[str]:
    return (project / "runs" / "digits" / "cells.jsonl").read_text().splitlines()


def test_run_with_a_limit_keeps_the_committed_tables(project: Path) -> None:
    results = project / "results" / "digits"
    before = tree_digest(results)
    done = run_cli("run", "suites/digits.yaml", "--limit", "40", cwd=project)
    assert done.code == 0, done.err[-2000:]
    assert tree_digest(results) == before, "run --limit rewrote the committed results"
    board = project / "runs" / "digits" / "leaderboard" / "leaderboard.md"
    assert "40 images per cell" in board.read_text()
    assert str(board) in last_line(done.out) and "--limit 40" in last_line(done.out), done.out
    assert "--limit 40" in done.out.splitlines()[0], "the destination is said before any work"  # decided up front

    forced = run_cli("run", "suites/digits.yaml", "--limit", "40", "--force", cwd=project)  # nothing left to compute
    assert forced.code == 0, forced.err[-2000:]
    assert "40 images per cell" in (results / "leaderboard.md").read_text()
    assert str(results / "leaderboard.md") in last_line(forced.out)


def test_a_leaderboard_from_a_partial_store_is_refused_and_says_partial_elsewhere(project: Path) -> None:
    lines = store_lines(project)
    first = json.loads(lines[0])["group"]
    kept = [line for line in lines if json.loads(line)["group"] == first]  # one encoding group of two
    (project / "runs" / "digits" / "cells.jsonl").write_text("\n".join(kept) + "\n")
    results = project / "results" / "digits"
    before = tree_digest(results)
    partial = f"partial: {len(kept)} of {len(lines)} planned cells"
    refused("leaderboard", "suites/digits.yaml", cwd=project, expected=(partial, "--out", str(results)))
    assert tree_digest(results) == before, "a partial store rewrote the committed results"

    done = run_cli("leaderboard", "suites/digits.yaml", "--out", "elsewhere", cwd=project)
    assert done.code == 0, done.err[-2000:]
    assert partial in "".join((project / "elsewhere" / "leaderboard.md").read_text().splitlines()[:3])
    report = run_cli("report", "suites/digits.yaml", cwd=project)  # runs/digits/report: its own folder, marked too
    assert report.code == 0, report.err[-2000:]
    assert partial in (project / "runs" / "digits" / "report" / "index.html").read_text()
    assert tree_digest(results) == before


def cuda_copies(project: Path, records: list[dict]) -> list[dict]:
    """``records`` as a CUDA run would key them: same measurements, the keys of the suite planned with CUDA draws."""
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.loading import load_suite

    suite = load_suite(project / "suites" / "digits.yaml")
    cpu, cuda = (plan_suite(suite.model_copy(update={"device": kind})) for kind in ("cpu", "cuda"))
    keys = {a.key: b.key for a, b in zip(cpu, cuda)} | {
        key: other for a, b in zip(cpu, cuda) for key, other in zip(a.cells.values(), b.cells.values())
    }
    return [
        record | {"key": keys[record["key"]], "group": keys[record["group"]], "device": "cuda"} for record in records
    ]


def test_cuda_draws_never_replace_committed_cpu_cells(project: Path) -> None:
    store = project / "runs" / "digits" / "cells.jsonl"
    records = [json.loads(line) for line in store_lines(project)]
    store.write_text("".join(json.dumps(record) + "\n" for record in cuda_copies(project, records)))
    results = project / "results" / "digits"
    before = tree_digest(results)
    refused("leaderboard", "suites/digits.yaml", cwd=project, expected=("cuda draws", "cpu draws", "--out"))
    assert tree_digest(results) == before, "a store of CUDA draws rewrote the committed CPU results"


def test_a_cpu_run_never_replaces_committed_cuda_cells(project: Path) -> None:
    results = project / "results" / "digits"
    with gzip.open(results / "cells.jsonl.gz", "rt") as handle:
        records = [json.loads(line) for line in handle]
    (results / "cells.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in cuda_copies(project, records)).encode(), mtime=0)
    )
    before = tree_digest(results)
    done = run_cli("run", "suites/digits.yaml", cwd=project)  # every cell is in the store: nothing to compute
    assert done.code == 0, done.err[-2000:]
    assert tree_digest(results) == before, "a CPU run rewrote committed CUDA results"
    assert "cpu draws" in last_line(done.out) and str(project / "runs" / "digits" / "leaderboard") in last_line(
        done.out
    )


def test_an_identical_rerun_regenerates_the_committed_tables_byte_for_byte(project: Path) -> None:
    results = project / "results" / "digits"
    before = tree_digest(results)
    done = run_cli("run", "suites/digits.yaml", cwd=project)
    assert done.code == 0, done.err[-2000:]
    assert tree_digest(results) == before
    assert f"Leaderboard: {results / 'leaderboard.md'}" in last_line(done.out)
    board = run_cli("leaderboard", "suites/digits.yaml", cwd=project)  # a complete store of the same draws
    assert board.code == 0, board.err[-2000:]
    assert tree_digest(results) == before

    shutil.rmtree(project / "runs")  # a fresh clone: only the committed results; the run computes every cell again
    csv = (results / "cells.csv").read_bytes()
    again = run_cli("run", "suites/digits.yaml", cwd=project)
    assert again.code == 0, again.err[-2000:]
    assert f"Leaderboard: {results / 'leaderboard.md'}" in last_line(again.out)
    assert (results / "cells.csv").read_bytes() == csv


def test_a_plain_quickstart_run_here_still_writes_its_committed_results() -> None:
    """`make quickstart` in a fresh clone: the suite as its file says, on this machine's draws."""
    from nonxfer_bench.app.destination import committed_draws, run_differences
    from nonxfer_bench.loading import load_suite
    from nonxfer_bench.schema.settings import RunSettings

    suite = load_suite(REPO / "suites" / "quickstart.yaml", require_weights=False)
    run = RunSettings.of(suite).resolved()
    differences = run_differences(run, suite, committed_draws(suite.results_dir()))
    assert differences == ([] if run.device == "cpu" else ["cuda draws (the committed cells: cpu draws)"])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    limit=st.sampled_from([None, 60, 40]),
    precision=st.sampled_from(["fp32", "bf16"]),
    bounds=st.booleans(),
    device=st.sampled_from(["cpu", "cuda"]),
    committed_kind=st.sampled_from([None, "cpu", "cuda"]),
)
def test_a_run_may_replace_committed_results_only_with_their_own_plan(
    written_suite, limit: int | None, precision: str, bounds: bool, device: str, committed_kind: str | None
) -> None:
    """The rule is exactly "same cell keys": a run may replace the committed results if and only if it plans the
    keys of the suite file as written, on the draws of the cells already committed (any draws when none are)."""
    from nonxfer_bench.app.destination import run_differences
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.schema.settings import RunSettings

    run = RunSettings.of(written_suite, device=device, precision=precision, limit=limit, bounds=bounds)
    expected = RunSettings.of(written_suite, device=committed_kind or device)

    def keys(settings: RunSettings) -> list[str]:
        return [key for group in plan_suite(written_suite, settings) for key in group.cells.values()]

    assert (run_differences(run, written_suite, committed_kind) == []) == (keys(run) == keys(expected))


@pytest.fixture(scope="module")
def written_suite(committed: Path):
    from nonxfer_bench.loading import load_suite

    return load_suite(committed / "suites" / "digits.yaml")
