"""The leaderboard opens with what was run and its ranking, the protocol verdict, read back from the written
Markdown."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from nonxfer_bench.cells.cell import Cell, pack_bits
from nonxfer_bench.core.version import code_version
from nonxfer_bench.metrics.statistics import paired_gain
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.schema.protocol import Protocol, VerdictSpec

N = 400
GAP = re.compile(r"^([+-]\d+\.\d)(?: \[([+-]\d+\.\d), ([+-]\d+\.\d)\])?$")


def cell(encoder: str, strength: float, attack: str, model: str, correct: np.ndarray, seed: int = 0, **extra) -> Cell:
    """A schema-2 cell of authorized model ``a`` with its per-image outcomes (``correct``)."""
    role = "authorized" if model == "a" else ("control" if model == "ctrl" else "unauthorized")
    bits = pack_bits(correct)
    return Cell(
        key=f"{encoder}{strength}{attack}{model}{seed}{extra}",
        suite="s",
        group=f"{encoder}{strength}{seed}",
        authorized="a",
        encoder=encoder,
        strength=strength,
        seed=seed,
        attack=attack,
        attack_strength=1.0 if attack == "identity" else 0.5,
        baseline=attack == "identity",
        model=model,
        role=role,
        n=len(correct),
        accuracy=float(correct.mean()),
        agreement=float(correct.mean()),
        encoded_psnr=None if encoder == "clean" else strength,
        stored_psnr=None if encoder == "clean" else strength,
        attacked_ssim=1.0 if encoder == "clean" else strength / 40,
        device="cpu",
        tier=extra.pop("tier", "none"),
        outcomes={"images": len(correct), "ids": "same-images", "correct": [bits], "agree": [bits]},
        **extra,
    )


def release(encoder: str, strength: float, rates: dict[tuple[str, str], float], seed: int = 0, **extra) -> list[Cell]:
    """Cells of one release: ``rates[(attack, model)]`` is the share of images the model gets right."""
    rng = np.random.default_rng([len(encoder), int(strength), seed])
    return [
        cell(encoder, strength, attack, model, rng.random(N) < rate, seed, **extra)
        for (attack, model), rate in rates.items()
    ]


STRONG = {("identity", "a"): 0.9, ("identity", "b"): 0.1, ("identity", "c"): 0.15, ("identity", "ctrl"): 0.95,
          ("blur", "a"): 0.6, ("blur", "b"): 0.3, ("blur", "c"): 0.2, ("blur", "ctrl"): 0.95}  # fmt: skip
WEAK = {("identity", "a"): 0.8, ("identity", "b"): 0.7, ("identity", "c"): 0.4, ("identity", "ctrl"): 0.9,
        ("blur", "a"): 0.7, ("blur", "b"): 0.5, ("blur", "c"): 0.3, ("blur", "ctrl"): 0.9}  # fmt: skip
CLEAN = {("identity", m): 0.9 for m in ("a", "b", "c", "ctrl")} | {("blur", m): 0.85 for m in ("a", "b", "c", "ctrl")}
MODELS = ["a", "b", "c", "ctrl"]


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Every table of a leaderboard.md by its section heading, as rows of {header: cell}."""
    found = {}
    for section in text.split("\n## ")[1:]:
        heading, lines = section.splitlines()[0], [line for line in section.splitlines() if line.startswith("|")]
        if not lines:  # a section of sentences (sanity checks)
            continue
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        found[heading] = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return found


def gap(text: str) -> tuple[float, float | None, float | None]:
    match = GAP.match(text)
    assert match, f"{text!r} is not '+x [+lo, +hi]'"
    return tuple(None if g is None else float(g) for g in match.groups())


@pytest.fixture
def cells() -> list[Cell]:
    return release("clean", 0.0, CLEAN) + release("patch", 10.0, WEAK) + release("patch", 20.0, STRONG)


def test_the_ranking_is_the_first_table_and_ranks_releases_by_their_protection_gap(cells, tmp_path):
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    assert text.index("## Protocol verdict") < text.index("## Sanity checks") < text.index("## NE effect")
    assert "a gap near 0 or negative means no protection" in text
    ranking = tables(text)["Protocol verdict"]
    assert [row["encoding"] for row in ranking] == ["patch 20", "patch 10"]  # clean is not a release
    assert [row["rank"] for row in ranking] == ["1", "2"]
    gaps = [gap(row["gap: none"]) for row in ranking]
    assert gaps[0][0] > gaps[1][0]
    for estimate, lo, hi in gaps:
        assert lo <= estimate <= hi


def split(spec: VerdictSpec = VerdictSpec()) -> tuple[np.ndarray, np.ndarray]:
    """The verdict's tuning and report images of N images (one seeded permutation)."""
    order = np.random.default_rng(spec.seed).permutation(N)
    return order[: round(spec.tuning * N)], order[round(spec.tuning * N) :]


def test_the_gap_is_authorized_minus_the_best_unauthorized_chosen_on_tuning_images_and_reported_on_the_rest(
    cells, tmp_path
):
    tuning, report = split()
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    rows = {row["encoding"]: row for row in tables(text)["Protocol verdict"]}
    for encoding, row in rows.items():
        strength = float(encoding.split()[1])
        mine = [c for c in cells if (c.encoder, c.strength) == ("patch", strength)]
        auth = next(c for c in mine if c.baseline and c.model == "a").outcomes.correct_bits().astype(float)
        unauthorized = {
            (c.attack, c.model): c.outcomes.correct_bits().astype(float) for c in mine if c.role == "unauthorized"
        }
        chosen = max(
            unauthorized, key=lambda pair: (unauthorized[pair][tuning].mean(), pair[0] == "identity")
        )  # the control never counts
        assert row["by attack"] == f"{'no attack' if chosen[0] == 'identity' else 'blur 0.5'} ({chosen[1]})"
        best = unauthorized[chosen][report]
        expected = paired_gain(best[None], auth[report][None])
        assert gap(row["gap: none"]) == tuple(round(100 * v, 1) for v in (expected.estimate, expected.lo, expected.hi))
        assert row["n"] == f"{len(report)} (+{len(tuning)} tuning)"
        assert row["PSNR dB"] == f"{strength:.1f}" and row["SSIM"] == f"{strength / 40:.3f}"
        assert row["gap: architecture"] == "not run" and row["white box (not ranked)"] == "not run"
    assert (
        "**Not a protocol verdict**: no attack of tiers method, architecture, public weights, labelled NEs ran" in text
    )


def tiered(tiers: dict[str, str], rates: dict[tuple[str, str], float]) -> list[Cell]:
    """A clean and a patch-20 release whose attacks (by name) have the given knowledge tiers."""
    base = release("clean", 0.0, CLEAN) + release("patch", 20.0, rates)
    return [c.model_copy(update={"tier": tiers.get(c.attack, "none")}) for c in base]


def test_tiers_accumulate_and_white_box_is_never_ranked(tmp_path):
    rates = STRONG | {
        ("subspace", "a"): 0.85,
        ("subspace", "b"): 0.88,
        ("subspace", "c"): 0.3,
        ("oracle", "a"): 0.9,
        ("oracle", "b"): 0.9,
        ("oracle", "c"): 0.9,
    }
    cells = tiered({"subspace": "architecture", "oracle": "white_box"}, rates)
    row = tables(write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text())["Protocol verdict"][0]
    none, architecture = gap(row["gap: none"]), gap(row["gap: architecture"].removesuffix(" broken"))
    assert architecture[0] < none[0]  # the architecture tier holds every attack of the tiers below, and more
    assert row["gap: method"] == "not run" and "broken" in row["gap: architecture"]
    assert gap(row["white box (not ranked)"].removesuffix(" broken"))[0] <= architecture[0]
    assert row["by attack"].startswith(
        "subspace 0.5 (b)"
    )  # the ranking gap is the highest verdict tier's, never white box's
    assert row["verdict"] == "broken at architecture: subspace 0.5 (b)"


def test_a_release_holds_only_where_its_gap_is_above_0_and_one_that_ruins_its_own_model_shows_no_protection(tmp_path):
    ruined = {
        ("identity", "a"): 0.2,
        ("identity", "b"): 0.5,
        ("identity", "c"): 0.4,
        ("identity", "ctrl"): 0.95,
    }  # b < 90 % of clean
    cells = release("clean", 0.0, CLEAN) + release("patch", 10.0, ruined) + release("patch", 20.0, STRONG)
    rows = {
        row["encoding"]: row
        for row in tables(write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text())["Protocol verdict"]
    }
    assert rows["patch 20"]["verdict"].startswith("holds through none") and gap(rows["patch 20"]["gap: none"])[1] > 0
    assert (
        rows["patch 10"]["verdict"].startswith("no protection shown through none")
        and gap(rows["patch 10"]["gap: none"])[0] < 0
    )
    assert "broken" not in rows["patch 10"]["gap: none"]


def test_a_protocol_that_stops_where_a_release_is_not_held_says_why_its_higher_tiers_did_not_run(tmp_path):
    """ne-v2's rule: a release that ruins its own model (no gap with no attack) is not held at none, so its higher
    tiers are `not needed`, as they are above a break, and say which; a release that holds stays `not run` where
    nothing ran. The same cells under ne-v1's rule leave the unheld release's tiers `not run`."""
    ruined = {("identity", "a"): 0.2, ("identity", "b"): 0.5, ("identity", "c"): 0.4, ("identity", "ctrl"): 0.95}
    cells = release("clean", 0.0, CLEAN) + release("patch", 10.0, ruined) + release("patch", 20.0, STRONG)
    tiers = {"none": [{"name": "identity"}], "method": [{"name": "blur"}]}

    def board(spec: VerdictSpec, folder: str) -> tuple[str, dict[str, dict[str, str]]]:
        protocol = Protocol(name="p-test", version=2, full=tiers, fast=tiers, verdict=spec)
        text = write_leaderboard("s", cells, MODELS, tmp_path / folder, protocol=protocol, ensemble="full")[0]
        text = text.read_text()
        return text, {row["encoding"]: row for row in tables(text)["Protocol verdict"]}

    text, rows = board(VerdictSpec(no_attack_stage=True, stop="unheld"), "v2")
    assert rows["patch 10"]["verdict"] == "no protection shown through none"
    unheld = rows["patch 10"]
    assert unheld["gap: method"] == unheld["white box (not ranked)"] == "not needed: not held at none"
    assert rows["patch 20"]["gap: method"] == "not run"  # it held at none and nothing of method ran
    assert "or the release did not hold there (`not held`: no gap above 0 beyond its interval" in text
    text, rows = board(VerdictSpec(), "v1")
    assert rows["patch 10"]["gap: method"] == "not run" and "not held" not in text


def test_a_release_broken_at_a_lower_tier_ranks_below_one_that_held_it_whatever_its_gap(tmp_path):
    """As AutoAttack ranks defences: what breaks a release first, its gap second. The broken release's gap is larger."""
    broken = {
        ("identity", "a"): 1.0,
        ("identity", "b"): 0.83,
        ("identity", "c"): 0.1,
        ("identity", "ctrl"): 0.95,
    }  # b: 83 % >= 0.9 x 90 %
    held = {("identity", "a"): 0.4, ("identity", "b"): 0.28, ("identity", "c"): 0.2, ("identity", "ctrl"): 0.95}
    cells = release("clean", 0.0, CLEAN) + release("patch", 10.0, broken) + release("patch", 20.0, held)
    rows = tables(write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text())["Protocol verdict"]
    assert [(row["encoding"], row["verdict"].split(" (")[0].split(":")[0]) for row in rows] == [
        ("patch 20", "holds through none"),
        ("patch 10", "broken at none"),
    ]
    assert gap(rows[1]["gap: none"].removesuffix(" broken"))[0] > gap(rows[0]["gap: none"])[0]
    assert rows[0]["tied with"] == rows[1]["tied with"] == ""  # held different tiers: never tied


@pytest.mark.slow
def test_the_best_of_many_attacks_is_reported_on_images_it_was_not_chosen_on(tmp_path):
    """Fifty attacks that each leave model b right on half the images by chance: the best on the same images looks far
    better than 50 %; chosen on the tuning images and reported on the others, it is 50 % within its interval."""
    rng = np.random.default_rng(7)
    cells = release("clean", 0.0, CLEAN) + release("patch", 20.0, {("identity", "a"): 0.9, ("identity", "b"): 0.1})
    cells += [
        cell("patch", 20.0, f"noise{i:02d}", model, rng.random(N) < rate)
        for i in range(50)
        for model, rate in (("a", 0.9), ("b", 0.5))
    ]
    text = write_leaderboard("s", cells, ["a", "b"], tmp_path)[0].read_text()
    row = tables(text)["Protocol verdict"][0]
    in_sample = max(
        c.accuracy for c in cells if c.encoder == "patch" and c.attack.startswith("noise") and c.model == "b"
    )
    best, lo, hi = (float(v) for v in re.match(r"(\S+) \[(\S+), (\S+)\]", row["best unauth acc"]).groups())
    assert in_sample > 0.55 and lo <= 50.0 <= hi and best < 100 * in_sample


def test_with_several_seeds_the_outcomes_are_their_mean_and_the_gap_shows_their_spread(tmp_path):
    cells = [c for seed in (0, 1) for c in release("clean", 0.0, CLEAN, seed) + release("patch", 20.0, STRONG, seed)]
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    row = tables(text)["Protocol verdict"][0]
    _, report = split()
    model = row["by attack"].split("(")[1].rstrip(")")
    attack = "identity" if row["by attack"].startswith("no attack") else "blur"
    per_seed = []
    for seed in (0, 1):
        auth = next(c for c in cells if c.encoder == "patch" and c.baseline and c.model == "a" and c.seed == seed)
        best = next(
            c for c in cells if c.encoder == "patch" and c.attack == attack and c.model == model and c.seed == seed
        )
        per_seed.append(auth.outcomes.correct_bits()[report].mean() - best.outcomes.correct_bits()[report].mean())
    assert gap(row["gap: none"])[0] == round(100 * np.mean(per_seed), 1)
    assert row["seeds"] == "2" and row["gap seed sd"] == f"{100 * np.std(per_seed, ddof=1):.1f}"
    assert "2 seeds (0, 1)" in text


@pytest.mark.parametrize(
    "measured", ["ratio", "clean_energy_in_vn"]
)  # the subspace estimator's variance ratio, the oracle's energy share
def test_what_a_fitted_attack_measured_differs_between_seeds_but_does_not_split_its_step(tmp_path, measured):
    cells = [c for seed in (0, 1) for c in release("clean", 0.0, CLEAN, seed) + release("patch", 20.0, STRONG, seed)]
    fitted = [
        c.model_copy(update={"attack_param": {"dims": 18}, "attack_measured": {measured: 1.0 + c.seed / 10}})
        if c.attack == "blur"
        else c
        for c in cells
    ]
    text = write_leaderboard("s", fitted, MODELS, tmp_path)[0].read_text()
    assert tables(text)["Protocol verdict"][0]["seeds"] == "2"
    blur = [row for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5"]
    assert (
        len(blur) == 1 and blur[0]["param"] == "dims=18"
    )  # one step over both seeds; its settings, not its measurements
    per_cell = (tmp_path / "cells.csv").read_text()
    assert f"{measured}=1.0" in per_cell and f"{measured}=1.1" in per_cell  # cells.csv: each cell's own measurements


def test_two_entries_of_one_attack_that_read_the_same_stay_two_steps(tmp_path):
    cells = release("clean", 0.0, CLEAN) + release("patch", 20.0, STRONG)
    chosen = {"attack_param": {"removed": 1.0}, "attack_measured": {"chosen": "b"}}
    entries = [c.model_copy(update={"attack_config": {"candidates": names}, "key": c.key + names[-1], **chosen})
               for c in cells if c.attack == "blur" for names in (["b", "c"], ["b", "d"])]  # fmt: skip
    text = write_leaderboard("s", [c for c in cells if c.attack != "blur"] + entries, MODELS, tmp_path)[0].read_text()
    blur = sorted(
        row["param"] for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5"
    )
    assert blur == [
        "removed=1.0 candidates=['b', 'c']",
        "removed=1.0 candidates=['b', 'd']",
    ]  # the settings, then what tells them apart


def test_each_budget_of_a_sweep_is_its_own_attack_step(tmp_path):
    cells = release("clean", 0.0, CLEAN) + release("patch", 20.0, STRONG)
    swept = [
        c.model_copy(update={"budget_released": budget, "key": c.key + str(budget)})
        for c in cells
        if c.attack == "blur"
        for budget in (10, 100)
    ]
    text = write_leaderboard("s", [c for c in cells if c.attack != "blur"] + swept, MODELS, tmp_path)[0].read_text()
    blur = [
        row["param"] for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5"
    ]
    assert sorted(blur) == ["released=10", "released=100"]


def test_without_per_image_outcomes_there_is_no_verdict_and_it_says_why(cells, tmp_path):
    old = [c.model_copy(update={"outcomes": None}) for c in cells]
    text = write_leaderboard("s", old, MODELS, tmp_path)[0].read_text()
    assert "No verdict: it needs each cell's per-image outcomes" in text
    assert "Protocol verdict" not in tables(text) or not tables(text)["Protocol verdict"]


def test_the_header_says_what_was_run_from_the_cells_and_the_store_not_the_clock(cells, tmp_path):
    store = tmp_path / "cells.jsonl"
    store.write_text("")
    written = datetime(2026, 3, 4, 23, 30, tzinfo=UTC).timestamp()
    os.utime(store, (written, written))
    source = Source.store(tmp_path / "suite.yaml", store)
    first = write_leaderboard("s", cells, MODELS, tmp_path / "one", source=source)[0].read_text()
    summary = first.split("\n\n")[1]
    assert summary.startswith("**What was run**: suite `s` (`")
    for part in (
        f"{N} images per cell",
        "1 seed (0)",
        "2 encodings of 1 authorized model",
        "2 attack steps of 2 attacks",
        "4 models (1 control)",
        "precision fp32",
        "device cpu",
        "cells computed by unknown code (not recorded)",
        f"tables written by {code_version()}",
        "newest cell written 2026-03-04 (UTC)",
    ):
        assert part in summary
    assert code_version().startswith("nonxfer-bench ") and " git " in code_version()
    stamped = [c.model_copy(update={"code": "nonxfer-bench 0.1.0, git 0123456789ab"}) for c in cells[:3]] + cells[3:]
    summary = (
        write_leaderboard("s", stamped, MODELS, tmp_path / "stamped", source=source)[0].read_text().split("\n\n")[1]
    )
    assert (
        f"cells computed by nonxfer-bench 0.1.0, git 0123456789ab (not recorded for {len(cells) - 3} older cells)"
        in summary
    )
    again = write_leaderboard("s", cells, MODELS, tmp_path / "two", source=source)[0].read_text()
    assert again == first  # nothing from the clock: a rerun that computes nothing writes the same file
    assert "keep fractions in [0, 1]" in first and "in %" in first


def test_precision_and_device_are_a_header_line_when_shared_and_a_column_when_they_differ(cells, tmp_path):
    shared = tables(write_leaderboard("s", cells, MODELS, tmp_path / "shared")[0].read_text())
    assert "precision" not in shared["Protocol verdict"][0] and "device" not in shared["Protocol verdict"][0]
    bf16 = [c.model_copy(update={"precision": "bf16", "device": "cuda", "key": c.key + "bf16"}) for c in cells]
    text = write_leaderboard("s", cells + bf16, MODELS, tmp_path / "mixed")[0].read_text()
    assert "precision bf16, fp32" in text and "device cpu, cuda" in text
    found = tables(text)
    ranking = found["Protocol verdict"]
    assert sorted((row["encoding"], row["precision"], row["device"]) for row in ranking) == [
        ("patch 10", "bf16", "cuda"),
        ("patch 10", "fp32", "cpu"),
        ("patch 20", "bf16", "cuda"),
        ("patch 20", "fp32", "cpu"),
    ]
    assert {row["precision"] for row in found["NE effect (no attack)"]} == {"bf16", "fp32"}  # never averaged together
    assert len(found["Attacks"]) == 2 * 3 * 2


def test_the_authorized_column_is_marked_and_no_attack_is_never_none(cells, tmp_path):
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    found = tables(text)
    for row in found["NE effect (no attack)"]:
        assert row["a"].endswith(" (auth)") and not any(row[m].endswith("(auth)") for m in ("b", "c", "ctrl"))
    assert "`(auth)` marks the authorized model's value" in text
    assert {row["attack"] for row in found["Attacks"]} == {"no attack", "blur 0.5"}
    steps = (
        "attack",
        "by attack",
        "strongest attack",
        "best attack",
        "cheapest break",
    )  # a tier may be "none", a step never
    assert all(
        not row.get(column, "").startswith("none") for rows in found.values() for row in rows for column in steps
    )


@pytest.mark.slow
def test_an_unlabeled_suite_ranks_by_agreement(cells, tmp_path):
    unlabeled = [c.model_copy(update={"accuracy": None}) for c in cells]
    text = write_leaderboard("s", unlabeled, MODELS, tmp_path)[0].read_text()
    ranking = tables(text)["Protocol verdict"]
    assert {"auth agree", "best unauth agree"} <= set(ranking[0]) and "auth acc" not in ranking[0]
    assert "the authorized model's agreement on the release (no attack) minus the best agreement" in text
    labeled = tables(write_leaderboard("s", cells, MODELS, tmp_path / "labeled")[0].read_text())["Protocol verdict"]
    assert [row["gap: none"] for row in ranking] == [row["gap: none"] for row in labeled]  # agreement = accuracy here
