"""Where each attack step runs in a tiered protocol run (:func:`nonxfer_bench.analysis.tiers.step_tiers`)."""

from __future__ import annotations

import pytest

from nonxfer_bench.analysis.tiers import ORDER, step_tiers
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_suite
from tests.helpers import digits_suite


@pytest.mark.slow
def test_a_measuring_attack_runs_with_no_attack_whatever_its_tier(tmp_path, digits_zoo):
    """``identify`` (public-weights tier) breaks nothing: a release broken at a lower tier is still asked which model
    it was made for (``attack`` puts it on the protection card)."""
    attacks = [
        {"name": "identity"},
        {"name": "identify", "params": {"candidates": ["vit_a", "vit_b", "res"], "released": 5}},
        {"name": "patch_wiener", "strengths": [1.0]},
    ]
    plan = plan_suite(load_suite(digits_suite(tmp_path, digits_zoo, attacks=attacks)))
    tiers = {step.spec.name: tier for step, tier in step_tiers(plan).items()}
    assert tiers == {"identity": 0, "identify": 0, "patch_wiener": ORDER.index("architecture")}
