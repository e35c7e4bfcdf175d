"""A cell store written before cells were typed (schema 1) resumes: nothing is recomputed, the cells are unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

from nonxfer_bench.cells.cell import SCHEMA
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.rendering.leaderboard import write_leaderboard

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema1"


def resumed_suite(tmp_path: Path):
    shutil.copy(FIXTURE / "suite.yaml", tmp_path / "suite.yaml")
    (tmp_path / "runs" / "schema1").mkdir(parents=True)
    shutil.copy(FIXTURE / "cells.jsonl", tmp_path / "runs" / "schema1" / "cells.jsonl")
    return load_suite(tmp_path / "suite.yaml", output=tmp_path)


def test_an_old_store_resumes_with_nothing_to_compute_and_the_same_cells_table(tmp_path):
    suite = resumed_suite(tmp_path)
    result = Runner(suite).run()
    assert (result.computed_groups, result.skipped_groups, len(result.cells)) == (
        0,
        3,
        10,
    )  # the clean images face no attack now
    assert all(cell.outcomes is None for cell in result.cells)  # schema 1 kept no per-image outcomes
    assert {cell.attack for cell in result.cells if cell.baseline} == {"identity"}
    csv = write_leaderboard(suite.name, result.cells, [m.name for m in suite.models], suite.results_dir())[1]
    header, *rows = (FIXTURE / "cells.csv").read_text().splitlines(keepends=True)
    planned = [row for row in rows if not (row.split(",")[1] == "clean" and row.split(",")[4] != "identity")]
    assert csv.read_text() == "".join([header, *planned])  # the old cells as they were, those still planned


def test_recomputing_an_old_store_gives_the_same_numbers_and_adds_outcomes(tmp_path):
    suite = resumed_suite(tmp_path)
    old = {cell.key: cell for cell in Runner(suite).run().cells}
    fresh = {cell.key: cell for cell in Runner(suite, fresh=True).run().cells}
    assert fresh.keys() == old.keys()
    for key, cell in fresh.items():
        assert (cell.accuracy, cell.agreement, cell.encoded_psnr, cell.attacked_psnr) == (
            old[key].accuracy,
            old[key].agreement,
            old[key].encoded_psnr,
            old[key].attacked_psnr,
        )
        assert cell.outcomes is not None and cell.outcomes.correct_bits().sum() == round(cell.accuracy * cell.n)
        assert cell.record()["schema"] == SCHEMA
