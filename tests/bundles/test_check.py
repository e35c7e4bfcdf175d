"""``bundle`` and ``check`` on a tiny bundle (a digits suite of 21 cells): a fresh bundle passes with every group
replayed
bit for bit, and each kind of tampering fails with a line that says what, also when the tamperer refreshes the
manifest's hashes (the manifest is no signature: the re-derived tables, the numbers from the bits, the plan and the
replay are what catch an edit that keeps the hashes consistent)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nonxfer_bench.bundles.manifest import BUNDLE, hashed_files
from nonxfer_bench.bundles.replay import MIN_AGREEMENT, outcome_problem, sample_groups
from nonxfer_bench.cells.cell import Cell, pack_bits
from nonxfer_bench.cells.store import CellStore, gzipped_lines, lines
from nonxfer_bench.cli import main
from nonxfer_bench.execution.runner import Runner
from tests.bundles.tiny import tiny_bundle


@pytest.fixture(scope="module")
def bundle(digits_zoo, tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("tiny"), digits_zoo)


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny project to tamper with; its bundle folder."""
    shutil.copytree(bundle.parent.parent, tmp_path / "project")
    return tmp_path / "project" / "results" / "tiny"


def check(folder: Path, capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["check", str(folder), *args])
    return code, capsys.readouterr().out.splitlines()


def resign(folder: Path) -> None:
    """What a tamperer does after an edit: BUNDLE.json's hashes refreshed so that they match the edited files."""
    data = json.loads((folder / BUNDLE).read_text())
    data["files"] = {name: entry.model_dump() for name, entry in hashed_files(folder).items()}
    (folder / BUNDLE).write_text(json.dumps(data))


def cells_of(folder: Path) -> list[Cell]:
    return sorted(CellStore(folder / "cells.jsonl.gz", writable=False).cells.values(), key=lambda cell: cell.key)


def write_cells(folder: Path, cells: list[Cell]) -> None:
    (folder / "cells.jsonl.gz").write_bytes(gzipped_lines(cells))


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_fresh_bundle_passes_with_every_group_replayed_bit_for_bit_and_check_writes_nothing_there(bundle, capsys):
    before = snapshot(bundle.parent.parent)
    code, lines = check(bundle, capsys, "--replay-groups", "99")
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith(
        f"check: PASS {bundle}: files, manifest, cells, numbers, plan, weights, tables as recorded; replay: 3 of 3 "
        "groups"
    )
    assert "21 cells bit for bit at 1 torch thread(s)" in lines[-1]
    assert {cell.threads for cell in cells_of(bundle)} == {1}  # the suite's threads, recorded on every cell
    assert (
        snapshot(bundle.parent.parent) == before
    )  # the project, its bundle included: nothing written, nothing touched
    manifest = json.loads((bundle / BUNDLE).read_text())
    assert (
        manifest["cells"] == 21
        and manifest["groups"] == 3
        and manifest["code"] == ["nonxfer-bench 0.1.0, git 0123456789ab"]
    )
    assert (
        manifest["suite_file"] == "suites/tiny.yaml"
        and manifest["resolved_suite"]["zoo"][0]["weights"]["path"] == "suites/zoo/vit_a.safetensors"
    )
    assert manifest["datasets"][0]["listing"]["sklearn/datasets/data/digits.csv.gz"]["bytes"] > 0
    assert set(manifest["files"]) >= {"cells.jsonl.gz", "cells.csv", "leaderboard.md", "SUITE"}


def test_check_takes_the_suite_file_and_says_it_did_not_replay(bundle, capsys):
    code, lines = check(bundle.parent.parent / "suites" / "tiny.yaml", capsys, "--no-replay")
    assert code == 0 and lines[-1].endswith("replay: not replayed (--no-replay)")


def test_an_edited_accuracy_in_cells_csv_fails_by_its_hash_and_by_the_tables(copy, capsys):
    rows = list(csv.reader(io.StringIO((copy / "cells.csv").read_text())))
    column = rows[0].index("accuracy")
    rows[1][column] = (
        f"{float(rows[1][column]) + 0.05:.4f}"
        if float(rows[1][column]) < 0.9
        else f"{float(rows[1][column]) - 0.05:.4f}"
    )
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    (copy / "cells.csv").write_text(text.getvalue())
    code, lines = check(copy, capsys, "--no-replay")
    assert (
        code == 1
        and lines[-1].startswith("check: FAIL: files: cells.csv: ")
        and "changed after the bundle was written" in lines[-1]
    )
    resign(copy)
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and lines[-1].startswith("check: FAIL: tables: cells.csv line 2 is not the table its cells give")


def _swap(cell: Cell, flip: bool) -> Cell:
    """``cell`` with two images' correct bits swapped (its accuracy kept), or with one bit flipped (``flip``)."""
    bits = cell.outcomes.correct_bits(0).copy()
    one, zero = int(np.flatnonzero(bits)[0]), int(np.flatnonzero(~bits)[0])
    bits[one] = False
    if not flip:
        bits[zero] = True
    return cell.model_copy(update={"outcomes": cell.outcomes.model_copy(update={"correct": [pack_bits(bits)]})})


def test_swapped_outcome_bits_fail_the_replay_and_a_flipped_bit_the_numbers(copy, capsys):
    cells = cells_of(copy)
    index = next(i for i, cell in enumerate(cells) if 0 < cell.accuracy < 1)
    target = cells[index]
    write_cells(copy, [*cells[:index], _swap(target, flip=False), *cells[index + 1 :]])
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and lines[-1].startswith("check: FAIL: files: cells.jsonl.gz: ")
    resign(copy)
    code, lines = check(copy, capsys, "--replay-groups", "99")
    assert code == 1, "\n".join(lines)
    assert "check: numbers: ok: n, accuracy and agreement of 21 cells from their outcome bits" in "\n".join(
        lines
    )  # a swap keeps every count
    failed = [line for line in lines if line.startswith("check: replay: FAIL: ")]
    assert (
        len(failed) == 1
        and f"{target.attack}@{target.attack_strength:g} {target.model}: 2 image outcome(s) of 60 differ" in failed[0]
    )
    write_cells(copy, [*cells[:index], _swap(target, flip=True), *cells[index + 1 :]])
    resign(copy)
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and lines[-1].startswith("check: FAIL: numbers: ")
    assert (
        f"{target.attack}@{target.attack_strength:g} {target.model}: accuracy {target.accuracy:.6g} (the "
        f"bits give {target.accuracy - 1 / 60:.6g})" in lines[-1]
    )


def test_a_second_line_that_hides_a_cell_fails(copy, capsys):
    cells = cells_of(copy)
    hidden = cells[0].model_copy(update={"accuracy": 1.0})
    (copy / "cells.jsonl.gz").write_bytes(gzip.compress((lines(cells) + lines([hidden])).encode()))
    resign(copy)
    code, lines_ = check(copy, capsys, "--no-replay")
    assert (
        code == 1
        and f"check: cells: FAIL: cells.jsonl.gz: 1 key on more than one line (first: {hidden.key}): only the "
        "last line is read"
        in lines_
    )


def test_a_missing_cell_fails_the_plan_and_the_manifest(copy, capsys):
    cells = cells_of(copy)
    write_cells(copy, cells[1:])
    resign(copy)
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1
    assert any(line.startswith("check: manifest: FAIL: BUNDLE.json 'cells' says 21, the cells 20") for line in lines)
    assert any(line.startswith("check: plan: FAIL: 1 of 21 planned cells are missing (first: vit_a/") for line in lines)
    assert lines[-1].startswith("check: FAIL: manifest: ")


def test_other_weights_in_the_manifest_fail_the_plan_and_the_weights(copy, capsys):
    data = json.loads((copy / BUNDLE).read_text())
    data["models"]["res"]["weights"]["sha256"] = "0" * 64
    (copy / BUNDLE).write_text(json.dumps(data))
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1
    assert any(
        line.startswith(
            "check: plan: FAIL: 7 of 21 planned cells are missing (first: vit_a/clean/seed0 identity@1 res)"
        )
        for line in lines
    )
    assert any(
        line.startswith("check: weights: FAIL: zoo model 'res': weights sha256 ")
        and "000000000000... in BUNDLE.json" in line
        for line in lines
    )


def test_other_weight_files_here_fail_the_weights_and_are_not_replayed(copy, capsys):
    weights = copy.parent.parent / "suites" / "zoo" / "res.safetensors"
    state = load_file(weights)
    name = next(iter(state))
    state[name] = state[name] + 0.01
    save_file(state, weights)
    code, lines = check(copy, capsys)
    assert code == 1
    assert any(line.startswith("check: weights: FAIL: zoo model 'res': weights sha256 ") for line in lines)
    assert lines[-1].startswith("check: FAIL: weights: zoo model 'res'")


def test_an_edited_leaderboard_line_fails_the_tables(copy, capsys):
    board = (copy / "leaderboard.md").read_text().splitlines()
    number = next(i for i, line in enumerate(board) if line.startswith("| 1 | vit_a |"))  # the ranking's first row
    board[number] = board[number].replace("| vit_a |", "| vit_b |", 1)
    (copy / "leaderboard.md").write_text("\n".join(board))
    resign(copy)
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and lines[-1].startswith(
        f"check: FAIL: tables: leaderboard.md line {number + 1} is not the table its cells give: '| 1 | vit_b |"
    )


def test_an_extra_file_fails_unless_allowed_and_a_missing_one_fails(copy, capsys):
    (copy / "notes.txt").write_text("mine")
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and lines[-1].startswith("check: FAIL: files: not in BUNDLE.json: notes.txt (1 problem in files)")
    code, lines = check(copy, capsys, "--no-replay", "--allow-extra", "notes.*")
    assert code == 0 and "allowed beside them: notes.txt" in "\n".join(lines)
    (copy / "SUITE").unlink()
    code, lines = check(copy, capsys, "--no-replay", "--allow-extra", "notes.*")
    assert code == 1 and lines[-1].startswith("check: FAIL: files: missing: SUITE")


def test_cells_without_committed_code_are_refused_by_bundle_and_fail_the_check(copy, capsys):
    cells = cells_of(copy)
    write_cells(
        copy,
        [
            cell.model_copy(update={"code": "nonxfer-bench 0.1.0, git 0123456789ab with uncommitted changes"})
            for cell in cells[:3]
        ]
        + cells[3:],
    )
    resign(copy)
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and any(
        line.startswith("check: manifest: FAIL: 3 of 21 cells do not record the committed code that computed them")
        for line in lines
    )
    assert main(["bundle", str(copy.parent.parent / "suites" / "tiny.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith(
            f"nonxfer-bench: error: {copy}: not a bundle of tiny.yaml's run: 3 of 21 cells do not record the "
            "committed code"
        )
        and "\n" not in error
    )


@pytest.mark.slow
def test_a_rerun_by_other_code_refreshes_the_bundle_it_rewrote_so_the_check_still_passes(copy, capsys):
    suite = copy.parent.parent / "suites" / "tiny.yaml"
    with mock.patch(
        "nonxfer_bench.execution.runner.code_version", return_value="nonxfer-bench 0.1.0, git fedcba987654"
    ):
        assert main(["run", str(suite), "--no-tracking", "--fresh"]) == 0
    assert f"{copy / BUNDLE}: refreshed for this run's files" in capsys.readouterr().out
    assert json.loads((copy / BUNDLE).read_text())["code"] == ["nonxfer-bench 0.1.0, git fedcba987654"]
    code, lines = check(copy, capsys, "--replay-groups", "1")
    assert code == 0, "\n".join(lines)


@pytest.mark.slow
def test_a_rerun_by_uncommitted_code_says_that_the_bundle_no_longer_matches(copy, capsys):
    suite = copy.parent.parent / "suites" / "tiny.yaml"
    before = (copy / BUNDLE).read_bytes()
    with mock.patch(
        "nonxfer_bench.execution.runner.code_version",
        return_value="nonxfer-bench 0.1.0, git fedcba987654 with uncommitted changes",
    ):
        assert main(["run", str(suite), "--no-tracking", "--fresh"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{copy / BUNDLE}: not refreshed, so it no longer matches this run's files: " in out
        and "do not record the committed code" in out
    )
    assert (copy / BUNDLE).read_bytes() == before  # left as the submitter wrote it: the check names what changed
    code, lines = check(copy, capsys, "--no-replay")
    assert code == 1 and "changed after the bundle was written" in lines[-1]


def test_each_cell_is_replayed_at_the_torch_threads_it_records(copy, capsys):
    """A group that a run at 2 threads computed replays at 2 threads, whatever the suite file says (1): a trained
    attack's bits depend on the thread count, so the suite's would replay other bits."""
    cells = cells_of(copy)
    group = cells[0].group
    write_cells(copy, [cell.model_copy(update={"threads": 2}) if cell.group == group else cell for cell in cells])
    resign(copy)
    seen: dict[str, set[int]] = {}
    compute = Runner.compute

    def spy(runner, plan, missing):
        seen.setdefault(plan.key, set()).add(torch.get_num_threads())
        return compute(runner, plan, missing)

    with mock.patch.object(Runner, "compute", spy):
        code, lines = check(copy, capsys, "--replay-groups", "99")
    assert code == 0, "\n".join(lines)
    assert seen.pop(group) == {2} and list(seen.values()) == [{1}, {1}]
    assert "21 cells bit for bit at 1 and 2 torch thread(s)" in lines[-1]


def test_a_thread_count_no_machine_here_could_replay_is_refused_before_any_work(copy, capsys):
    """A tampered bundle naming 1,000 threads does not make the checker start them: the replay says it cannot run
    here, in one line, and computes nothing."""
    cells = cells_of(copy)
    write_cells(copy, [cell.model_copy(update={"threads": 1000}) for cell in cells])
    resign(copy)
    with mock.patch.object(Runner, "compute", side_effect=AssertionError("computed")):
        code, lines = check(copy, capsys, "--replay-groups", "1")
    assert code != 0
    assert any("cannot replay here: cells of vit_a/" in line and "ran at 1,000 torch threads" in line for line in lines)


def test_the_sample_is_the_checkers_draw_and_the_tolerance_rule():
    plan = list(range(50))
    assert sample_groups(plan, 3, seed=1) == sample_groups(plan, 3, seed=1) != sample_groups(plan, 3, seed=2)
    assert sample_groups(plan, 99, seed=1) == plan
    labels = np.arange(200) % 3 == 0
    recorded = Cell.model_validate(
        {
            "key": "k",
            "suite": "s",
            "group": "g",
            "authorized": "a",
            "encoder": "patch",
            "strength": 10.0,
            "seed": 0,
            "attack": "identity",
            "attack_strength": 1.0,
            "baseline": True,
            "model": "m",
            "role": "unauthorized",
            "n": 200,
            "accuracy": float(labels.mean()),
            "agreement": 1.0,
            "outcomes": {
                "images": 200,
                "ids": "i",
                "correct": [pack_bits(labels)],
                "agree": [pack_bits(np.ones(200, bool))],
            },
        }
    )

    def replayed(differ: int) -> Cell:
        bits = labels.copy()
        bits[:differ] = ~bits[:differ]
        outcomes = recorded.outcomes.model_copy(update={"correct": [pack_bits(bits)]})
        return recorded.model_copy(update={"outcomes": outcomes, "accuracy": float(bits.mean())})

    assert outcome_problem(recorded, replayed(0), exact=True) is None
    assert outcome_problem(recorded, replayed(1), exact=True).startswith("1 image outcome(s) of 200 differ")
    assert outcome_problem(recorded, replayed(2), exact=False) is None  # 99.0% agree: at the rule's edge
    assert int(200 * (1 - MIN_AGREEMENT)) == 2
    assert outcome_problem(recorded, replayed(3), exact=False).startswith(
        "98.5% of images' correct bits agree (at least 99%)"
    )


def test_cells_drawn_on_cuda_are_not_replayed_on_a_machine_without_one(copy, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a CPU machine, also where a GPU is installed
    data = json.loads((copy / BUNDLE).read_text())
    data["draws"] = "cuda"
    (copy / BUNDLE).write_text(json.dumps(data))
    code, lines = check(copy, capsys, "--replay-groups", "1")
    assert code == 1
    assert any(
        line.startswith("check: plan: FAIL: none of the 21 cells the suite plans is in the bundle") for line in lines
    )  # CUDA draws: other keys
    assert any(
        line.startswith("check: replay: FAIL: cannot replay here: ") and "(or check with --no-replay)" in line
        for line in lines
    )
