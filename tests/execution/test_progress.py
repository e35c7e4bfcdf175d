"""A run says what it will do, then what it is doing: the plan, each group's phase, a plain log file."""

from __future__ import annotations

import io

from nonxfer_bench.execution.progress import Plan, Progress
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from tests.helpers import digits_suite


def test_a_run_prints_its_plan_and_logs_every_group_in_plain_lines(tmp_path, digits_zoo):
    suite = load_suite(digits_suite(tmp_path, digits_zoo, dataset={"name": "digits", "limit": 30}))
    stream = io.StringIO()  # not a terminal: plain lines, no bar
    Runner(suite).run(Progress(suite.name, suite.run_dir() / "run.log", stream))
    shown = stream.getvalue().splitlines()
    assert (
        shown[0]
        == "digits: plan: 3 encodings x 2 attack steps x 3 models = 15 cells; 0 finished, 15 to compute in 3 encodings"
    )
    finished = [line for line in shown if "finished: vit_a/" in line]
    assert [line.split("encoding ")[1].split(" finished")[0] for line in finished] == ["1/3", "2/3", "3/3"]
    log = (suite.run_dir() / "run.log").read_text()
    assert "batch 1/1: attack and score" in log and log.count("finished: vit_a/") == 3

    again = io.StringIO()
    result = Runner(suite).run(Progress(suite.name, None, again))
    assert result.computed_groups == 0
    assert again.getvalue() == "digits: plan: all 15 cells of 3 encodings are finished; nothing to compute\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_note_is_shown_beside_the_bar_and_logged(tmp_path):
    stream, bar_stream = io.StringIO(), Terminal()
    progress = Progress("s", tmp_path / "run.log", stream, bar_stream)
    progress.plan(Plan(1, 1, 1, 1, 0, 1))
    progress.note("g: patch_mean asks for 100 released NEs, the group has 40: it fits on 40")
    progress.close()
    assert "note: g: patch_mean asks for 100" in bar_stream.getvalue()
    assert "note: g: patch_mean asks for 100" in (tmp_path / "run.log").read_text()


def test_a_group_a_worker_computed_is_finished_without_a_time_it_cannot_know():
    """Workers of a process pool report no phases: the line says the group finished and gives no (negative) time."""
    stream = io.StringIO()
    progress = Progress("s", None, stream)
    progress.group_done("vit_a/patch@10/seed0")
    progress.phase("vit_a/patch@20/seed0", "encode")
    progress.group_done("vit_a/patch@20/seed0")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("finished: vit_a/patch@10/seed0")
    assert second.split("finished: vit_a/patch@20/seed0 (")[1].endswith(" s)") and " (-" not in second
