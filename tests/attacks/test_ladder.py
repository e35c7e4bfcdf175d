"""The adversary ladder end to end on the digits zoo: threat tiers and budgets on cells, model adaptation in the
score stage, identification, the ladder tables, and committed suites whose cell keys the budget axis left alone."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.threat import Tier
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.rendering.ladder import identification_table, ladder_tables
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from tests.helpers import digits_suite

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "suite_name", ["quickstart-adaptive"]
)  # quickstart was recomputed under the protocol: tests/execution/test_committed_keys.py
def test_committed_suites_keep_their_cell_keys(suite_name):
    """Budget parameters are left out of the params dump when unset: every key the suite plans is a key of its committed
    cells, computed before budgets existed. The fixture pins those keys (group keys included), so a change that moves a
    key fails here even where the committed folder is rebuilt from its cells."""
    expected = json.loads((ROOT / "tests/fixtures/plan_keys.json").read_text())[suite_name]
    committed = CellStore(results_cells(ROOT / "results" / suite_name), writable=False).cells
    keys = {*committed, *(cell.group for cell in committed.values())}
    assert hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest() == expected  # the committed cells are that plan
    suite = load_suite(ROOT / "suites" / f"{suite_name}.yaml", require_weights=False)
    groups = plan_suite(
        suite.model_copy(update={"device": "cpu"})
    )  # CPU draws, as they were computed (also on a GPU machine)
    assert {k for g in groups for k in [g.key, *g.cells.values()]} == keys


def test_a_set_budget_is_part_of_the_parameters_and_an_unset_one_is_not():
    assert "released" not in ATTACKS.create("patch_mean").params.model_dump(mode="json")
    assert ATTACKS.create("patch_mean", {"released": 10}).params.model_dump(mode="json")["released"] == 10
    with pytest.raises(Exception):
        ATTACKS.create("subspace_patch", {"released": 0})


LADDER_ATTACKS = [
    {"name": "identity"},
    {"name": "patch_mean", "strengths": [1.0], "params": {"released": 1}},
    {"name": "patch_mean", "strengths": [1.0], "params": {"released": 20, "public": 10}},
    {"name": "bn_adapt", "strengths": [0.0, 1.0]},
    {"name": "finetune", "strengths": [1.0], "params": {"labelled": 60, "epochs": 3, "lr": 0.003, "scope": "all"}},
    {
        "name": "finetune",
        "strengths": [1.0],
        "params": {"labelled": 60, "epochs": 3, "lr": 0.01, "scope": "first_layer"},
    },
    {"name": "augment_finetune", "strengths": [1.0], "params": {"images": 40, "epochs": 2, "noise_models": ["vit_b"]}},
    {"name": "identify", "strengths": [1.0], "params": {"candidates": ["vit_a", "vit_b", "res"], "released": 1}},
    {"name": "identify", "strengths": [1.0], "params": {"candidates": ["vit_a", "vit_b", "res"], "released": 30}},
]


@pytest.fixture(scope="module")
def ladder_run(digits_zoo, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ladder")
    path = digits_suite(
        tmp_path, digits_zoo,
        public={"name": "digits", "params": {"split": "train"}, "limit": 80},
        encoders=[{"name": "patch", "strengths": [10.0]}],
        attacks=LADDER_ATTACKS, batch_size=60, dataset={"name": "digits", "limit": 60},
    )  # fmt: skip
    suite = load_suite(path)
    return suite, Runner(suite).run().cells


def test_cells_record_tier_budget_and_compute(ladder_run):
    _, cells = ladder_run
    by = {
        (c.encoder, c.attack, c.attack_strength, c.budget_released, c.attack_param.get("scope"), c.model): c
        for c in cells
    }
    assert by[("patch", "identity", 1.0, 0, None, "vit_b")].tier == Tier.NONE
    few = by[("patch", "patch_mean", 1.0, 1, None, "vit_b")]
    many = by[("patch", "patch_mean", 1.0, 20, None, "vit_b")]
    assert (few.tier, few.budget_public, many.budget_public) == ("architecture", 80, 10)
    assert few.device == "cpu" and few.attack_seconds > 0
    tuned = by[("patch", "finetune", 1.0, 0, "all", "vit_b")]
    assert (tuned.tier, tuned.budget_labelled) == ("labelled_nes", 60)
    assert (
        by[("patch", "bn_adapt", 1.0, 60, None, "res")].attack_param["no_bn"] == "vit_a+vit_b"
    )  # ViTs: nothing to adapt
    assert by[("patch", "bn_adapt", 0.0, 0, None, "res")].budget_released == 0
    augmented = by[("patch", "augment_finetune", 1.0, 0, "all", "res")]
    # noise made with a public model's stem (noise_models) is the public-weights tier; with the adapted model's own
    # stem, the method tier
    assert (augmented.tier, augmented.budget_public, augmented.budget_labelled, augmented.attack_param["public"]) == (
        "public_weights",
        40,
        0,
        40,
    )
    assert ATTACKS.create("augment_finetune").threat.tier == Tier.METHOD
    rerun = tuned.model_copy(update={"attack_seconds": tuned.attack_seconds + 1, "device": "cuda"})
    assert rerun == tuned and rerun != tuned.model_copy(
        update={"tier": "none"}
    )  # run metadata is not part of a cell's value
    record = tuned.record()
    assert record["tier"] == "labelled_nes" and record["attack_seconds"] == tuned.attack_seconds


def test_adaptation_changes_models_not_images(ladder_run):
    _, cells = ladder_run
    by = {(c.encoder, c.attack, c.attack_strength, c.attack_param.get("scope"), c.model): c for c in cells}
    identity = by[("patch", "identity", 1.0, None, "res")]
    assert by[("patch", "bn_adapt", 0.0, None, "res")].accuracy == identity.accuracy  # strength 0: no adaptation
    assert (
        by[("patch", "bn_adapt", 1.0, None, "vit_b")].accuracy == by[("patch", "identity", 1.0, None, "vit_b")].accuracy
    )
    for cell in (by[("patch", "bn_adapt", 1.0, None, "res")], by[("patch", "finetune", 1.0, "all", "vit_b")]):
        assert cell.attacked_psnr == identity.attacked_psnr  # the release is scored as released
    # fine-tuning the whole unauthorized twin on 60 labelled NEs recovers accuracy the release took away
    assert (
        by[("patch", "finetune", 1.0, "all", "vit_b")].accuracy > by[("patch", "identity", 1.0, None, "vit_b")].accuracy
    )


def test_bn_adapt_uses_train_mode_statistics_of_the_release_only():
    from nonxfer_bench.attacks.testing import context

    ctx = context(1)
    attack = ATTACKS.create("bn_adapt")
    attack.prepare(ctx)
    res = ctx.model("res")
    adapted = attack.adapt(res, 1.0)
    assert adapted is not res and not adapted.training and not res.training
    layer = next(m for m in adapted.modules() if isinstance(m, torch.nn.BatchNorm2d))
    original = next(m for m in res.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (
        layer.momentum is None
        and int(layer.num_batches_tracked) == 1
        and not torch.equal(layer.running_mean, original.running_mean)
    )
    assert attack.adapt(ctx.model("twin"), 1.0) is ctx.model("twin")  # no BatchNorm: the model itself
    assert attack.budget(0.5).released == round(0.5 * len(ctx.released))


def test_finetune_refuses_a_suite_without_labelled_public_images():
    from nonxfer_bench.attacks.testing import context

    ctx = copy.copy(context(1))
    ctx.public_labels = None
    with pytest.raises(ValueError, match="labelled 'public' dataset"):
        ATTACKS.create("finetune").prepare(ctx)


def test_augment_finetune_never_makes_noise_with_the_authorized_stem():
    from nonxfer_bench.attacks.testing import context

    with pytest.raises(ValueError, match="white box"):
        ATTACKS.create("augment_finetune", {"noise_models": ["authorized"]}).prepare(context(1))
    with pytest.raises(
        ValueError, match="no noise model takes the release's"
    ):  # a stem of another input size cannot make noise for this release
        ATTACKS.create("augment_finetune", {"noise_models": ["twin"]}).prepare(
            replace(context(1), public_images=torch.rand(4, 1, 8, 8))
        )


@pytest.mark.slow
def test_identification_and_ladder_tables(ladder_run, tmp_path):
    suite, cells = ladder_run
    identify = {c.budget_released: c.attack_measured for c in cells if c.attack == "identify" and c.model == "vit_b"}
    assert identify[30]["chosen"] == "vit_a" and identify[30]["authorized_rank"] == 1
    assert identify[30]["ranking"].split(">")[0] == "vit_a" and len(identify[30]["ranking"].split(">")) == 3
    table = identification_table(results_frame(cells))
    assert list(table["released NEs"]) == [1, 30] and table["identified"].iloc[-1] == "1/1"
    assert (
        table["% [95% CI]"].iloc[-1] == "100.0 [20.7, 100.0]" and table["chance %"].iloc[-1] == "33.3"
    )  # Wilson's for 1 of 1; 3 candidates
    unranked = [
        c.model_copy(update={"attack_measured": {"chosen": c.attack_measured["chosen"]}})
        if c.attack == "identify"
        else c
        for c in cells
    ]
    assert set(identification_table(results_frame(unranked))["chance %"]) == {
        "n/a"
    }  # no ranking recorded: no chance level, not 100 %
    ladder, breaks = ladder_tables(results_frame(cells))
    assert set(ladder.tier) == {
        "none",
        "architecture",
        "public_weights",
        "labelled_nes",
    }  # identify is analysis, not a rung; augment_finetune with noise_models: public weights
    none_row = ladder[ladder.tier == "none"].iloc[0]
    assert none_row["unauth acc by NEs used"].startswith("0: ")  # identity and bn_adapt at strength 0 spend nothing
    low, high = (float(x) for x in none_row["best [95% CI]"].split("[")[1].rstrip("]").split(", "))
    assert low < float(none_row["best [95% CI]"].split()[0]) < high  # Wilson's interval on the 60 images
    assert len(breaks) == 1 and breaks.iloc[0]["encoding"] == "patch 10"
    text = write_leaderboard(suite.name, cells, [m.name for m in suite.models], tmp_path)[0].read_text()
    assert "## Adversary ladder" in text and "## Cheapest break" in text and "## Identification" in text


def test_two_steps_of_one_attack_that_differ_only_in_scope_stay_apart_in_the_ladder(ladder_run):
    _, cells = ladder_run
    tuned = [c for c in cells if c.attack == "finetune" and c.role.value == "unauthorized" and c.encoder != "clean"]
    scopes: dict[str, list[float]] = {}
    for c in tuned:
        scopes.setdefault(c.attack_param["scope"], []).append(c.accuracy)
    assert set(scopes) == {"all", "first_layer"} and len(set(map(tuple, scopes.values()))) == 2
    ladder, _ = ladder_tables(results_frame(cells))
    [labelled] = ladder[ladder.tier == "labelled_nes"].to_dict("records")
    best = max(sum(values) / len(values) for values in scopes.values())  # the better scope, not the mean of both
    assert labelled["best [95% CI]"].startswith(f"{100 * best:.1f} "), (labelled, scopes)
    assert labelled["best attack"] in {"finetune@1 (scope=all)", "finetune@1 (scope=first_layer)"}
