"""The evaluation's sanity checks fire on the weakness each names, and stay quiet on a sound evaluation."""

from __future__ import annotations

import numpy as np

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.sanity import budget_sweeps, no_effect, sanity_findings, tier_order, white_box
from tests.rendering.test_ranking import CLEAN, N, cell, release

SOUND = {("identity", "a"): 0.9, ("identity", "b"): 0.1, ("blur", "a"): 0.8, ("blur", "b"): 0.3}


def cells_with(extra: list, rates: dict = SOUND) -> list:
    return release("clean", 0.0, CLEAN) + release("patch", 20.0, rates) + extra


def flags(rate: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < rate


def test_a_sound_evaluation_fires_no_check():
    assert sanity_findings(results_frame(cells_with([]))) == []


def test_a_higher_tier_weaker_than_a_lower_one_is_named():
    weak = [
        cell("patch", 20.0, "subspace", m, flags(r, i), tier="architecture")
        for i, (m, r) in enumerate((("a", 0.9), ("b", 0.12)))
    ]
    found = tier_order(results_frame(cells_with(weak)), "accuracy")
    assert (
        len(found) == 1
        and "architecture tier's best, subspace 0.5 (b)" in found[0].text
        and "none tier's blur 0.5 (b)" in found[0].text
    )


def test_a_budget_sweep_that_does_worse_with_more_is_named():
    sweep = [
        cell("patch", 20.0, "patch_wiener", m, flags(r, i), tier="architecture", budget_released=budget)
        for i, (m, r, budget) in enumerate((("a", 0.9, 10), ("b", 0.7, 10), ("a", 0.9, 100), ("b", 0.3, 100)))
    ]
    found = budget_sweeps(results_frame(cells_with(sweep)), "accuracy")
    assert len(found) == 1 and "patch_wiener 0.5 with the larger budget released=100" in found[0].text
    rising = [
        cell("patch", 20.0, "patch_wiener", m, flags(r, i), tier="architecture", budget_released=budget)
        for i, (m, r, budget) in enumerate((("a", 0.9, 10), ("b", 0.3, 10), ("a", 0.9, 100), ("b", 0.7, 100)))
    ]
    assert budget_sweeps(results_frame(cells_with(rising)), "accuracy") == []


def test_white_box_weaker_than_a_weight_free_attack_is_named():
    oracle = [
        cell("patch", 20.0, "oracle", m, flags(r, 10 + i), tier="white_box")
        for i, (m, r) in enumerate((("a", 0.9), ("b", 0.12)))
    ]
    found = white_box(results_frame(cells_with(oracle)), "accuracy")
    assert len(found) == 1 and "white box's best, oracle 0.5 (b)" in found[0].text


def test_an_attack_that_changes_nothing_is_named():
    base = cells_with([])
    copies = [
        c.model_copy(update={"attack": "noop", "baseline": False, "key": c.key + "noop", "attack_strength": 0.5})
        for c in base
        if c.baseline
    ]
    assert [f.text.split(":")[0] for f in no_effect(results_frame(base + copies))] == ["noop"]
    assert no_effect(results_frame(base)) == []
