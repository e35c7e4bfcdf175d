"""Every accuracy in the leaderboard carries n and a Wilson 95% interval, computed from the cells' own n."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from nonxfer_bench.analysis import frame as frames
from nonxfer_bench.analysis.frame import CELL_COLUMNS
from nonxfer_bench.cells.cell import Cell, pack_bits
from nonxfer_bench.metrics.statistics import (
    Gain,
    bootstrap_over_images,
    holm,
    mcnemar_exact,
    paired_difference,
    paired_gain,
    wilson,
)
from nonxfer_bench.rendering import leaderboard
from nonxfer_bench.rendering.plots import _curve
from nonxfer_bench.rendering.tables import attack_table, effect_table
from nonxfer_bench.rendering.text import gain_text, p_text

SHOWN = re.compile(r"^(-?\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]")


def cell(attack, strength, model, accuracy, encoder="patch", seed=0, n=200, **extra):
    """A cell record as the store keeps it (schema 1 unless ``extra`` adds outcomes)."""
    return {
        "suite": "s",
        "group": "g",
        "authorized": "a",
        "encoder": encoder,
        "strength": 10.0,
        "seed": seed,
        "attack": attack,
        "attack_strength": strength,
        "attack_param": {},
        "model": model,
        "role": "authorized" if model == "a" else "unauthorized",
        "accuracy": accuracy,
        "agreement": accuracy,
        "encoded_psnr": 10.0,
        "attacked_psnr": 20.0,
        "n": n,
        "key": f"{attack}{strength}{model}{encoder}{seed}",
    } | extra


CELLS = [
    cell("identity", 1.0, "a", 0.835), cell("identity", 1.0, "b", 0.20), cell("identity", 1.0, "c", 0.31),
    cell("blur", 0.5, "a", 0.70), cell("blur", 0.5, "b", 0.45), cell("blur", 0.5, "c", 0.40),
]  # fmt: skip


def results_frame(records: list[dict]) -> pd.DataFrame:
    return frames.results_frame([Cell.from_record(record) for record in records])


def write_leaderboard(name: str, records: list[dict], models: list[str], folder) -> None:
    leaderboard.write_leaderboard(name, [Cell.from_record(record) for record in records], models, folder)


def parse(text: str) -> tuple[float, float, float]:
    match = SHOWN.match(text)
    assert match, f"{text!r} is not 'value [lo, hi]'"
    return tuple(float(group) for group in match.groups())


def expected(proportion: float, n: int) -> tuple[float, float, float]:
    interval = wilson(proportion * n, n)
    return tuple(round(100 * x, 1) for x in interval)


def test_effect_table_shows_n_and_the_wilson_interval_of_every_accuracy():
    row = effect_table(results_frame(CELLS), ["a", "b", "c"]).iloc[0]
    assert row["n"] == "200"
    assert parse(row["auth acc"]) == expected(0.835, 200)
    assert parse(row["unauth mean"]) == expected(0.255, 200)
    assert parse(row["unauth max"]) == expected(0.31, 200) and row["unauth max"].endswith("(c)")
    assert [parse(row[m]) for m in "abc"] == [expected(0.835, 200), expected(0.20, 200), expected(0.31, 200)]
    assert parse(row["strongest: unauth mean"]) == expected(0.425, 200)
    lo, hi = parse(row["auth acc"])[1:]
    assert lo < 83.5 < hi


def test_intervals_use_the_labeled_images_and_widen_when_there_are_fewer():
    labeled = [c | {"n_labeled": 50} for c in CELLS]
    row = effect_table(results_frame(labeled), ["a", "b", "c"]).iloc[0]
    assert row["n"] == "50" and parse(row["auth acc"]) == expected(0.835, 50)
    small, large = parse(row["auth acc"]), parse(effect_table(results_frame(CELLS), ["a"]).iloc[0]["auth acc"])
    assert small[2] - small[1] > large[2] - large[1]


def test_attack_table_rows_carry_n_and_intervals():
    table = attack_table(results_frame(CELLS))
    blur = table[table.attack == "blur 0.5"].iloc[0]
    assert blur["n"] == "200"
    assert parse(blur["auth acc"]) == expected(0.70, 200) and parse(blur["unauth mean"]) == expected(0.425, 200)


def test_several_seeds_add_the_between_seed_spread():
    seeds = CELLS + [c | {"seed": 1, "accuracy": c["accuracy"] - 0.1, "key": c["key"] + "s1"} for c in CELLS]
    frame = results_frame(seeds)
    row = effect_table(frame, ["a", "b", "c"]).iloc[0]
    assert row["seeds"] == "2"
    assert row["auth acc seed sd"] == f"{100 * pd.Series([0.835, 0.735]).std():.1f}"
    assert parse(row["auth acc"]) == expected(0.785, 200)  # the mean over seeds, n images
    assert "seeds" not in effect_table(results_frame(CELLS), ["a"]).columns
    assert "unauth mean seed sd" in attack_table(frame).columns


def test_written_leaderboard_explains_the_intervals_under_each_table_and_keeps_cells_csv(tmp_path):
    write_leaderboard("intervals", CELLS, ["a", "b", "c"], tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    sections = [part for part in text.split("## ") if part.startswith(("NE effect", "Attacks"))]
    assert len(sections) == 2
    for section in sections:
        assert "Wilson 95% score interval" in section and "`n`: labeled images per cell" in section
    assert pd.read_csv(tmp_path / "cells.csv").columns.tolist() == [c for c in CELL_COLUMNS if c != "key"]


def test_plot_error_bars_are_the_wilson_intervals():
    frame = results_frame(CELLS)
    curve = _curve(frame, "attack_strength", "accuracy", ["b", "c"])
    interval = wilson(0.425 * 200, 200)
    assert curve.loc[0.5, "value"] == pytest.approx(42.5)
    assert (curve.loc[0.5, "below"], curve.loc[0.5, "above"]) == (
        pytest.approx(100 * (0.425 - interval.lo)),
        pytest.approx(100 * (interval.hi - 0.425)),
    )


def with_outcomes(record: dict, correct: np.ndarray, ids: str = "images-0") -> dict:
    """A cell record of schema 2: per-image correctness (and agreement) as packed bits, accuracy from them."""
    bits = pack_bits(correct)
    return record | {
        "accuracy": float(correct.mean()),
        "n": len(correct),
        "outcomes": {"images": len(correct), "ids": ids, "correct": [bits], "agree": [bits]},
    }


def outcome_cells(rng: np.random.Generator, n: int = 200) -> tuple[list[dict], dict]:
    """No attack and three attack steps on one encoding; 'blur' helps the unauthorized models a lot, 'jpeg' a
    one image each, 'noise' hurts them. Returns the records and the bits by (attack, model)."""
    base = {"a": rng.random(n) < 0.8, "b": rng.random(n) < 0.2, "c": rng.random(n) < 0.3}
    bits = {("identity", m): flags for m, flags in base.items()}
    bits |= {("blur", m): flags | (rng.random(n) < (0.0 if m == "a" else 0.4)) for m, flags in base.items()}
    bits |= {
        ("jpeg", m): flags | (np.arange(n) == np.argmin(flags) if m != "a" else flags) for m, flags in base.items()
    }  # one image more
    bits |= {("noise", m): flags & (rng.random(n) > 0.05) for m, flags in base.items()}
    strengths = {"identity": 1.0, "blur": 0.5, "jpeg": 0.5, "noise": 0.5}
    return [
        with_outcomes(cell(attack, strengths[attack], model, None), flags) for (attack, model), flags in bits.items()
    ], bits


def test_with_outcomes_the_unauthorized_aggregates_use_the_paired_bootstrap():
    records, bits = outcome_cells(np.random.default_rng(0))
    row = effect_table(results_frame(records), ["a", "b", "c"]).iloc[0]
    mean, maximum = bootstrap_over_images(np.vstack([bits["identity", "b"], bits["identity", "c"]]))
    assert parse(row["unauth mean"]) == tuple(round(100 * x, 1) for x in mean)
    assert parse(row["unauth max"]) == tuple(round(100 * x, 1) for x in maximum)
    assert parse(row["auth acc"]) == expected(bits["identity", "a"].mean(), 200)  # one model: still Wilson


def test_attack_rows_compare_each_step_with_no_attack_on_the_same_images():
    records, bits = outcome_cells(np.random.default_rng(1))
    table = attack_table(results_frame(records)).set_index("attack")
    blur, none = table.loc["blur 0.5"], table.loc["no attack"]
    auth = paired_difference(bits["identity", "a"], bits["blur", "a"])
    assert blur["auth Δ"] == f"{100 * auth.estimate:+.1f} [{100 * auth.lo:+.1f}, {100 * auth.hi:+.1f}]"
    p = mcnemar_exact(bits["identity", "a"], bits["blur", "a"])
    assert blur["auth p"] == ("<0.001" if p < 0.001 else f"{p:.3f}")
    unauth = paired_gain(np.vstack([bits["identity", m] for m in "bc"]), np.vstack([bits["blur", m] for m in "bc"]))
    assert blur["unauth mean Δ"] == f"{100 * unauth.estimate:+.1f} [{100 * unauth.lo:+.1f}, {100 * unauth.hi:+.1f}]"
    assert blur["unauth p"] == "<0.001" and unauth.lo > 0
    assert (none["auth Δ"], none["unauth p"]) == ("", "")  # no attack is the reference, not a comparison


def test_the_strongest_attack_reports_its_gain_and_a_holm_adjusted_p():
    rng = np.random.default_rng(2)
    records, bits = outcome_cells(rng)
    row = effect_table(results_frame(records), ["a", "b", "c"]).iloc[0]
    assert row["strongest attack"] == "blur 0.5"
    before = np.vstack([bits["identity", m] for m in "bc"])
    raw = [paired_gain(before, np.vstack([bits[attack, m] for m in "bc"])).p for attack in ("blur", "jpeg", "noise")]
    gain = paired_gain(before, np.vstack([bits["blur", m] for m in "bc"]))
    assert row["strongest: gain"] == f"{100 * gain.estimate:+.1f} [{100 * gain.lo:+.1f}, {100 * gain.hi:+.1f}]"
    assert row["strongest: p (Holm)"] == "<0.001" and holm(raw)[0] < 0.001
    # without blur the strongest is jpeg, one image more per model: adjusted for the two steps, not significant
    small = [r for r in records if r["attack"] != "blur"]
    row = effect_table(results_frame(small), ["a", "b", "c"]).iloc[0]
    assert row["strongest attack"] == "jpeg 0.5"
    adjusted = holm(
        [paired_gain(before, np.vstack([bits[attack, m] for m in "bc"])).p for attack in ("jpeg", "noise")]
    )[0]
    assert adjusted >= 0.05 and row["strongest: p (Holm)"] == f"{adjusted:.3f} (not significant)"


def test_paired_columns_show_a_dash_without_outcomes_or_on_other_images(tmp_path):
    records, _ = outcome_cells(np.random.default_rng(3))
    old = [{k: v for k, v in r.items() if k != "outcomes"} for r in records]
    for cells in (
        old,
        [r | {"outcomes": r["outcomes"] | {"ids": "other"}} if r["attack"] == "blur" else r for r in records],
    ):
        blur = attack_table(results_frame(cells)).set_index("attack").loc["blur 0.5"]
        assert (blur["auth Δ"], blur["auth p"], blur["unauth mean Δ"], blur["unauth p"]) == ("—",) * 4
        assert effect_table(results_frame(cells), ["a"]).iloc[0]["strongest: p (Holm)"] == "—"
    write_leaderboard("old", old, ["a", "b", "c"], tmp_path)
    assert "`—`: a paired test needs per-image outcomes" in (tmp_path / "leaderboard.md").read_text()
    write_leaderboard("new", records, ["a", "b", "c"], tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "exact McNemar" in text and "Holm" in text and "needs per-image outcomes" not in text


def test_plot_error_bars_of_the_unauthorized_mean_use_the_bootstrap_with_outcomes():
    records, bits = outcome_cells(np.random.default_rng(4))
    curve = _curve(results_frame(records), "attack_strength", "accuracy", ["b", "c"])
    mean, _ = bootstrap_over_images(np.vstack([bits["identity", "b"], bits["identity", "c"]]))
    assert curve.loc[1.0, "below"] == pytest.approx(100 * (mean.estimate - mean.lo))
    assert curve.loc[1.0, "above"] == pytest.approx(100 * (mean.hi - mean.estimate))


def test_unlabeled_cells_compare_agreement_bits(tmp_path):
    rng = np.random.default_rng(5)
    records, bits = outcome_cells(rng)
    unlabeled = []
    for record in records:
        flags = bits[record["attack"], record["model"]]
        packed = pack_bits(flags)
        none = pack_bits(np.zeros_like(flags))
        outcomes = record["outcomes"] | {"correct": [none], "agree": [packed], "labeled": none}
        unlabeled.append(
            record | {"accuracy": None, "n_labeled": 0, "agreement": float(flags.mean()), "outcomes": outcomes}
        )
    write_leaderboard("photos", unlabeled, ["a", "b", "c"], tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| auth agree |" in text and "nan" not in text and "`n`: images per cell" in text
    blur = attack_table(results_frame(unlabeled), "agreement").set_index("attack").loc["blur 0.5"]
    assert blur["auth p"] == p_text(mcnemar_exact(bits["identity", "a"], bits["blur", "a"]))
    unauth = paired_gain(np.vstack([bits["identity", m] for m in "bc"]), np.vstack([bits["blur", m] for m in "bc"]))
    assert (blur["unauth mean Δ"], blur["unauth p"]) == (gain_text(unauth), p_text(unauth.p))
    assert parse(blur["auth agree"]) == expected(bits["blur", "a"].mean(), 200)


def test_change_and_p_texts():
    assert gain_text(Gain(-1e-17, -0.017, 0.0176, 1.0)) == "+0.0 [-1.7, +1.8]"  # never "-0.0"
    assert gain_text(None) == p_text(None) == "—"
    assert (p_text(0.0004), p_text(0.0123), p_text(0.05, verdict=True)) == (
        "<0.001",
        "0.012",
        "0.050 (not significant)",
    )


def test_the_effect_table_compares_each_ne_with_the_clean_images_on_the_same_images():
    rng = np.random.default_rng(3)
    clean_bits = {model: rng.random(300) < p for model, p in (("a", 0.9), ("b", 0.85), ("c", 0.8))}
    ne_bits = {model: rng.random(300) < p for model, p in (("a", 0.88), ("b", 0.1), ("c", 0.12))}
    records = [with_outcomes(cell("identity", 1.0, m, None, encoder="clean"), flags) for m, flags in clean_bits.items()]
    records += [with_outcomes(cell("identity", 1.0, m, None), flags) for m, flags in ne_bits.items()]
    table = effect_table(results_frame(records), ["a", "b", "c"])
    ne, clean = table[table.encoding == "patch 10"].iloc[0], table[table.encoding == "clean"].iloc[0]
    assert clean["auth Δ vs clean"] == "" and clean["p vs clean (auth; unauth)"] == ""
    auth_p, unauth_p = ne["p vs clean (auth; unauth)"].split("; ")
    assert auth_p == p_text(mcnemar_exact(clean_bits["a"], ne_bits["a"]))  # one model: exact McNemar
    assert ne["auth Δ vs clean"] == gain_text(
        paired_gain(clean_bits["a"], ne_bits["a"])
    )  # Newcombe's interval, in points
    unauthorized = np.stack([clean_bits["b"], clean_bits["c"]]), np.stack([ne_bits["b"], ne_bits["c"]])
    assert ne["unauth mean Δ vs clean"] == gain_text(paired_gain(*unauthorized))  # paired bootstrap over images
    assert unauth_p == "<0.001" and ne["unauth mean Δ vs clean"].startswith("-")
