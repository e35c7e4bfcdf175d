"""MLflow tracking: runs read back with mlflow.search_runs, and a killed invocation resumed, not duplicated."""

import mlflow
import pytest

from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.tracking.tracker import Tracker, sqlite_path, sqlite_uri
from tests.helpers import digits_suite


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
    tiers = dict(
        zip(children["tags.nxb.encoder"], children["tags.nxb.attack_tiers"])
    )  # the threat model as data, per group
    assert tiers == {
        "clean": "identity:none",
        "patch": "identity:none,blur:none",
        "reference": "identity:none,blur:none",
    }  # clean: no attack only
    for cell in result.cells:
        child = children[children["tags.nxb.group"] == cell.group]
        assert child[f"metrics.acc.{cell.attack}.{cell.model}"].item() == pytest.approx(cell.accuracy)
    client = mlflow.MlflowClient()
    blur = client.get_metric_history(
        children[children["tags.nxb.encoder"] == "patch"]["run_id"].item(), "acc.blur.vit_b"
    )
    assert [m.step for m in blur] == [50]


def test_a_budget_sweep_run_logs_one_metric_series_per_step(tmp_path, digits_zoo, monkeypatch):
    """Two entries of one attack at one strength (1 and 20 released NEs): each step its own metrics, none overwritten;
    the single-step attack keeps its plain name."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = sqlite_uri(tmp_path / "mlflow.db")
    attacks = [
        {"name": "identity"}, {"name": "blur", "strengths": [0.5]},
        {"name": "patch_mean", "strengths": [1.0], "params": {"released": 1}},
        {"name": "patch_mean", "strengths": [1.0], "params": {"released": 20, "public": 10}},
    ]  # fmt: skip
    path = digits_suite(
        tmp_path,
        digits_zoo,
        public={"name": "digits", "params": {"split": "train"}, "limit": 80},
        dataset={"name": "digits", "limit": 60},
        encoders=[{"name": "patch", "strengths": [10.0]}],
        attacks=attacks,
        batch_size=60,
        tracking={"enabled": True, "uri": uri, "experiment": "digits-sweep"},
    )
    result, tracker = run_tracked(path, load_suite(path))
    client = mlflow.MlflowClient(uri)
    runs = {
        run.data.tags["nxb.group"]: run
        for run in client.search_runs([tracker.experiment_id])
        if "nxb.group" in run.data.tags
    }
    names = {
        1: "patch_mean/public_80_released_1",
        20: "patch_mean/public_10_released_20",
    }  # all 80 public images, or the 10 asked for
    sweep = [cell for cell in result.cells if cell.attack == "patch_mean"]
    releases = {
        cell.group for cell in result.cells if cell.encoder != "clean"
    }  # patch@10: the clean images face only no attack
    assert (
        {cell.budget_released for cell in sweep} == set(names)
        and len(releases) == 1
        and len(sweep) == 2 * len(releases) * 3
    )
    for cell in sweep:
        logged = client.get_metric_history(
            runs[cell.group].info.run_id, f"acc.{names[cell.budget_released]}.{cell.model}"
        )
        assert [(m.step, m.value) for m in logged] == [(100, pytest.approx(cell.accuracy))]
    for cell in (c for c in result.cells if c.attack == "blur"):
        assert runs[cell.group].data.metrics[f"acc.blur.{cell.model}"] == pytest.approx(cell.accuracy)
    assert not any("acc.patch_mean." in key for run in runs.values() for key in run.data.metrics)


@pytest.mark.slow
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
    from nonxfer_bench.tracking.tracker import tracking_uri

    _, suite, _ = tracked_suite(tmp_path, digits_zoo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking_uri(suite) == "http://127.0.0.1:9"


@pytest.mark.slow
def test_a_rerun_that_computes_nothing_logs_no_group_run_and_reads_back_whole(tmp_path, digits_zoo, monkeypatch):
    from nonxfer_bench.tracking.readback import read_suite

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, suite, uri = tracked_suite(tmp_path, digits_zoo)
    first, _ = run_tracked(path, suite)
    again, tracker = run_tracked(path, load_suite(path))
    assert again.computed_groups == 0 and again.cells == first.cells
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["digits-test"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 3 and len(runs) == 5 and runs["status"].eq("FINISHED").all()  # two parents, groups once
    parent = mlflow.get_run(tracker.parent_id)
    reused = {
        key.removeprefix("nxb.reuses."): value
        for key, value in parent.data.tags.items()
        if key.startswith("nxb.reuses.")
    }
    assert reused == dict(zip(children["tags.nxb.group"], children["run_id"]))
    tracked = read_suite(uri, "digits-test")
    assert tracked.parent_id == tracker.parent_id
    assert sorted(tracked.cells, key=lambda c: c.key) == sorted(again.cells, key=lambda c: c.key)


def test_the_experiment_opens_in_mlflows_classic_runs_view(tmp_path, digits_zoo, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, suite, uri = tracked_suite(tmp_path, digits_zoo)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("digits-test")  # made before the tag existed: the next run adds it
    with Tracker(suite, path):
        pass
    assert mlflow.get_experiment_by_name("digits-test").tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_compare_views_default_axes_are_the_encoding_not_encoder_internals(tmp_path, digits_zoo, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, suite, uri = tracked_suite(tmp_path, digits_zoo)
    run_tracked(path, suite)
    mlflow.set_tracking_uri(uri)
    children = [
        r
        for r in mlflow.search_runs(experiment_names=["digits-test"], output_format="list")
        if "mlflow.parentRunId" in r.data.tags
    ]
    keys = {key for run in children for key in run.data.params}
    # MLflow's compare page offers the first three params (sorted) whose values differ between the runs
    differing = sorted(key for key in keys if len({run.data.params.get(key) for run in children}) > 1)[:3]
    assert keys == {"authorized", "encoder", "strength", "seed", "storage"} and differing == ["encoder", "strength"]
    patch = next(run for run in children if run.data.params["encoder"] == "patch")
    assert patch.data.tags["nxb.encoder_param.tau"] == str(suite.encoders[0].params["tau"])
