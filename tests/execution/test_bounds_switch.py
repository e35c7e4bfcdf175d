"""The bound diagnostics can be switched off (suite ``bounds: false``, ``run --no-bounds``) (#14).

Only baseline (identity) cells carry bounds, so only their keys change: a bounds-off run reuses every other
cell of a bounds-on run and back, and a bounds-on run resumed over a bounds-off store recomputes the
baseline cells instead of taking them without bounds.
"""

from __future__ import annotations

from nonxfer_bench.analysis.theory import numeric_bounds
from nonxfer_bench.cli import main
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.linalg.bounds import NOT_COMPUTED
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from tests.execution.small import small_suite

SETUP = {
    "encoders": [{"name": "gaussian", "strengths": [20.0]}],
    "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
}
NOT_COMPUTED_TEXT = "Bounds were not computed for this run"


def plan_keys(suite) -> dict[tuple[str, str, str], str]:
    return {
        (group.key, step.label, model): key for group in plan_suite(suite) for (step, model), key in group.cells.items()
    }


def test_bounds_true_keeps_every_key_and_false_changes_only_the_baseline_keys(tmp_path):
    default = plan_keys(small_suite(tmp_path / "default", **SETUP))
    assert plan_keys(small_suite(tmp_path / "on", bounds=True, **SETUP)) == default
    off = plan_keys(small_suite(tmp_path / "off", bounds=False, **SETUP))
    assert off.keys() == default.keys()
    assert {cell for cell, key in off.items() if key != default[cell]} == {
        cell for cell in default if cell[1] == "identity@1"
    }


def test_without_bounds_the_baseline_cells_are_marked_and_hold_the_same_results(tmp_path):
    on = Runner(small_suite(tmp_path / "on", **SETUP)).run().cells
    off = Runner(small_suite(tmp_path / "off", bounds=False, **SETUP)).run().cells
    assert all(numeric_bounds(cell.record()) for cell in on if cell.baseline and cell.encoder == "gaussian")
    assert {str(cell.bounds) for cell in off if cell.baseline} == {str({NOT_COMPUTED: False})}
    assert {c.key: c for c in on if not c.baseline} == {c.key: c for c in off if not c.baseline}
    results = lambda cells: {(c.group, c.model): (c.accuracy, c.outcomes) for c in cells if c.baseline}  # noqa: E731
    assert results(on) == results(off)


def test_the_leaderboard_says_bounds_were_not_computed(tmp_path):
    suite = small_suite(tmp_path, bounds=False, **SETUP)
    cells = Runner(suite).run().cells
    markdown = write_leaderboard(suite.name, cells, ["a", "b"], tmp_path / "board")[0].read_text()
    assert f"## Theory\n\n{NOT_COMPUTED_TEXT}" in markdown


def test_a_bounds_on_run_over_a_bounds_off_store_recomputes_only_the_baseline_cells(tmp_path):
    Runner(small_suite(tmp_path, bounds=False, **SETUP)).run()
    runner = Runner(small_suite(tmp_path, **SETUP))  # the same run folder
    missing = {cell for group in runner.groups for cell in runner.missing(group)}
    assert missing and {step.spec.name for step, _ in missing} == {"identity"}
    cells = runner.run().cells
    assert all(NOT_COMPUTED not in cell.bounds for cell in cells)
    assert all(numeric_bounds(cell.record()) for cell in cells if cell.baseline and cell.encoder == "gaussian")


def test_the_run_flag_switches_the_bounds_off(tmp_path):
    small_suite(tmp_path, **SETUP)
    assert main(["run", str(tmp_path / "suite.yaml"), "--no-bounds", "--no-tracking"]) == 0
    # not the suite as its file says: the leaderboard goes to the run's own folder, never results/small/
    assert NOT_COMPUTED_TEXT in (tmp_path / "runs" / "small" / "leaderboard" / "leaderboard.md").read_text()
    assert not (tmp_path / "results" / "small").exists()
