"""Every accuracy in the leaderboard carries n and a Wilson 95% interval, computed from the cells' own n."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from nonxfer_bench.core.cell import Cell
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.reporting import leaderboard
from nonxfer_bench.reporting.leaderboard import CELL_COLUMNS, attack_table, effect_table
from nonxfer_bench.reporting.plots import _curve

SHOWN = re.compile(r"^(-?\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]")


def cell(attack, strength, model, accuracy, encoder="patch", seed=0, n=200, **extra):
    """A cell record as the store keeps it (schema 1 unless ``extra`` adds outcomes)."""
    return {
        "suite": "s", "group": "g", "authorized": "a", "encoder": encoder, "strength": 10.0, "seed": seed, "attack": attack, "attack_strength": strength,
        "attack_param": {}, "model": model, "role": "authorized" if model == "a" else "unauthorized", "accuracy": accuracy,
        "agreement": accuracy, "encoded_psnr": 10.0, "attacked_psnr": 20.0, "n": n, "key": f"{attack}{strength}{model}{encoder}{seed}",
    } | extra  # fmt: skip


CELLS = [
    cell("identity", 1.0, "a", 0.835), cell("identity", 1.0, "b", 0.20), cell("identity", 1.0, "c", 0.31),
    cell("blur", 0.5, "a", 0.70), cell("blur", 0.5, "b", 0.45), cell("blur", 0.5, "c", 0.40),
]  # fmt: skip


def cells_frame(records: list[dict]) -> pd.DataFrame:
    return leaderboard.cells_frame([Cell.from_record(record) for record in records])


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
    row = effect_table(cells_frame(CELLS), ["a", "b", "c"]).iloc[0]
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
    row = effect_table(cells_frame(labeled), ["a", "b", "c"]).iloc[0]
    assert row["n"] == "50" and parse(row["auth acc"]) == expected(0.835, 50)
    small, large = parse(row["auth acc"]), parse(effect_table(cells_frame(CELLS), ["a"]).iloc[0]["auth acc"])
    assert small[2] - small[1] > large[2] - large[1]


def test_attack_table_rows_carry_n_and_intervals():
    table = attack_table(cells_frame(CELLS))
    blur = table[table.attack == "blur 0.5"].iloc[0]
    assert blur["n"] == "200"
    assert parse(blur["auth acc"]) == expected(0.70, 200) and parse(blur["unauth mean"]) == expected(0.425, 200)


def test_several_seeds_add_the_between_seed_spread():
    seeds = CELLS + [c | {"seed": 1, "accuracy": c["accuracy"] - 0.1, "key": c["key"] + "s1"} for c in CELLS]
    frame = cells_frame(seeds)
    row = effect_table(frame, ["a", "b", "c"]).iloc[0]
    assert row["seeds"] == "2"
    assert row["auth acc seed sd"] == f"{100 * pd.Series([0.835, 0.735]).std():.1f}"
    assert parse(row["auth acc"]) == expected(0.785, 200)  # the mean over seeds, n images
    assert "seeds" not in effect_table(cells_frame(CELLS), ["a"]).columns
    assert "unauth mean seed sd" in attack_table(frame).columns


def test_written_leaderboard_explains_the_intervals_under_each_table_and_keeps_cells_csv(tmp_path):
    write_leaderboard("intervals", CELLS, ["a", "b", "c"], tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    for section in text.split("## ")[1:3]:  # NE effect, Attacks
        assert "Wilson 95% score interval" in section and "`n`: labeled images per cell" in section
    assert pd.read_csv(tmp_path / "cells.csv").columns.tolist() == [c for c in CELL_COLUMNS if c != "key"]


def test_plot_error_bars_are_the_wilson_intervals():
    frame = cells_frame(CELLS)
    curve = _curve(frame, "attack_strength", "accuracy", ["b", "c"])
    interval = wilson(0.425 * 200, 200)
    assert curve.loc[0.5, "value"] == pytest.approx(42.5)
    assert (curve.loc[0.5, "below"], curve.loc[0.5, "above"]) == (pytest.approx(100 * (0.425 - interval.lo)), pytest.approx(100 * (interval.hi - 0.425)))
