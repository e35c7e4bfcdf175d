"""The runner end to end on a trained digits zoo: the NE outcome, resumption and --fresh."""

import pandas as pd
import pytest

from nonxfer_bench.analysis.uncertainty import proportion_interval
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.cli import main
from nonxfer_bench.core.version import code_version
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.rendering.text import with_interval
from tests.helpers import digits_suite


def cells(results_dir) -> pd.DataFrame:
    return pd.read_csv(results_dir / "digits" / "cells.csv")


def test_authorized_model_keeps_its_accuracy_while_unauthorized_models_collapse(tmp_path, digits_zoo):
    assert main(["run", str(digits_suite(tmp_path, digits_zoo))]) == 0
    frame = cells(tmp_path / "results")
    plain = frame[frame.attack == "identity"].set_index(["encoder", "model"])["accuracy"]
    clean = plain.loc["clean"]
    assert clean.min() > 0.8, "the digits zoo did not train"
    # vit_a's first layer has an exact patch null space: the patch NE is invisible to it even at 0 dB ...
    assert plain.loc[("patch", "vit_a")] == pytest.approx(clean["vit_a"], abs=0.01)
    # ... while its twin (same architecture, other seed) and the ResNet fall towards chance (10 %).
    assert plain.loc[("patch", "vit_b")] < 0.35 and plain.loc[("patch", "res")] < 0.35
    agreement = frame[(frame.attack == "identity") & (frame.encoder == "patch") & (frame.model == "vit_a")]["agreement"]
    assert agreement.item() > 0.98
    psnr = frame[(frame.encoder == "patch")]["encoded_psnr"]
    assert psnr.round(3).eq(0.0).all()
    assert (tmp_path / "results" / "digits" / "leaderboard.md").read_text().count("| vit_a |") >= 3


def test_an_interrupted_run_resumes_with_only_the_missing_work_and_the_same_numbers(tmp_path, digits_zoo):
    reference_dir, interrupted_dir = tmp_path / "ref", tmp_path / "int"
    reference_dir.mkdir(), interrupted_dir.mkdir()
    uninterrupted = Runner(load_suite(digits_suite(reference_dir, digits_zoo))).run()

    suite = load_suite(digits_suite(interrupted_dir, digits_zoo))
    finished = []

    def stop_after_two(group, group_cells, sample):
        finished.append(group.key)
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Runner(suite, on_group=stop_after_two).run()
    resumed = Runner(suite).run()
    assert resumed.skipped_groups == 2 and resumed.computed_groups == len(plan_suite(suite)) - 2

    def numbers(result):
        return sorted((c.key, c.accuracy, c.agreement, c.encoded_psnr) for c in result.cells)

    assert numbers(resumed) == numbers(uninterrupted)


def test_fresh_recomputes_everything_and_a_plain_rerun_nothing(tmp_path, digits_zoo):
    suite = load_suite(digits_suite(tmp_path, digits_zoo, attacks=[{"name": "identity"}]))
    first = Runner(suite).run()
    assert Runner(suite).run().computed_groups == 0
    again = Runner(suite, fresh=True).run()
    assert again.computed_groups == first.computed_groups
    assert [c.accuracy for c in again.cells] == [c.accuracy for c in first.cells]


def test_a_control_model_is_stored_with_its_role_and_left_out_of_the_unauthorized_mean(tmp_path, digits_zoo):
    suite = digits_suite(
        tmp_path,
        digits_zoo,
        controls=["res"],
        encoders=[{"name": "patch", "strengths": [0.0]}],
        attacks=[{"name": "identity"}],
    )
    assert main(["run", str(suite)]) == 0
    frame = cells(tmp_path / "results")
    assert set(frame[frame.model == "res"].role) == {"control"}
    patch = frame[frame.encoder == "patch"].set_index("model")
    board = (tmp_path / "results" / "digits" / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| vit_a | patch 0 |"))
    shown = with_interval(proportion_interval(patch.at["vit_b", "accuracy"], int(patch.at["vit_b", "n"])))
    assert f"| {shown} | {shown} (vit_b) |" in row  # mean and max over vit_b alone
    assert "**Controls** (res)" in board


def test_every_stored_cell_records_the_code_that_computed_it_and_its_suite_entry(tmp_path, digits_zoo):
    path = digits_suite(
        tmp_path,
        digits_zoo,
        attacks=[{"name": "identity"}, {"name": "blur", "strengths": [0.5], "params": {"max_sigma": 1.5}}],
    )
    assert main(["run", str(path), "--no-tracking"]) == 0
    suite = load_suite(path)
    stored = CellStore(suite.run_dir() / "cells.jsonl", writable=False).cells.values()
    assert stored and {cell.code for cell in stored} == {code_version()}
    assert {cell.attack: cell.attack_config for cell in stored} == {
        "identity": {},
        "blur": {"max_sigma": 1.5},
    }  # the suite entry's params
    header = (suite.results_dir() / "leaderboard.md").read_text().split("\n\n")[1]
    assert f"cells computed by {code_version()}; tables written by {code_version()}" in header
