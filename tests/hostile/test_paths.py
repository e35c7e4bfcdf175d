"""Defect 3: names that become file names must be plain names; odd but legal characters in paths work."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.helpers import DIGITS_ZOO, digits_suite
from tests.hostile.conftest import refused, run_cli, suite_with_zoo

BAD_NAMES = [".", "..", "...", "a/b", "../x", "a\\b", ".hidden", "", "x\x00y", "-rf", "a" * 300, "ok\n"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_suite_name_must_be_plain(tmp_path: Path, cwd: Path, digits_zoo: Path, name: str) -> None:
    suite = digits_suite(tmp_path, digits_zoo, name=name, output={"dir": "runs", "results": "results"})
    refused("run", suite, "--no-tracking", cwd=cwd, expected=("'name'",))
    assert not any(cwd.iterdir()), "the refused run wrote into the working directory"


@pytest.mark.parametrize("name", [".", "..", "a/b", "../../evil", "", "m\nx", "a b"], ids=repr)
def test_model_name_must_be_plain(tmp_path: Path, cwd: Path, name: str) -> None:
    zoo = copy.deepcopy(DIGITS_ZOO)
    zoo["models"][1]["name"] = name
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(zoo))
    refused("zoo", "train", path, cwd=cwd, expected=("name",))


def test_inline_zoo_model_name_must_be_plain(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    models = copy.deepcopy(DIGITS_ZOO["models"])
    for model in models:
        model["weights"] = {"source": "none"}
    models[0]["name"] = ".."
    suite = suite_with_zoo(tmp_path, digits_zoo, models, authorized=[".."])
    refused("list", "models", suite, cwd=cwd, expected=("zoo[0].name",))


def test_experiment_name_is_bounded(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    suite = digits_suite(tmp_path, digits_zoo, tracking={"enabled": True, "experiment": "x" * 10_000})
    refused("list", "models", suite, cwd=cwd, expected=("tracking.experiment",))


@pytest.mark.slow
def test_odd_characters_in_the_output_folder(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """Spaces and non-ASCII in output.dir are legal: the run, its MLflow store and its leaderboard all land
    inside that folder."""
    odd = tmp_path / "odd dir ü,;=@"
    suite = digits_suite(
        tmp_path,
        digits_zoo,
        dataset={"name": "digits", "limit": 40},
        encoders=[{"name": "patch", "strengths": [0.0]}],
        attacks=[{"name": "identity"}],
        output={"dir": str(odd / "runs"), "results": str(odd / "results"), "sample_images": 2},
        tracking={"enabled": True},
    )
    outcome = run_cli("run", suite, cwd=cwd)
    assert outcome.code == 0, outcome.err[-3000:]
    assert (odd / "runs" / "mlflow.db").is_file()
    assert (odd / "results" / "digits" / "leaderboard.md").is_file()
    assert not any(cwd.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cwd", odd.name, "suite.yaml"])


@pytest.mark.parametrize("char", ["#", "?", "%"])
def test_characters_a_sqlite_uri_cannot_hold(tmp_path: Path, cwd: Path, digits_zoo: Path, char: str) -> None:
    """'#', '?' and '%' would be read as a URI's fragment, query or escape: the store would land elsewhere."""
    odd = tmp_path / f"runs{char}1"
    suite = digits_suite(tmp_path, digits_zoo, output={"dir": str(odd)}, tracking={"enabled": True})
    refused("run", suite, cwd=cwd, expected=("output.dir",))
    assert not odd.exists() and not any(cwd.iterdir())
