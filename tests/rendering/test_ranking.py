"""The leaderboard opens with what was run and a ranked protection table, read back from the written Markdown."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from nonxfer_bench.cells.cell import Cell, pack_bits
from nonxfer_bench.core.version import code_version
from nonxfer_bench.metrics.statistics import bootstrap_over_images
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source

N = 400
GAP = re.compile(r"^([+-]\d+\.\d)(?: \[([+-]\d+\.\d), ([+-]\d+\.\d)\])?$")


def cell(encoder: str, strength: float, attack: str, model: str, correct: np.ndarray, seed: int = 0, **extra) -> Cell:
    """A schema-2 cell of authorized model ``a`` with its per-image outcomes (``correct``)."""
    role = "authorized" if model == "a" else ("control" if model == "ctrl" else "unauthorized")
    bits = pack_bits(correct)
    return Cell(
        key=f"{encoder}{strength}{attack}{model}{seed}{extra}", suite="s", group=f"{encoder}{strength}{seed}", authorized="a",
        encoder=encoder, strength=strength, seed=seed, attack=attack, attack_strength=1.0 if attack == "identity" else 0.5,
        baseline=attack == "identity", model=model, role=role, n=len(correct), accuracy=float(correct.mean()),
        agreement=float(correct.mean()), encoded_psnr=None if encoder == "clean" else strength, stored_psnr=None if encoder == "clean" else strength,
        attacked_ssim=1.0 if encoder == "clean" else strength / 40, device="cpu",
        outcomes={"images": len(correct), "ids": "same-images", "correct": [bits], "agree": [bits]}, **extra,
    )  # fmt: skip


def release(encoder: str, strength: float, rates: dict[tuple[str, str], float], seed: int = 0, **extra) -> list[Cell]:
    """Cells of one release: ``rates[(attack, model)]`` is the share of images the model gets right."""
    rng = np.random.default_rng([len(encoder), int(strength), seed])
    return [cell(encoder, strength, attack, model, rng.random(N) < rate, seed, **extra) for (attack, model), rate in rates.items()]


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
    assert text.index("## Protection ranking") < text.index("## NE effect")
    assert "a gap near 0 or negative means no protection" in text
    ranking = tables(text)["Protection ranking"]
    assert [row["encoding"] for row in ranking] == ["patch 20", "patch 10"]  # clean is not a release
    assert [row["rank"] for row in ranking] == ["1", "2"]
    gaps = [gap(row["protection gap"]) for row in ranking]
    assert gaps[0][0] > gaps[1][0]
    for estimate, lo, hi in gaps:
        assert lo <= estimate <= hi


def test_the_gap_is_authorized_minus_the_best_unauthorized_over_every_attack_step(cells, tmp_path):
    by_key = {(c.encoder, c.strength, c.attack, c.model): c for c in cells}
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    rows = {row["encoding"]: row for row in tables(text)["Protection ranking"]}
    strong, weak = rows["patch 20"], rows["patch 10"]
    assert (strong["by attack"], strong["by model"]) == ("blur 0.5", "b")  # the attack raises the best model most
    assert (weak["by attack"], weak["by model"]) == ("no attack", "b")  # the release as it is already gives the best
    for encoding, row in rows.items():
        strength = float(encoding.split()[1])
        auth = by_key["patch", strength, "identity", "a"]
        outcomes = {(c.attack, c.model): c.outcomes.correct_bits() for c in cells if (c.encoder, c.strength) == ("patch", strength) and c.role == "unauthorized"}
        best = max(flags.mean() for flags in outcomes.values())  # the control (right 95% of the time) never counts
        assert gap(row["protection gap"])[0] == round(100 * (auth.accuracy - best), 1)
        # the interval: one paired bootstrap over images of the max over (step, model) of unauthorized minus authorized
        over = bootstrap_over_images(np.vstack(list(outcomes.values())).astype(float) - auth.outcomes.correct_bits())[1]
        assert gap(row["protection gap"])[1:] == (round(-100 * over.hi, 1), round(-100 * over.lo, 1))
        assert row["n"] == str(N) and row["PSNR dB"] == f"{strength:.1f}" and row["SSIM"] == f"{strength / 40:.3f}"


def test_with_several_seeds_the_gap_is_the_mean_over_seeds_and_shows_their_spread(tmp_path):
    cells = [c for seed in (0, 1) for c in release("clean", 0.0, CLEAN, seed) + release("patch", 20.0, STRONG, seed)]
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    row = tables(text)["Protection ranking"][0]
    chosen = [(c.seed, c.accuracy) for c in cells if c.encoder == "patch" and c.attack == "blur" and c.model == row["by model"]]
    auth = dict((c.seed, c.accuracy) for c in cells if c.encoder == "patch" and c.baseline and c.model == "a")
    per_seed = [auth[seed] - accuracy for seed, accuracy in sorted(chosen)]
    assert gap(row["protection gap"])[0] == round(100 * np.mean(per_seed), 1)
    assert row["seeds"] == "2" and row["gap seed sd"] == f"{100 * np.std(per_seed, ddof=1):.1f}"
    assert "2 seeds (0, 1)" in text


@pytest.mark.parametrize("measured", ["ratio", "clean_energy_in_vn"])  # the subspace estimator's variance ratio, the oracle's energy share
def test_what_a_fitted_attack_measured_differs_between_seeds_but_does_not_split_its_step(tmp_path, measured):
    cells = [c for seed in (0, 1) for c in release("clean", 0.0, CLEAN, seed) + release("patch", 20.0, STRONG, seed)]
    fitted = [c.model_copy(update={"attack_param": {"dims": 18}, "attack_measured": {measured: 1.0 + c.seed / 10}}) if c.attack == "blur" else c for c in cells]
    text = write_leaderboard("s", fitted, MODELS, tmp_path)[0].read_text()
    assert tables(text)["Protection ranking"][0]["seeds"] == "2"
    blur = [row for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5"]
    assert len(blur) == 1 and blur[0]["param"] == "dims=18"  # one step over both seeds; its settings, not its measurements
    per_cell = (tmp_path / "cells.csv").read_text()
    assert f"{measured}=1.0" in per_cell and f"{measured}=1.1" in per_cell  # cells.csv: each cell's own measurements


def test_two_entries_of_one_attack_that_read_the_same_stay_two_steps(tmp_path):
    cells = release("clean", 0.0, CLEAN) + release("patch", 20.0, STRONG)
    entries = [c.model_copy(update={"attack_config": {"candidates": names}, "key": c.key + names[-1], "attack_param": {"removed": 1.0}, "attack_measured": {"chosen": "b"}})
               for c in cells if c.attack == "blur" for names in (["b", "c"], ["b", "d"])]  # fmt: skip
    text = write_leaderboard("s", [c for c in cells if c.attack != "blur"] + entries, MODELS, tmp_path)[0].read_text()
    blur = sorted(row["param"] for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5")
    assert blur == ["removed=1.0 candidates=['b', 'c']", "removed=1.0 candidates=['b', 'd']"]  # the settings, then what tells them apart


def test_each_budget_of_a_sweep_is_its_own_attack_step(tmp_path):
    cells = release("clean", 0.0, CLEAN) + release("patch", 20.0, STRONG)
    swept = [c.model_copy(update={"budget_released": budget, "key": c.key + str(budget)}) for c in cells if c.attack == "blur" for budget in (10, 100)]
    text = write_leaderboard("s", [c for c in cells if c.attack != "blur"] + swept, MODELS, tmp_path)[0].read_text()
    blur = [row["param"] for row in tables(text)["Attacks"] if row["encoding"] == "patch 20" and row["attack"] == "blur 0.5"]
    assert sorted(blur) == ["released=10", "released=100"]


def test_without_per_image_outcomes_the_gap_is_shown_without_an_interval(cells, tmp_path):
    old = [c.model_copy(update={"outcomes": None}) for c in cells]
    text = write_leaderboard("s", old, MODELS, tmp_path)[0].read_text()
    assert all(gap(row["protection gap"])[1] is None for row in tables(text)["Protection ranking"])
    assert "The gap has no interval here: it needs per-image outcomes" in text


def test_the_header_says_what_was_run_from_the_cells_and_the_store_not_the_clock(cells, tmp_path):
    store = tmp_path / "cells.jsonl"
    store.write_text("")
    written = datetime(2026, 3, 4, 23, 30, tzinfo=UTC).timestamp()
    os.utime(store, (written, written))
    source = Source.store(tmp_path / "suite.yaml", store)
    first = write_leaderboard("s", cells, MODELS, tmp_path / "one", source=source)[0].read_text()
    summary = first.split("\n\n")[1]
    assert summary.startswith("**What was run**: suite `s` (`")
    for part in (f"{N} images per cell", "1 seed (0)", "2 encodings of 1 authorized model", "2 attack steps of 2 attacks",
                 "4 models (1 control)", "precision fp32", "device cpu", "cells computed by unknown code (not recorded)", f"tables written by {code_version()}",
                 "newest cell written 2026-03-04 (UTC)"):  # fmt: skip
        assert part in summary
    assert code_version().startswith("nonxfer-bench ") and " git " in code_version()
    stamped = [c.model_copy(update={"code": "nonxfer-bench 0.1.0, git 0123456789ab"}) for c in cells[:3]] + cells[3:]
    summary = write_leaderboard("s", stamped, MODELS, tmp_path / "stamped", source=source)[0].read_text().split("\n\n")[1]
    assert f"cells computed by nonxfer-bench 0.1.0, git 0123456789ab (not recorded for {len(cells) - 3} older cells)" in summary
    again = write_leaderboard("s", cells, MODELS, tmp_path / "two", source=source)[0].read_text()
    assert again == first  # nothing from the clock: a rerun that computes nothing writes the same file
    assert "keep fractions in [0, 1]" in first and "in %" in first


def test_precision_and_device_are_a_header_line_when_shared_and_a_column_when_they_differ(cells, tmp_path):
    shared = tables(write_leaderboard("s", cells, MODELS, tmp_path / "shared")[0].read_text())
    assert "precision" not in shared["Protection ranking"][0] and "device" not in shared["Protection ranking"][0]
    bf16 = [c.model_copy(update={"precision": "bf16", "device": "cuda", "key": c.key + "bf16"}) for c in cells]
    text = write_leaderboard("s", cells + bf16, MODELS, tmp_path / "mixed")[0].read_text()
    assert "precision bf16, fp32" in text and "device cpu, cuda" in text
    found = tables(text)
    ranking = found["Protection ranking"]
    assert sorted((row["encoding"], row["precision"], row["device"]) for row in ranking) == [
        ("patch 10", "bf16", "cuda"), ("patch 10", "fp32", "cpu"), ("patch 20", "bf16", "cuda"), ("patch 20", "fp32", "cpu")
    ]  # fmt: skip
    assert {row["precision"] for row in found["NE effect (no attack)"]} == {"bf16", "fp32"}  # never averaged together
    assert len(found["Attacks"]) == 2 * 3 * 2


def test_the_authorized_column_is_marked_and_no_attack_is_never_none(cells, tmp_path):
    text = write_leaderboard("s", cells, MODELS, tmp_path)[0].read_text()
    found = tables(text)
    for row in found["NE effect (no attack)"]:
        assert row["a"].endswith(" (auth)") and not any(row[m].endswith("(auth)") for m in ("b", "c", "ctrl"))
    assert "`(auth)` marks the authorized model's value" in text
    assert {row["attack"] for row in found["Attacks"]} == {"no attack", "blur 0.5"}
    assert all(cell != "none" for rows in found.values() for row in rows for cell in row.values())


def test_an_unlabeled_suite_ranks_by_agreement(cells, tmp_path):
    unlabeled = [c.model_copy(update={"accuracy": None}) for c in cells]
    text = write_leaderboard("s", unlabeled, MODELS, tmp_path)[0].read_text()
    ranking = tables(text)["Protection ranking"]
    assert {"auth agree", "best unauth agree"} <= set(ranking[0]) and "auth acc" not in ranking[0]
    assert "the authorized model's agreement on the release minus the best agreement" in text
    labeled = tables(write_leaderboard("s", cells, MODELS, tmp_path / "labeled")[0].read_text())["Protection ranking"]
    assert [row["protection gap"] for row in ranking] == [row["protection gap"] for row in labeled]  # agreement = accuracy here
