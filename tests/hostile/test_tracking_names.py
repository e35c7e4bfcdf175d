"""Unescaped MLflow filters (issue 23): a run folder or experiment name with a quote, a backslash or any other
character the schema allows is logged, resumed, reused and read back like a plain one. MLflow's filter strings
cannot escape a quote, so a free-form value must never be put into one."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.suite import PLAIN_NAME
from nonxfer_bench.tracking.readback import read_suite
from nonxfer_bench.tracking.tracker import Tracker, sqlite_uri
from tests.helpers import digits_suite, write_yaml
from tests.hostile.conftest import run_cli
from tests.synthetic import MODELS, ladder_cells

MODEL = {
    "arch": "resnet18", "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
    "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
}  # fmt: skip
CELLS = [cell for cell in ladder_cells() if cell.encoder == "patch" and cell.attack in ("identity", "blur")]
QUOTES = ["it's", 'a"b', "back\\slash", "tick`", "x' or tags.`nxb.run_dir` != '", "%_", " ", "\t\x1b[31m\r"]
# a folder name: anything but '/' and NUL (the file system's only limits); an experiment name: any text of 1 to 250
# characters
folders = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=24
) | st.sampled_from(QUOTES)
experiments = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40) | st.sampled_from(QUOTES)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for every example (MLflow creates its tables once)."""
    return sqlite_uri(tmp_path_factory.mktemp("store") / "mlflow.db")


def tracked(root: Path, folder: str, experiment: str, name: str, uri: str):
    """A suite of tiny random ResNets named ``name`` that runs into ``root/folder/runs`` and logs to ``experiment``."""
    path = write_yaml(
        root / "suite.yaml",
        {
            "name": name,
            "dataset": {"name": "digits", "limit": 10},
            "zoo": [{"name": model, **MODEL} for model in MODELS],
            "authorized": [MODELS[0]],
            "encoders": [{"name": "patch", "strengths": [20.0]}],
            "attacks": [{"name": "identity"}],
            "output": {"dir": str(root / folder / "runs"), "results": str(root / "results")},
            "tracking": {"uri": uri, "experiment": experiment},
        },
    )
    suite = load_suite(path)
    return suite, path, next(group for group in plan_suite(suite) if group.encoder.name == "patch")


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(folder=folders, experiment=experiments, name=st.from_regex(PLAIN_NAME, fullmatch=True))
@example(folder="it's", experiment="it's", name="x")
@example(folder="x' or tags.`nxb.run_dir` != '", experiment='a"b\\c', name="s")
def test_any_folder_and_experiment_name_is_resumed_reused_and_read_back(
    store: str, folder: str, experiment: str, name: str
) -> None:
    with tempfile.TemporaryDirectory() as temporary, pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        suite, path, group = tracked(Path(temporary), folder, experiment, name, store)
        with pytest.raises(KeyboardInterrupt), Tracker(suite, path) as killed:
            killed.log_group(group, CELLS, None)
            raise KeyboardInterrupt
        with Tracker(suite, path) as resumed:  # the killed invocation's parent, its group already logged
            assert resumed.parent_id == killed.parent_id and group.key in resumed.logged_groups
        with Tracker(suite, path) as again:  # a new parent that points at the group run holding the same cells
            again.log_group(group, CELLS, None)
        import mlflow

        tags = mlflow.MlflowClient(store).get_run(again.parent_id).data.tags
        assert again.parent_id != killed.parent_id and tags.get(f"nxb.reuses.{group.key}"), tags
        back = read_suite(store, experiment)
        assert back.parent_id == again.parent_id and back.suite_name == name
        assert sorted(back.cells, key=lambda c: c.key) == sorted(CELLS, key=lambda c: c.key)


@pytest.mark.slow
def test_an_apostrophe_in_the_output_folder_with_tracking(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """The campaign's case: `run` into a folder named with an apostrophe, then the leaderboard read back from MLflow."""
    odd = tmp_path / "bob's runs"
    suite = digits_suite(
        tmp_path,
        digits_zoo,
        dataset={"name": "digits", "limit": 40},
        encoders=[{"name": "patch", "strengths": [0.0]}],
        attacks=[{"name": "identity"}],
        output={"dir": str(odd / "runs"), "results": str(odd / "results"), "sample_images": 0},
        tracking={"enabled": True, "experiment": "it's mine"},
    )
    for _ in range(2):  # the second run resumes nothing and reuses every group run
        outcome = run_cli("run", suite, cwd=cwd)
        assert outcome.code == 0, outcome.err[-3000:]
    board = run_cli("leaderboard", suite, "--mlflow", "--out", tmp_path / "board", cwd=cwd)
    assert board.code == 0, board.err[-3000:]
    assert (tmp_path / "board" / "leaderboard.md").is_file() and "cells from MLflow" in board.out
    assert yaml.safe_load(suite.read_text())["output"]["dir"] == str(odd / "runs")
