"""A protocol file fixes the attack ensemble per knowledge tier; a suite that names it runs exactly that ensemble."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nonxfer_bench.analysis.tiers import tiered_plan
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_protocol, load_suite
from tests.helpers import digits_suite

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "suites" / "protocols" / "ne-v1.yaml"


def protocol_file(folder: Path, verdict: dict | None = None, **tiers) -> Path:
    path = folder / "protocol.yaml"
    protocol = {"name": "p-test", "version": 1, "full": tiers, "fast": tiers}
    protocol |= {"verdict": verdict} if verdict else {}
    path.write_text(yaml.safe_dump(protocol))
    return path


@pytest.mark.parametrize("version", ["ne-v1", "ne-v2"])
def test_the_shipped_protocol_lists_every_verdict_tier_in_both_ensembles(version):
    protocol = load_protocol(PROTOCOL.with_name(f"{version}.yaml"))
    assert protocol.name == version
    for ensemble in (protocol.full, protocol.fast):
        assert set(ensemble) == {"none", "method", "architecture", "public_weights", "labelled_nes", "white_box"}


def test_version_2_changes_only_when_a_run_stops_attacking_a_release():
    first, second = load_protocol(PROTOCOL), load_protocol(PROTOCOL.with_name("ne-v2.yaml"))
    assert (first.full, first.fast) == (second.full, second.fast)
    changed = {key for key, value in second.verdict if getattr(first.verdict, key) != value}
    assert changed == {"no_attack_stage", "stop"} and second.verdict.stop == "unheld"


def test_a_suite_runs_the_protocols_ensemble_with_placeholders_expanded(tmp_path, digits_zoo):
    path = protocol_file(
        tmp_path, none=[{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
        public_weights=[{"name": "surrogate_projection", "params": {"candidates": "@public"}}],
    )  # fmt: skip
    suite = load_suite(digits_suite(tmp_path, digits_zoo, protocol={"file": str(path)}, attacks=[{"name": "identity"}]))
    names = [(a.name, a.strengths) for a in suite.attacks]
    assert names == [("identity", [1.0]), ("blur", [0.5]), ("surrogate_projection", [1.0])]  # the suite's identity once
    surrogate = suite.attacks[-1]
    assert surrogate.params["candidates"] == ["vit_b", "res"]  # every zoo model but the authorized vit_a
    assert suite.protocol.file == path


def test_an_attack_listed_under_another_tier_is_one_line_naming_the_key(tmp_path, digits_zoo):
    path = protocol_file(tmp_path, none=[{"name": "identity"}], method=[{"name": "blur"}])
    with pytest.raises(
        UserError,
        match=r"protocol.yaml: key 'full.method\[0\]': blur with these parameters is a 'none' attack, listed "
        r"under 'method'",
    ):
        load_suite(digits_suite(tmp_path, digits_zoo, protocol={"file": str(path)}))


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ({"none": []}, "tier 'none' lists no attack"),
        ({"nothing": [{"name": "identity"}]}, "nothing"),
        ({"none": [{"name": "no_such_attack"}]}, "unknown attack 'no_such_attack'"),
    ],
)
def test_a_bad_protocol_is_one_line(tmp_path, digits_zoo, tiers, expected):
    path = protocol_file(tmp_path, **tiers)
    with pytest.raises(UserError, match=expected):
        load_suite(digits_suite(tmp_path, digits_zoo, protocol={"file": str(path)}))


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        ({"no_attack_stage": "yes"}, r"verdict.no_attack_stage.*valid boolean"),
        ({"stop": "Unheld"}, r"verdict.stop.*'broken' or 'unheld'"),
    ],
)
def test_a_protocol_whose_stop_rule_is_not_exactly_valid_is_one_line(tmp_path, digits_zoo, verdict, expected):
    """A stop rule decides which attacks run at all: "yes" for true, or a misspelt rule, is refused, not guessed."""
    path = protocol_file(tmp_path, verdict=verdict, none=[{"name": "identity"}])
    with pytest.raises(UserError, match=expected):
        load_suite(digits_suite(tmp_path, digits_zoo, protocol={"file": str(path)}))


def test_a_missing_protocol_file_is_one_line(tmp_path, digits_zoo):
    with pytest.raises(UserError, match="protocol file not found"):
        load_suite(digits_suite(tmp_path, digits_zoo, protocol={"file": "nowhere.yaml"}))


def test_a_suite_without_attacks_needs_a_protocol(tmp_path, digits_zoo):
    with pytest.raises(UserError, match="lists no attack and there is no 'protocol'"):
        load_suite(digits_suite(tmp_path, digits_zoo, attacks=[]))


SUBSPACE = {"name": "subspace_patch", "strengths": [0.75], "params": {"max_dims": 4, "released": 40, "public": 60}}


def run_protocol(tmp_path: Path, zoo: Path, encoders: list[dict], verdict: dict | None = None, **tiers) -> tuple:
    """A 60-image digits suite of ``encoders`` run under a protocol of blur (tier none) and subspace estimation
    (architecture), plus ``tiers``; returns (protocol file, suite file, the run's cells)."""
    from nonxfer_bench.cells.store import CellStore
    from nonxfer_bench.cli import main

    none = [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}]
    path = protocol_file(tmp_path, verdict=verdict, none=none, architecture=[SUBSPACE], **tiers)
    suite_file = digits_suite(
        tmp_path,
        zoo,
        protocol={"file": str(path)},
        attacks=[],
        public={"name": "digits", "params": {"split": "train"}, "limit": 60},
        dataset={"name": "digits", "params": {"split": "test"}, "limit": 60},
        encoders=encoders,
    )
    assert main(["run", str(suite_file), "--no-tracking"]) == 0
    store = CellStore(tmp_path / "runs" / "digits" / "cells.jsonl", writable=False)
    return path, suite_file, list(store.cells.values())


@pytest.mark.slow
def test_a_protocol_run_attacks_each_release_up_to_the_tier_that_breaks_it(tmp_path, digits_zoo):
    """AutoAttack's rule for a release: a 40 dB white-noise release is broken with no attack (the other models read it),
    so no higher tier's attack runs on it; a 0 dB patch release holds at tier none, so the architecture tier attacks it.
    The leaderboard says `not needed` where a lower tier broke the release, and reading the cells back finds them
    whole."""
    from nonxfer_bench.cli import main

    encoders = [{"name": "gaussian", "strengths": [40.0]}, {"name": "patch", "strengths": [0.0]}]
    path, suite_file, cells = run_protocol(tmp_path, digits_zoo, encoders, white_box=[{"name": "oracle_projection"}])
    attacks = {(c.encoder, c.attack) for c in cells}
    assert (
        ("gaussian", "blur") in attacks
        and ("gaussian", "subspace_patch") not in attacks
        and ("gaussian", "oracle_projection") not in attacks
    )
    assert ("patch", "subspace_patch") in attacks
    board = (tmp_path / "results" / "digits" / "leaderboard.md").read_text()
    assert "not needed: broken at none" in board and "partial" not in board
    assert main(["leaderboard", str(suite_file), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "cells.csv").read_text() == (tmp_path / "results" / "digits" / "cells.csv").read_text()
    # a run resumed before the clean images were scored knows no break target: no release goes past tier none yet
    unscored = {c.key: c for c in cells if c.encoder != "clean"}
    cut = tiered_plan(plan_suite(load_suite(suite_file)), unscored, load_protocol(path).verdict)
    steps = {step.spec.name for group in cut if group.encoder.name != "clean" for step, _ in group.cells}
    assert steps == {"identity", "blur"}


@pytest.mark.slow
def test_a_protocol_that_stops_where_a_release_is_not_held_attacks_only_the_releases_that_hold(tmp_path, digits_zoo):
    """ne-v2's rule: every release is scored with no attack first. A 40 dB white-noise release is broken there and a
    0 dB one, which ruins the authorized model as much as the others, is not held there: neither faces any attack.
    A 0 dB patch release holds with no attack, so the none tier's blur and then the architecture tier attack it."""
    encoders = [{"name": "gaussian", "strengths": [40.0, 0.0]}, {"name": "patch", "strengths": [0.0]}]
    _, _, cells = run_protocol(tmp_path, digits_zoo, encoders, verdict={"no_attack_stage": True, "stop": "unheld"})
    attacks = {(c.encoder, c.strength): set() for c in cells}
    for c in cells:
        attacks[c.encoder, c.strength].add(c.attack)
    assert attacks[("gaussian", 40.0)] == attacks[("gaussian", 0.0)] == {"identity"}
    assert attacks[("patch", 0.0)] == {"identity", "blur", "subspace_patch"}
    board = (tmp_path / "results" / "digits" / "leaderboard.md").read_text()
    assert "not needed: broken at none" in board and "not needed: not held at none" in board
