"""The learned-inverse attack: every pairs source meets the specification, fits deterministically, takes the tier and
budget of its source, and on the Fashion-MNIST zoo undoes real releases (a budget sweep through the runner)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.learned_inverse import THREATS, noise_period, periodic_mean
from nonxfer_bench.attacks.testing import (
    batch,
    check_harsher_at_strength_one,
    check_shape_dtype_and_determinism,
    context,
)
from nonxfer_bench.attacks.threat import Tier
from nonxfer_bench.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"m": 8, "steps": 5, "width": 8, "depth": 2}
SOURCES = {
    "leaked": {},
    "surrogate": {"model": "twin"},
    "architecture": {},
    "identified": {"candidates": ["authorized", "twin", "res"]},
    "own_key": {},
}


def params(source: str, **overrides) -> dict:
    return {"pairs": source, **SOURCES[source], **SMALL, **overrides}


def fitted(source: str, **overrides):
    attack = ATTACKS.create("learned_inverse", params(source, **overrides))
    attack.prepare(context(1))
    return attack


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_meets_the_attack_specification(source):
    check_shape_dtype_and_determinism("learned_inverse", params(source))
    check_harsher_at_strength_one("learned_inverse", params(source))


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_has_its_tier_and_spends_only_what_the_tier_grants(source):
    attack = fitted(source)
    threat, budget = attack.threat, attack.budget(1.0)
    assert threat is THREATS[source]
    assert (
        threat.tier
        == {
            "leaked": Tier.LABELLED_NES,
            "surrogate": Tier.PUBLIC_WEIGHTS,
            "architecture": Tier.ARCHITECTURE,
            "identified": Tier.PUBLIC_WEIGHTS,
            "own_key": Tier.WHITE_BOX,
        }[source]
    )
    assert (
        (budget.released > 0) == threat.released
        and (budget.public > 0) == threat.public
        and (budget.labelled > 0) == threat.labelled
    )
    kind, count = {"leaked": ("labelled", 8), "identified": ("public", len(context(1).public_images))}.get(
        source, ("public", 8)
    )
    assert getattr(budget, kind) == count
    assert attack.measured(1.0)["chosen"] == {"surrogate": "twin", "architecture": "authorized-random0"}.get(
        source, "authorized"
    )


def test_fitting_is_deterministic_and_the_seed_changes_it_without_touching_the_global_random_state():
    x = batch(1)
    before = torch.get_rng_state()
    first, again, other = fitted("leaked"), fitted("leaked"), fitted("leaked", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    out = first(x, 1.0, torch.Generator())
    assert torch.equal(out, again(x, 1.0, torch.Generator()))
    assert not torch.equal(out, other(x, 1.0, torch.Generator()))


def test_strength_blends_the_release_with_the_inverse_output():
    attack, x = fitted("leaked"), batch(1) * 3 - 1  # unclipped, as the reference encoder releases
    inverse = attack(x, 1.0, torch.Generator())
    assert torch.equal(attack(x, 0.0, torch.Generator()), x)
    assert torch.allclose(attack(x, 0.5, torch.Generator()), (x + inverse) / 2, atol=1e-6)
    assert 0 <= float(inverse.min()) and float(inverse.max()) <= 1  # an estimate of clean images


def test_own_key_pairs_are_made_under_the_attackers_key_and_leaked_pairs_under_the_owners():
    keys = []
    base = context(1)

    def encode(images, model, key=None):
        keys.append((model.name, key))
        return base.encode(images, model, key=key)

    for source in ("leaked", "own_key"):
        ATTACKS.create("learned_inverse", params(source)).prepare(replace(base, encode=encode))
    assert keys[0] == ("authorized", None)
    assert keys[1][0] == "authorized" and keys[1][1]
    leaked = base.encode(base.public_images[:8], base.authorized)
    assert not torch.equal(leaked, base.encode(base.public_images[:8], base.authorized, key=keys[1][1]))


@pytest.mark.parametrize(
    "bad",
    [
        {"pairs": "surrogate"},  # which public model?
        {"pairs": "leaked", "model": "twin"},
        {"pairs": "identified"},
        {"pairs": "stolen"},
        {"pairs": "leaked", "m": 0},
        {"pairs": "leaked", "steps": 10**9},
        {"pairs": "leaked", "lr": float("inf")},
        {"pairs": "leaked", "width": 10**6},
    ],
)
def test_params_are_checked(bad):
    with pytest.raises(ValidationError):
        ATTACKS.get("learned_inverse").Params(**bad)


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ("surrogate", {"model": "nobody"}, "params.model 'nobody' is not a model"),
        ("surrogate", {"model": "authorized"}, "is the authorized model"),
        ("identified", {"candidates": ["authorized", "nobody"]}, "candidate 'nobody' is not a model"),
    ],
)
def test_a_pairs_model_outside_the_zoo_or_the_authorized_model_as_surrogate_is_a_user_error(source, overrides, message):
    with pytest.raises(UserError, match=message):
        ATTACKS.create("learned_inverse", params(source, **overrides)).prepare(context(1))


def test_the_noise_period_is_found_where_one_vector_repeats_over_the_tiles_and_not_for_independent_tiles():
    generator = torch.Generator().manual_seed(0)
    tile = torch.randn(6, 1, 7, 7, generator=generator)
    periodic = tile.repeat(1, 1, 4, 4)  # the reference recipe on a 7x7/7 stem: one vector in every tile
    assert noise_period(periodic, 32) == 7
    assert torch.allclose(periodic_mean(periodic, 7), periodic)
    assert noise_period(torch.randn(6, 1, 28, 28, generator=generator), 32) == 0  # the patch encoder: a draw per tile
    assert noise_period(periodic, 6) == 0  # looks no further than max_period
    assert noise_period(torch.zeros(6, 1, 28, 28), 32) == 0  # the clean encoding: no noise


# --- a real effect: the Fashion-MNIST zoo and images, through the runner --------------------------------------------


@pytest.fixture(scope="module")
def sweep_cells(tmp_path_factory):
    """vit_a's reference 15 and patch 10 releases of 200 Fashion-MNIST test images, attacked by the learned inverse on
    16, 64 and 256 leaked pairs (the public training split's first images)."""
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite

    folder = tmp_path_factory.mktemp("inverse")
    inverse = {"name": "learned_inverse", "strengths": [1.0]}
    suite = {
        "name": "inverse-sweep",
        "dataset": {"name": "fashion_mnist", "params": {"split": "test"}, "limit": 200},
        "public": {"name": "fashion_mnist", "params": {"split": "train"}, "limit": 256},
        "zoo": str(ROOT / "suites/zoo/fashion.yaml"),
        "authorized": ["vit_a"],
        "encoders": [{"name": "reference", "strengths": [15.0]}, {"name": "patch", "strengths": [10.0]}],
        "attacks": [{"name": "identity"}] + [inverse | {"params": {"pairs": "leaked", "m": m}} for m in (16, 64, 256)],
        "batch_size": 200,
        "threads": 1,
        "bounds": False,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return Runner(load_suite(path)).run().cells


def unauthorized_mean(cells, encoder: str, m: int | None) -> float:
    chosen = [
        c
        for c in cells
        if c.encoder == encoder
        and c.model != "vit_a"
        and (c.attack == "identity" if m is None else c.attack_param.get("m") == m)
    ]
    assert len(chosen) == 5
    return sum(c.accuracy for c in chosen) / len(chosen)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["reference", "patch"])
def test_leaked_pairs_undo_the_release_and_more_pairs_do_not_do_worse(sweep_cells, encoder):
    """No attack leaves the five unauthorized models near chance on these releases; 16 leaked pairs already lift
    their mean accuracy by more than 20 points, and each step of the sweep keeps or raises it (2 points of
    tolerance: 200 images x 5 models, one training run per m)."""
    none = unauthorized_mean(sweep_cells, encoder, None)
    means = [unauthorized_mean(sweep_cells, encoder, m) for m in (16, 64, 256)]
    print(f"{encoder}: unauthorized mean {none:.3f} without attack, {means} with 16, 64, 256 leaked pairs")
    assert means[0] > none + 0.2, (none, means)
    assert means[1] >= means[0] - 0.02 and means[2] >= means[1] - 0.02, means
    leaked = [c for c in sweep_cells if c.encoder == encoder and c.attack == "learned_inverse"]
    assert {c.tier for c in leaked} == {"labelled_nes"} and {c.budget_labelled for c in leaked} == {16, 64, 256}
    assert {c.attack_measured["period"] for c in leaked} == (
        {7} if encoder == "reference" else {0}
    )  # vit_a's 7x7/7 stem
