"""MLflow metric names of attack steps. A budget sweep (several steps of one attack at one strength) is one metric
series per step, named ``<attack>/<what tells its steps apart>``, and nothing is overwritten; an attack with one step
per strength keeps its plain name. Logged to a temporary SQLite store through the Tracker
(:func:`tests.helpers.tracked_patch_group`) and read back with MlflowClient."""

from __future__ import annotations

import re

import mlflow
import pytest

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.step import steps
from nonxfer_bench.tracking.names import STEP_NAME_MAX, attack_names, split_cell_metric
from nonxfer_bench.tracking.tracker import Tracker, sqlite_uri
from tests.helpers import tracked_patch_group
from tests.synthetic import MODELS, ladder_cells

# the synthetic ladder's patch_mean steps at strength 1, by (released, public) NEs and images: the attack part of their
# names
SWEEP = {
    (1, 100): "patch_mean/public_100_released_1",
    (10, 2000): "patch_mean/public_2000_released_10",
    (100, 2000): "patch_mean/public_2000_released_100",
}
SAFE = re.compile(r"^[A-Za-z0-9_\-./]+$")  # a subset of what MLflow accepts: no space or colon either


def log(tmp_path, experiment: str, cells: list[Cell]):
    """``cells`` logged as one patch group run of a tiny tracked suite; returns (client, the group run)."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    suite, path, group = tracked_patch_group(tmp_path, uri, experiment, MODELS, 20.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with Tracker(suite, path) as tracker:
            tracker.log_group(group, cells, None)
    client = mlflow.MlflowClient(uri)
    return client, next(
        run for run in client.search_runs([tracker.experiment_id]) if "mlflow.parentRunId" in run.data.tags
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The synthetic ladder's patch release (budget sweeps of patch_mean, subspace_patch and finetune) as a group
    run."""
    released = [c for c in ladder_cells() if c.encoder == "patch"]
    client, child = log(tmp_path_factory.mktemp("steps"), "steps-test", released)
    return client, child, released


def history(client, run, key) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, key))


def step_cell(
    attack: str,
    strength: float,
    model: str,
    accuracy: float,
    param: dict | None = None,
    config: dict | None = None,
    **threat,
) -> Cell:
    return Cell(
        key=f"{attack}-{strength}-{model}-{param}-{config}-{threat}",
        suite="s",
        group="g",
        authorized="a",
        encoder="patch",
        strength=20.0,
        seed=0,
        attack=attack,
        attack_strength=strength,
        attack_param=param or {},
        attack_config=config or {},
        baseline=attack == "identity",
        model=model,
        role="authorized" if model == "a" else "unauthorized",
        n=100,
        accuracy=accuracy,
        agreement=accuracy,
        **threat,
    )


def names_of(cells: list[Cell]) -> dict[tuple[str, float], set[str]]:
    """(attack, strength) -> the attack parts of the metric names of its steps."""
    out: dict[tuple[str, float], set[str]] = {}
    for step, name in attack_names(steps(cells)).items():
        out.setdefault((step.attack, step.strength), set()).add(name)
    return out


def test_a_budget_sweep_logs_one_series_per_step_with_that_steps_values(logged):
    client, child, released = logged
    sweep = [c for c in released if c.attack == "patch_mean"]
    assert len(sweep) == 9  # three budgets x three models, all at strength 1
    for cell in sweep:
        attack = SWEEP[cell.budget_released, cell.budget_public]
        assert history(client, child, f"acc.{attack}.{cell.model}") == [(100, pytest.approx(cell.accuracy))], attack
        assert history(client, child, f"agree.{attack}.{cell.model}") == [(100, pytest.approx(cell.agreement))], attack
        assert history(client, child, f"acc.{attack}.{cell.model}_n") == [(100, 200)]
    assert not [key for key in child.data.metrics if key.startswith(("acc.patch_mean.", "agree.patch_mean."))]


def test_the_role_curves_of_a_budget_sweep_are_one_per_step_not_a_mix_of_budgets(logged):
    client, child, released = logged
    for budget, attack in SWEEP.items():
        step = {
            c.model: c.accuracy
            for c in released
            if c.attack == "patch_mean" and (c.budget_released, c.budget_public) == budget
        }
        assert history(client, child, f"auth.acc.{attack}") == [(100, pytest.approx(step["a"]))]
        assert history(client, child, f"unauth.acc_mean.{attack}") == [
            (100, pytest.approx((step["b"] + step["c"]) / 2))
        ]
        assert history(client, child, f"unauth.acc_max.{attack}") == [(100, pytest.approx(max(step["b"], step["c"])))]
    means = [history(client, child, f"unauth.acc_mean.{attack}")[0][1] for attack in SWEEP.values()]
    assert len(set(means)) == 3 and means[0] < means[-1] - 0.1  # the ladder: more NEs, more accuracy, kept apart
    assert "unauth.acc_mean.patch_mean" not in child.data.metrics


def test_no_metric_of_the_group_run_is_logged_twice_at_one_step(logged):
    client, child, _ = logged
    assert len(child.data.metrics) > 300
    for key in child.data.metrics:
        steps = [metric.step for metric in client.get_metric_history(child.info.run_id, key)]
        assert len(steps) == len(set(steps)), key


def test_attacks_with_one_step_per_strength_keep_their_plain_names(logged):
    _, child, released = logged
    metrics = child.data.metrics
    for cell in (c for c in released if c.attack in ("identity", "blur", "oracle_projection")):
        assert metrics[f"acc.{cell.attack}.{cell.model}"] == pytest.approx(cell.accuracy)
    assert {
        "auth.acc.blur",
        "unauth.acc_mean.blur",
        "unauth.agree_max.oracle_projection",
        "auth.acc.identity",
    } <= metrics.keys()
    attacks = {
        split_cell_metric(key)[1:3]
        for key in metrics
        if key.startswith("acc.") and not key.endswith(("_lo", "_hi", "_n"))
    }
    assert attacks == {
        ("identity", None),
        ("blur", None),
        ("oracle_projection", None),
        ("patch_mean", "public_100_released_1"),
        ("patch_mean", "public_2000_released_10"),
        ("patch_mean", "public_2000_released_100"),
        ("subspace_patch", "released_10"),
        ("subspace_patch", "released_100"),
        ("finetune", "labelled_16"),
        ("finetune", "labelled_128"),
    }
    assert child.data.tags["nxb.best_attack"] == "oracle_projection@1"


def test_the_strongest_attack_tag_names_the_step_of_a_sweep(tmp_path):
    cells = [step_cell("identity", 1.0, m, acc) for m, acc in zip(MODELS, (0.9, 0.1, 0.1))]
    for released, unauthorized in ((1, 0.3), (10, 0.6)):
        cells += [
            step_cell(
                "patch_mean",
                1.0,
                m,
                0.9 if m == "a" else unauthorized,
                {"released": released},
                budget_released=released,
            )
            for m in MODELS
        ]
    client, child = log(tmp_path, "best-step-test", cells)
    assert child.data.tags["nxb.best_attack"] == "patch_mean/released_10@1"
    assert child.data.metrics["unauth.best_attack_acc"] == pytest.approx(0.6)
    assert history(client, child, "unauth.acc_mean.patch_mean/released_1") == [(100, pytest.approx(0.3))]


def test_a_series_follows_its_entry_over_the_attack_strength():
    """Two fine-tuning entries swept over strength (the labelled budget grows with it): one series per entry, named
    by what tells them apart at one strength (scope), not by the budget that changes along the curve."""
    cells = [
        step_cell(
            "finetune", strength, "b", 0.5, {"scope": scope, "lr": lr, "labelled": labelled}, budget_labelled=labelled
        )
        for strength, labelled in ((0.125, 128), (1.0, 1024))
        for scope, lr in (("all", 0.001), ("first_layer", 0.01))
    ]
    assert names_of(cells) == {
        ("finetune", 0.125): {"finetune/lr_0p001_scope_all", "finetune/lr_0p01_scope_first_layer"},
        ("finetune", 1.0): {"finetune/lr_0p001_scope_all", "finetune/lr_0p01_scope_first_layer"},
    }


def test_two_suite_entries_that_read_the_same_are_told_apart_by_their_suite_params_with_safe_names(tmp_path):
    """Surrogate candidate lists with awkward characters: the names are valid for MLflow, distinct and logged."""
    configs = [
        {"candidates": ["vit_a", "vit.b/../x"], "note": "über=1 a:b"},
        {"candidates": ["res"]},
        {"candidates": ["/"]},
    ]
    cells = [step_cell("identity", 1.0, m, acc) for m, acc in zip(MODELS, (0.9, 0.1, 0.1))]
    for config, accuracy in zip(configs, (0.2, 0.3, 0.4)):
        cells += [step_cell("surrogate", 1.0, m, accuracy, {"removed": 1.0}, config) for m in MODELS]
    names = names_of(cells)[("surrogate", 1.0)]
    assert names == {
        "surrogate/candidates_vit_a_vit_b_x_note_ber_1_a_b",
        "surrogate/candidates_res",
        "surrogate/candidates",
    }
    assert all(SAFE.match(name) for name in names)
    client, child = log(tmp_path, "awkward-test", cells)
    for name, accuracy in zip(sorted(names, key=len, reverse=True), (0.2, 0.3, 0.4)):
        assert history(client, child, f"acc.{name}.b") == [(100, pytest.approx(accuracy))]
        assert history(client, child, f"unauth.acc_mean.{name}") == [(100, pytest.approx(accuracy))]


def test_steps_alike_once_made_safe_or_too_long_end_in_a_hash_of_the_step(tmp_path):
    cells = [step_cell("identity", 1.0, m, acc) for m, acc in zip(MODELS, (0.9, 0.1, 0.1))]
    for param, accuracy in (({"x": "a b"}, 0.2), ({"x": "a/b"}, 0.3), ({"x": "y" * 400}, 0.4), ({"x": "y" * 401}, 0.5)):
        cells += [step_cell("blur", 0.5, m, accuracy, param) for m in MODELS]
    names = names_of(cells)[("blur", 0.5)]
    assert len(names) == 4 and all(SAFE.match(name) and len(name) <= len("blur/") + STEP_NAME_MAX for name in names)
    assert sum(name.startswith("blur/x_a_b_") for name in names) == 2
    client, child = log(tmp_path, "alike-test", cells)
    logged = {
        key.removesuffix(".b") for key in child.data.metrics if key.startswith("acc.blur/") and key.endswith(".b")
    }
    assert logged == {f"acc.{name}" for name in names}
    assert sorted(child.data.metrics[f"acc.{name}.b"] for name in names) == pytest.approx([0.2, 0.3, 0.4, 0.5])


def test_strengths_that_share_an_mlflow_step_are_told_apart_by_the_strength():
    cells = [step_cell("blur", strength, "b", 0.5) for strength in (0.001, 0.004)] + [step_cell("blur", 0.5, "b", 0.5)]
    assert names_of(cells) == {
        ("blur", 0.001): {"blur/strength_0p001"},
        ("blur", 0.004): {"blur/strength_0p004"},
        ("blur", 0.5): {"blur/strength_0p5"},
    }


def test_a_metric_name_splits_into_metric_attack_step_and_model():
    assert split_cell_metric("acc.blur.vit_a") == ("acc", "blur", None, "vit_a")
    assert split_cell_metric("acc_flat.patch_mean/public_100_released_1.resnet-18_b_lo") == (
        "acc_flat",
        "patch_mean",
        "public_100_released_1",
        "resnet-18_b_lo",
    )
    assert split_cell_metric("agree.finetune/lr_0p01_scope_all.my.model") == (
        "agree",
        "finetune",
        "lr_0p01_scope_all",
        "my.model",
    )


def test_a_metric_name_too_long_for_mlflow_keeps_its_start_and_ends_in_a_hash():
    from nonxfer_bench.tracking.names import MAX_METRIC_NAME
    from nonxfer_bench.tracking.names import fitting as _fitting

    long = (
        "acc_flat.surrogate_projection/" + "x" * 100 + "." + "m" * 128
    )  # a step name and a model name at their limits
    fitted, other = _fitting(long), _fitting(long[:-1] + "n")
    assert len(fitted + "_lo") <= 250 and fitted.startswith(long[:200]) and fitted != other
    assert _fitting("acc.blur.vit_a") == "acc.blur.vit_a" and MAX_METRIC_NAME == 247
