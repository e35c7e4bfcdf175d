"""MLflow tracking: runs read back with mlflow.search_runs, and a killed invocation resumed, not duplicated."""

import mlflow
import pytest

from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.reporting.tracking import Tracker, sqlite_path, sqlite_uri
from tests.conftest import digits_suite


def test_sqlite_uris_are_built_and_parsed_in_one_place(tmp_path):
    store = tmp_path / "runs" / "mlflow.db"
    assert sqlite_uri(store) == f"sqlite:///{store}" and sqlite_path(sqlite_uri(store)) == store
    assert sqlite_path("sqlite:///mlflow.db").name == "mlflow.db"  # relative to the working directory
    assert sqlite_path("http://localhost:5000") is None and sqlite_path("postgresql://db/mlflow") is None


def tracked_suite(tmp_path, zoo):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    path = digits_suite(tmp_path, zoo, tracking={"enabled": True, "uri": uri, "experiment": "digits-test"})
    return path, load_suite(path), uri


def run_tracked(path, suite, on_group=None):
    with Tracker(suite, path) as tracker:
        def log(group, cells, sample):
            tracker.log_group(group, cells, sample)
            if on_group:
                on_group(group)

        return Runner(suite, on_group=log).run(), tracker


def test_nested_runs_hold_every_cell_and_read_back_with_search_runs(tmp_path, digits_zoo, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, suite, uri = tracked_suite(tmp_path, digits_zoo)
    result, tracker = run_tracked(path, suite)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["digits-test"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and parents["status"].item() == "FINISHED"
    assert len(children) == 3  # clean, patch@0, reference@20 for vit_a
    assert set(children["tags.nxb.encoder"]) == {"clean", "patch", "reference"}
    assert set(children["tags.nxb.attack_tiers"]) == {"identity:none,blur:none"}  # the threat model as data, per group
    for cell in result.cells:
        child = children[children["tags.nxb.group"] == cell.group]
        assert child[f"metrics.acc.{cell.attack}.{cell.model}"].item() == pytest.approx(cell.accuracy)
    client = mlflow.MlflowClient()
    blur = client.get_metric_history(children["run_id"].iloc[0], "acc.blur.vit_b")
    assert [m.step for m in blur] == [50]


def test_a_killed_invocation_is_resumed_in_the_same_parent_run_without_duplicates(tmp_path, digits_zoo, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, suite, uri = tracked_suite(tmp_path, digits_zoo)
    seen = []

    def stop_after_one(group):
        seen.append(group)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tracked(path, suite, stop_after_one)
    mlflow.set_tracking_uri(uri)
    killed = mlflow.search_runs(experiment_names=["digits-test"], filter_string="attributes.status = 'KILLED'")
    assert len(killed) == 1
    _, tracker = run_tracked(path, suite)
    runs = mlflow.search_runs(experiment_names=["digits-test"])
    assert tracker.parent_id == killed["run_id"].item()
    assert runs["status"].eq("FINISHED").all() and len(runs) == 4
    assert runs["tags.nxb.group"].dropna().is_unique


def test_the_environment_tracking_uri_wins(tmp_path, digits_zoo, monkeypatch):
    from nonxfer_bench.reporting.tracking import tracking_uri

    _, suite, _ = tracked_suite(tmp_path, digits_zoo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking_uri(suite) == "http://127.0.0.1:9"
