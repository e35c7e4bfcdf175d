"""What the protection card says about the tiers a protocol run did not attack, and about a release that holds no
protection although nothing broke it."""

from __future__ import annotations

from pathlib import Path

from nonxfer_bench.app.attack import attack_evidence
from nonxfer_bench.owner.card import not_needed_reason
from nonxfer_bench.schema.protocol import Protocol, VerdictSpec
from tests.rendering.test_ranking import CLEAN, STRONG, release

RUINED = {("identity", "a"): 0.2, ("identity", "b"): 0.5, ("identity", "c"): 0.4}  # a's own model does worst
BROKEN = {("identity", "a"): 0.9, ("identity", "b"): 0.88, ("identity", "c"): 0.2}  # b reads it with no attack
TIERS = {"none": [{"name": "identity"}], "method": [{"name": "blur"}]}


def evidence(rates: dict, spec: VerdictSpec) -> dict:
    protocol = Protocol(name="p-test", version=2, full=TIERS, fast=TIERS, verdict=spec)
    cells = release("clean", 0.0, CLEAN) + release("stored_release", 0.0, rates)
    folder = Path("release")
    return attack_evidence(cells, protocol, "full", folder / "attack" / "leaderboard.md", folder)


def test_a_release_that_ruins_its_own_model_is_not_held_and_its_card_never_says_it_holds():
    found = evidence(RUINED, VerdictSpec(no_attack_stage=True, stop="unheld"))
    assert found["break"] == "none found: no protection shown through none"
    assert found["settled"] == "not held at none" and found["not_needed"] == [
        "method",
        "architecture",
        "public_weights",
        "labelled_nes",
    ]
    assert not_needed_reason(found) == (
        "no protection shown at none, and an attacker who knows more can only lower the gap"
    )


def test_under_ne_v1_the_same_release_is_not_settled_and_its_higher_tiers_are_not_run():
    found = evidence(RUINED, VerdictSpec())
    assert found["settled"] is None and found["not_needed"] == [] and "method" in found["not_run"]
    assert found["break"].startswith("none found: no protection shown through none")


def test_tiers_above_a_break_were_not_needed_because_an_attacker_who_knows_less_breaks_it():
    found = evidence(BROKEN, VerdictSpec(no_attack_stage=True, stop="unheld"))
    assert found["settled"] == "broken at none" and found["break"] == "broken at none: no attack (b)"
    assert not_needed_reason(found) == "an attacker who knows less already breaks it"


def test_a_release_that_holds_says_so_and_is_not_settled():
    found = evidence(STRONG, VerdictSpec(no_attack_stage=True, stop="unheld"))
    assert found["settled"] is None and found["break"].startswith("none found: holds through none")
