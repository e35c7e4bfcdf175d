"""Where each attack step runs in a tiered protocol run (:func:`nonxfer_bench.analysis.tiers.step_stages`)."""

from __future__ import annotations

import pytest

from nonxfer_bench.analysis.tiers import ORDER, step_stages
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.protocol import VerdictSpec
from tests.helpers import digits_suite

ATTACKS = [
    {"name": "identity"},
    {"name": "identify", "params": {"candidates": ["vit_a", "vit_b", "res"], "released": 5}},
    {"name": "blur", "strengths": [0.5]},
    {"name": "patch_wiener", "strengths": [1.0]},
]


def stages(tmp_path, zoo, spec: VerdictSpec) -> dict[str, int]:
    plan = plan_suite(load_suite(digits_suite(tmp_path, zoo, attacks=ATTACKS)))
    return {step.spec.name: stage for step, stage in step_stages(plan, spec).items()}


@pytest.mark.slow
def test_a_measuring_attack_runs_with_no_attack_whatever_its_tier(tmp_path, digits_zoo):
    """``identify`` (public-weights tier) breaks nothing: a release broken at a lower tier is still asked which model
    it was made for (``attack`` puts it on the protection card). In ne-v1, no attack shares the none tier's stage."""
    found = stages(tmp_path, digits_zoo, VerdictSpec())
    assert found == {"identity": 0, "identify": 0, "blur": 0, "patch_wiener": ORDER.index("architecture")}


@pytest.mark.slow
def test_with_a_no_attack_stage_the_none_tiers_attacks_wait_for_it(tmp_path, digits_zoo):
    """ne-v2: no attack (and what only measures) is stage 0; every tier moves one stage up."""
    found = stages(tmp_path, digits_zoo, VerdictSpec(no_attack_stage=True))
    assert found == {"identity": 0, "identify": 0, "blur": 1, "patch_wiener": 1 + ORDER.index("architecture")}
