"""The strongest attack per encoding: the leaderboard column and the MLflow metric on the group run."""

from __future__ import annotations

import mlflow
import pytest

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.ranking import strongest_attack
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.rendering.tables import effect_table
from nonxfer_bench.tracking.tracker import Tracker, sqlite_uri
from tests.helpers import tracked_patch_group


def cell(attack, strength, model, accuracy, encoder="patch", authorized="a", psnr=20.0, param=None, role=None):
    return Cell(
        authorized=authorized, encoder=encoder, strength=10.0, seed=0, attack=attack, baseline=attack == "identity",
        attack_strength=strength, attack_param=param or {}, model=model, suite="s", group="g",
        role=role or ("authorized" if model == authorized else "unauthorized"), accuracy=accuracy, agreement=accuracy,
        encoded_psnr=10.0, attacked_psnr=psnr, n=100, key=f"{attack}{strength}{model}{encoder}",
    )  # fmt: skip


CELLS = [
    cell("identity", 1.0, "a", 0.90),
    cell("identity", 1.0, "b", 0.10),
    cell("identity", 1.0, "c", 0.12),
    cell("blur", 0.5, "a", 0.80),
    cell("blur", 0.5, "b", 0.30),
    cell("blur", 0.5, "c", 0.20),
    cell("oracle_projection", 1.0, "a", 0.85),
    cell("oracle_projection", 1.0, "b", 0.70),
    cell("oracle_projection", 1.0, "c", 0.50),
    cell("oracle_projection", 0.5, "a", 0.88),
    cell("oracle_projection", 0.5, "b", 0.40),
    cell("oracle_projection", 0.5, "c", 0.40),
]


def test_strongest_attack_maximizes_the_mean_unauthorized_accuracy():
    best = strongest_attack(results_frame(CELLS), "a")
    assert (best["step"].attack, best["step"].strength, best["label"]) == (
        "oracle_projection",
        1.0,
        "oracle_projection 1",
    )
    assert best["unauth_mean"] == pytest.approx(0.60)
    assert (best["unauth_max"], best["unauth_max_model"], best["auth"]) == (
        pytest.approx(0.70),
        "b",
        pytest.approx(0.85),
    )


def test_strongest_attack_is_identity_when_nothing_helps_and_ties_keep_the_authorized_model():
    plain = [c for c in CELLS if c.baseline]
    assert strongest_attack(results_frame(plain), "a")["label"] == "no attack"
    tie = CELLS[:3] + [cell("blur", 0.5, "a", 0.95), cell("blur", 0.5, "b", 0.10), cell("blur", 0.5, "c", 0.12)]
    assert strongest_attack(results_frame(tie), "a")["step"].attack == "blur"


def test_effect_table_has_the_strongest_attack_columns_per_encoding():
    clean = [cell("identity", 1.0, m, 0.9, encoder="clean") for m in "abc"]
    table = effect_table(results_frame(CELLS + clean), ["a", "b", "c"])
    row = table[table.encoding == "patch 10"].iloc[0]
    assert row["strongest attack"] == "oracle_projection 1"
    assert row["strongest: unauth mean"] == "60.0 [50.2, 69.1]"  # Wilson 95% for 60 of n = 100
    assert row["strongest: auth acc"] == "85.0 [76.7, 90.7]"
    assert table[table.encoding == "clean"].iloc[0]["strongest attack"] == "no attack"


def test_controls_are_shown_but_never_counted_as_unauthorized():
    control = [
        cell(attack, strength, "r", 0.99, role="control") for attack, strength in (("identity", 1.0), ("blur", 0.5))
    ]
    frame = results_frame(CELLS + control)
    assert strongest_attack(frame, "a")["unauth_mean"] == pytest.approx(0.60)  # as without the control
    row = effect_table(frame, ["a", "b", "c", "r"]).iloc[0]
    assert (row["unauth mean"].split(" [")[0], row["r"].split(" [")[0]) == ("11.0", "99.0")
    assert row["unauth max"] == effect_table(results_frame(CELLS), ["a"]).iloc[0]["unauth max"]


def test_group_run_logs_the_best_attack_metric_and_tag(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = sqlite_uri(tmp_path / "mlflow.db")
    suite, path, group = tracked_patch_group(tmp_path, uri, "strongest-test", list("abc"), 10.0)
    with Tracker(suite, path) as tracker:
        tracker.log_group(group, CELLS, None)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["strongest-test"])
    child = runs[runs["tags.mlflow.parentRunId"].notna()].iloc[0]
    assert child["metrics.unauth.best_attack_acc"] == pytest.approx(0.60)
    assert child["metrics.unauth.best_attack_acc_max"] == pytest.approx(0.70)
    assert child["metrics.auth.best_attack_acc"] == pytest.approx(0.85)
    assert child["tags.nxb.best_attack"] == "oracle_projection@1"
