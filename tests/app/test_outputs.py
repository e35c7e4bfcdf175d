"""Where a suite's outputs go: every path resolves from the suite file, never from the current folder;
a suite never writes into another suite file's results; --output moves them; errors show absolute paths."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nonxfer_bench.cli import main
from nonxfer_bench.loading import project_folder
from tests.helpers import digits_suite, write_yaml


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The current folder: an unrelated empty one, as for a user who cds away from the project."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def tiny_suite(tmp_path: Path, zoo: Path, target: Path, name: str = "digits") -> Path:
    """A one-encoding digits suite at ``target`` with the default output folders (runs, results)."""
    small = {
        "name": name,
        "dataset": {"name": "digits", "limit": 20},
        "encoders": [{"name": "patch", "strengths": [0.0]}],
        "attacks": [{"name": "identity"}],
        "batch_size": 20,
        "output": {"sample_images": 2},
    }
    data = yaml.safe_load(digits_suite(tmp_path, zoo, **small).read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_yaml(target, data)


def test_the_project_folder_is_above_a_suites_folder_else_the_suite_files_own(tmp_path):
    assert project_folder(tmp_path / "repo" / "suites" / "quickstart.yaml") == tmp_path / "repo"
    assert project_folder(tmp_path / "mine" / "study.yaml") == tmp_path / "mine"
    assert project_folder(Path("suites/quickstart.yaml")) == Path.cwd()


@pytest.mark.slow
def test_outputs_resolve_from_the_suite_file_not_the_current_folder(tmp_path, digits_zoo, elsewhere, capsys):
    suite = tiny_suite(tmp_path, digits_zoo, tmp_path / "project" / "suites" / "digits.yaml")
    assert main(["run", str(suite), "--no-tracking"]) == 0
    project = tmp_path / "project"
    assert (project / "runs" / "digits" / "cells.jsonl").is_file()
    assert (project / "results" / "digits" / "leaderboard.md").is_file()
    assert (
        project / "results" / "digits" / "SUITE"
    ).read_text().strip() == "../../suites/digits.yaml"  # valid in a clone
    assert not any(elsewhere.iterdir())
    # leaderboard and report find the run and write into the project too
    capsys.readouterr()
    assert main(["leaderboard", str(suite)]) == 0
    assert str(project / "results" / "digits" / "leaderboard.md") in capsys.readouterr().out
    assert main(["report", str(suite)]) == 0
    assert (project / "runs" / "digits" / "report" / "index.html").is_file()
    assert not any(elsewhere.iterdir())


def test_a_suite_never_writes_into_another_suite_files_results(tmp_path, digits_zoo, elsewhere, capsys):
    first = tiny_suite(tmp_path, digits_zoo, tmp_path / "study" / "first.yaml")
    second = tiny_suite(tmp_path, digits_zoo, tmp_path / "study" / "second.yaml")  # the same suite name
    assert main(["run", str(first), "--no-tracking"]) == 0
    results = tmp_path / "study" / "results" / "digits"
    before = (results / "leaderboard.md").read_bytes()
    capsys.readouterr()
    for argv in (["run", str(second), "--no-tracking"], ["leaderboard", str(second)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(results) in err and str(first) in err and "--output" in err
    assert (results / "leaderboard.md").read_bytes() == before
    assert main(["run", str(second), "--no-tracking", "--output", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "results" / "digits" / "leaderboard.md").is_file()
    assert (tmp_path / "mine" / "runs" / "digits" / "cells.jsonl").is_file()
    assert main(["run", str(first), "--no-tracking"]) == 0  # its own folder stays its own


def test_results_without_a_marker_belong_to_the_suite_of_that_name_in_suites(tmp_path, digits_zoo, elsewhere, capsys):
    project = tmp_path / "clone"
    committed = project / "results" / "digits"  # as committed: tables, no marker
    committed.mkdir(parents=True)
    (committed / "leaderboard.md").write_text("committed\n")
    other = tiny_suite(tmp_path, digits_zoo, project / "suites" / "my-digits.yaml")
    assert main(["run", str(other), "--no-tracking"]) == 2
    assert str(project / "suites" / "digits.yaml") in capsys.readouterr().err
    assert (committed / "leaderboard.md").read_text() == "committed\n"
    own = tiny_suite(tmp_path, digits_zoo, project / "suites" / "digits.yaml")
    assert main(["run", str(own), "--no-tracking"]) == 0
    assert (committed / "SUITE").read_text().strip() == "../../suites/digits.yaml"


def test_not_found_errors_show_absolute_paths(tmp_path, digits_zoo, elsewhere, capsys):
    assert main(["run", "suites/missing.yaml"]) == 2
    assert f"{elsewhere / 'suites' / 'missing.yaml'}: file not found" in capsys.readouterr().err
    suite = tiny_suite(tmp_path, digits_zoo, tmp_path / "study" / "study.yaml")
    data = yaml.safe_load(suite.read_text())
    write_yaml(suite, {**data, "zoo": "zoo/missing.yaml"})
    assert main(["run", os.path.relpath(suite)]) == 2
    assert f"zoo file {tmp_path / 'study' / 'zoo' / 'missing.yaml'} not found" in capsys.readouterr().err
    write_yaml(suite, data)
    assert main(["leaderboard", os.path.relpath(suite)]) == 2
    assert f"no finished cells in {tmp_path / 'study' / 'runs' / 'digits' / 'cells.jsonl'}" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fresh_clone_rebuilds_leaderboard_and_report_from_the_committed_results_alone(
    tmp_path, digits_zoo, elsewhere, capsys
):
    suite = tiny_suite(tmp_path, digits_zoo, tmp_path / "project" / "suites" / "digits.yaml")
    assert main(["run", str(suite), "--no-tracking"]) == 0
    project = tmp_path / "project"
    results = project / "results" / "digits"
    committed = {name: (results / name).read_text() for name in ("leaderboard.md", "cells.csv")}
    shutil.rmtree(project / "runs")  # what a clone of the repository has: results/, no runs/
    assert main(["leaderboard", str(suite)]) == 0
    assert (results / "cells.csv").read_text() == committed["cells.csv"]
    rebuilt = (results / "leaderboard.md").read_text()
    assert rebuilt.replace("cells committed unknown", "") == re.sub(
        r"newest cell written \S+", "", committed["leaderboard.md"]
    )
    git = {"cwd": project, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **git)
    subprocess.run(["git", "add", "results"], **git)
    dated = os.environ | {
        "GIT_COMMITTER_DATE": "2026-03-05T02:00:00+05:00",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "commit", "-qm", "results"], env=dated, **git)
    assert main(["leaderboard", str(suite)]) == 0
    assert f"cells from {results / 'cells.jsonl'}" in capsys.readouterr().out
    assert "cells committed 2026-03-04 (UTC)" in (results / "leaderboard.md").read_text()  # the commit's date, in UTC
    assert "[" in rebuilt.split("## Protocol verdict")[1]  # intervals from the per-image outcomes the results keep
    assert main(["report", str(suite)]) == 0
    assert (project / "runs" / "digits" / "report" / "index.html").is_file()
