"""The committed results others can trust: every results folder records the code that computed each of its cells,
is a bundle the checker passes (hashes, manifest, numbers from the outcome bits, plan, weights, re-derived tables),
and a group of the identification suite and one of the quickstart replay bit for bit from the data and the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nonxfer_bench.bundles.consistency import code_problems
from nonxfer_bench.bundles.contents import Contents, bundle_suite, planned, project_of, read_cells
from nonxfer_bench.bundles.manifest import Manifest, read_manifest
from nonxfer_bench.bundles.replay import data_problems, replay_groups
from nonxfer_bench.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(path.parent.name for path in RESULTS.glob("*/SUITE"))


def test_the_folders_are_the_committed_suites():
    assert {"quickstart", "fashion-full", "fashion-full-subset", "identification", "quickstart-ladder"} <= set(FOLDERS)


@pytest.mark.parametrize("name", FOLDERS)
def test_every_cell_of_a_committed_result_records_the_committed_code_that_computed_it(name):
    cells = list(read_cells(RESULTS / name).values())
    assert cells and code_problems(cells) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDERS)
def test_every_committed_result_is_a_bundle_the_checker_passes(name, capsys):
    code = main(["check", str(RESULTS / name), "--no-replay"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith(
        f"check: PASS {RESULTS / name}: files, manifest, cells, numbers, plan, weights, tables as recorded"
    )


def contents_of(name: str) -> tuple[Contents, Manifest]:
    folder = RESULTS / name
    manifest = read_manifest(folder)
    suite, suite_file = bundle_suite(folder, manifest)
    cells = read_cells(folder)
    return Contents(
        suite, suite_file, project_of(folder), cells, planned(suite, cells, manifest.draws, manifest.models)
    ), manifest


def replayed(name: str, label: str):
    contents, manifest = contents_of(name)
    assert data_problems(contents, manifest) == []
    [group] = replay_groups(contents, manifest, [next(group for group in contents.plan if group.label == label)])
    return group


@pytest.mark.slow
def test_a_group_of_the_identification_replays_bit_for_bit():
    group = replayed("identification", "vit_a/patch@20/seed0")  # 100 images, 4 steps, 6 models: about 3 s
    assert group.cells == 24 and group.problems == []


@pytest.mark.slow
def test_a_group_of_the_quickstart_replays_bit_for_bit():
    group = replayed("quickstart", "vit_a/reference@15/seed0")  # held through method: 8 steps up to architecture x 6
    assert group.cells == 48 and group.problems == []
