"""benchmarks/runtime.py: where a finished run spent its time, read from its cell store and its run log."""

import importlib.util
import io
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cli import main
from nonxfer_bench.execution.progress import Progress
from tests.helpers import digits_suite

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("runtime_benchmark", ROOT / "benchmarks" / "runtime.py")
runtime = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(runtime)


def cell(key: str, group: str, attack: str, seconds: float | None, n: int = 500, encoder: str = "patch") -> Cell:
    return Cell(
        key=key,
        suite="s",
        group=group,
        authorized="vit_a",
        encoder=encoder,
        strength=10.0,
        seed=0,
        attack=attack,
        attack_strength=0.5,
        baseline=attack == "identity",
        model="vit_b",
        role="unauthorized",
        n=n,
        accuracy=0.5,
        agreement=0.5,
        attack_seconds=seconds,
    )


def test_attack_seconds_are_per_1000_images_once_per_group_and_cache_hits_are_left_out():
    cells = [
        cell("1", "g1", "blur", 1.0),  # two models of one group share the step's seconds: one value
        cell("2", "g1", "blur", 1.0),
        cell("3", "g2", "blur", 3.0),
        cell("4", "g3", "blur", 0.0),  # read from the attack cache
        cell("5", "g1", "identity", None),  # a schema-1 cell: not measured
    ]
    [blur] = runtime.attack_timings(cells)
    assert (blur.what, blur.groups, blur.median, blur.low, blur.high) == ("blur 0.5", 2, 4.0, 2.0, 6.0)


def test_group_seconds_come_from_the_lines_the_progress_writer_logs(tmp_path):
    log = tmp_path / "run.log"
    progress = Progress("s", log, stream=io.StringIO(), bar_stream=io.StringIO())
    progress.total = 2
    for label in ("vit_a/patch@10/seed0", "vit_a/clean/seed1"):
        progress.phase(label, "encode")
        progress.started[label] -= 5.0  # the group took (at least) 5 s
        progress.group_done(label)
    progress.close()
    cells = [cell("1", "g1", "blur", 1.0, n=1000), cell("2", "g2", "blur", 1.0, n=1000, encoder="clean")]
    timings = {t.what: t for t in runtime.group_timings(log, cells, {"vit_a/patch@10/seed0", "vit_a/clean/seed1"})}
    assert set(timings) == {"patch", "clean"}
    assert all(5.0 <= t.median < 60.0 and t.groups == 1 for t in timings.values())
    assert (
        runtime.group_timings(log, cells, {"vit_a/clean/seed1"})[0].what == "clean"
    )  # groups the suite no longer plans: left out


def test_the_script_reads_a_finished_suite_and_writes_a_figure_and_a_table(tmp_path, digits_zoo, capsys):
    small = {
        "name": "timed",
        "dataset": {"name": "digits", "limit": 20},
        "encoders": [{"name": "patch", "strengths": [0.0]}],
        "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
        "batch_size": 20,
    }
    suite = digits_suite(tmp_path, digits_zoo, **small)
    assert main(["run", str(suite), "--no-tracking"]) == 0
    assert runtime.main([str(suite), "--out", str(tmp_path / "out"), "--machine", "test box"]) == 0
    table = (tmp_path / "out" / "RUNTIME.md").read_text()
    assert (
        "test box" in table and "| blur 0.5 sigma=1.0 | 1 |" in table
    )  # the patch group: the clean images face only no attack
    assert "| patch | 1 |" in table and "| clean | 1 |" in table  # whole groups, from the run log
    with Image.open(tmp_path / "out" / "runtime.png") as image:
        assert image.size[0] > 400 and image.size[1] > 200
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: only the committed results/<suite>/cells.jsonl
    assert runtime.main([str(suite), "--out", str(tmp_path / "clone"), "--machine", "test box"]) == 0
    table = (tmp_path / "clone" / "RUNTIME.md").read_text()
    assert "| blur 0.5 sigma=1.0 | 1 |" in table and "Not measured: no run log" in table
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runtime.main([str(tmp_path / "nowhere.yaml"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "nowhere.yaml" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        runtime.main([str(suite), "--out", str(tmp_path / "a-file" / "out")])
    assert exit_info.value.code == 2 and "cannot write there" in capsys.readouterr().err


def test_the_table_names_a_suite_whose_run_log_is_missing():
    logged = runtime.Timing("subset: patch", 6, 21.5, 20.9, 22.7)
    table = runtime.markdown([], [logged], "test box", [Path("full.yaml"), Path("subset.yaml")], ["full"])
    assert "Not measured for `full`: no run log" in table and "| subset: patch | 6 | 21.50 | [20.90, 22.70] |" in table
