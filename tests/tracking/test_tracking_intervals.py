"""MLflow metrics carry their intervals (#18) and the security curves (#15): every accuracy or agreement metric
``m`` of a group run has ``m_lo``, ``m_hi`` and ``m_n`` at each of its steps, and the curve points are metrics
with step = budget. Logged to a temporary SQLite store and read back with MlflowClient."""

from __future__ import annotations

import mlflow
import pytest

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.security import security_points
from nonxfer_bench.analysis.uncertainty import aggregate_intervals
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.rendering.plots import write_plots
from nonxfer_bench.tracking.tracker import Tracker, sqlite_uri
from tests.helpers import tracked_patch_group
from tests.synthetic import IMAGES, MODELS, ladder_cells

MEASURED = (
    "acc.",
    "agree.",
    "acc_flat.",
    "auth.acc",
    "auth.agree",
    "unauth.acc",
    "unauth.agree",
    "unauth.best_attack",
    "auth.best_attack",
    "security.",
)
SUFFIXES = ("_lo", "_hi", "_n")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One patch group of the synthetic ladder logged as a group run, and the plots logged to the parent run."""
    tmp_path = tmp_path_factory.mktemp("tracking")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    suite, path, group = tracked_patch_group(tmp_path, uri, "intervals-test", MODELS, 20.0)
    cells = ladder_cells()
    released = [c for c in cells if c.encoder == "patch"]
    plots = write_plots(results_frame(cells), MODELS, "accuracy", tmp_path / "results")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with Tracker(suite, path) as tracker:
            tracker.log_group(group, released, None)
            tracker.log_results(plots)
    client = mlflow.MlflowClient(uri)
    child = next(run for run in client.search_runs([tracker.experiment_id]) if "mlflow.parentRunId" in run.data.tags)
    return client, tracker.parent_id, child, released


def history(client, run, key) -> dict[int, float]:
    return {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, key)}


@pytest.mark.slow
def test_every_accuracy_and_agreement_metric_has_its_interval_and_n_at_every_step(logged):
    client, _, child, _ = logged
    keys = [key for key in child.data.metrics if key.startswith(MEASURED) and not key.endswith(SUFFIXES)]
    assert len(keys) > 50
    for key in keys:
        values = history(client, child, key)
        lo, hi, n = (history(client, child, key + suffix) for suffix in SUFFIXES)
        assert lo.keys() == hi.keys() == n.keys() == values.keys(), key
        for step, value in values.items():
            assert lo[step] <= value + 1e-9 and value <= hi[step] + 1e-9 and n[step] == IMAGES, (key, step)


def test_a_cell_metric_carries_wilsons_interval(logged):
    _, _, child, released = logged
    cell = next(c for c in released if c.attack == "blur" and c.model == "b")
    interval = wilson(cell.accuracy * IMAGES, IMAGES)
    metrics = child.data.metrics
    assert (
        metrics["acc.blur.b"],
        metrics["acc.blur.b_lo"],
        metrics["acc.blur.b_hi"],
        metrics["acc.blur.b_n"],
    ) == pytest.approx((cell.accuracy, interval.lo, interval.hi, IMAGES))


def test_the_unauthorized_mean_carries_the_paired_bootstrap_interval(logged):
    _, _, child, released = logged
    frame = results_frame(released)
    plain = frame[frame.baseline]
    mean, best = aggregate_intervals(plain, ["b", "c"], "accuracy")
    metrics = child.data.metrics
    assert (metrics["unauth.acc_mean_lo"], metrics["unauth.acc_mean_hi"]) == pytest.approx((mean.lo, mean.hi))
    assert (metrics["unauth.acc_max_lo"], metrics["unauth.acc_max_hi"]) == pytest.approx((best.lo, best.hi))
    at_the_mean = wilson(metrics["unauth.acc_mean"] * IMAGES, IMAGES)  # what the store without outcomes would give
    assert (mean.lo, mean.hi) != pytest.approx((at_the_mean.lo, at_the_mean.hi), abs=1e-3)


def test_security_curve_points_are_metrics_with_step_equal_to_the_budget(logged):
    client, _, child, released = logged
    points = security_points(results_frame(released))
    method = points[(points.tier == "method") & (points.budget == "nes")]
    assert history(client, child, "security.nes.method.unauth_mean") == pytest.approx(
        dict(zip(method.value, method["mean"]))
    )
    assert sorted(history(client, child, "security.nes.method.unauth_mean")) == [1, 10, 100]
    assert sorted(history(client, child, "security.public.architecture.unauth_max_hi")) == [2000]
    assert sorted(history(client, child, "security.nes.labelled_nes.unauth_mean_n")) == [16, 128]


def test_the_parent_run_holds_the_security_plot_and_the_precision(logged):
    client, parent_id, _, _ = logged
    artifacts = {artifact.path for artifact in client.list_artifacts(parent_id, "leaderboard")}
    assert "leaderboard/security_curves_a.png" in artifacts and "leaderboard/attack_curves.png" in artifacts
    assert client.get_run(parent_id).data.params["precision"] == "fp32"
