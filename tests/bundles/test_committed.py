"""The committed results others can trust: every results folder records the code that computed each of its cells,
is a bundle the checker passes (hashes, manifest, numbers from the outcome bits, plan, weights, re-derived tables),
and a group of the identification suite and one of the quickstart replay bit for bit from the data and the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.bundles.consistency import code_problems
from nonxfer_bench.bundles.contents import Contents, bundle_suite, planned, project_of, read_cells
from nonxfer_bench.bundles.manifest import Manifest, read_manifest
from nonxfer_bench.bundles.replay import data_problems, replay_groups
from nonxfer_bench.cli import main
from nonxfer_bench.loading import load_protocol
from nonxfer_bench.rendering.text import gap_text

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(path.parent.name for path in RESULTS.glob("*/SUITE"))


def test_the_folders_are_the_committed_suites():
    assert {
        "quickstart",
        "fashion-full",
        "fashion-full-subset",
        "fashion-protocol",
        "identification",
        "quickstart-ladder",
    } <= set(FOLDERS)


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


def test_findings_restate_the_full_size_protocol_verdict():
    """FINDINGS 3 and 5 and the README quote `fashion-protocol/` (protocol ne-v2, full ensemble, 24 releases x 3
    keys): no release holds the method tier, and each quoted gap is the committed verdict's."""
    spec = load_protocol(RESULTS.parent / "suites" / "protocols" / "ne-v2.yaml").verdict
    found = verdicts(results_frame(list(read_cells(RESULTS / "fashion-protocol").values())), spec)
    assert len(found) == 24 and {v.seeds for v in found} == {3}
    assert all(v.settled_at in ("none", "method") for v in found)  # nothing went past the method tier
    settled_at_none = [v for v in found if v.settled_at == "none"]
    assert (len(settled_at_none), sum(v.broken_at == "none" for v in settled_at_none)) == (19, 15)
    held = sorted((v for v in found if v.settled_at == "method"), key=lambda v: (v.release.strength, v.release.encoder))
    assert [(v.release.authorized, v.release.encoder, v.release.strength, v.broken_at) for v in held] == [
        ("vit_a", "reference", 0.0, "method"),
        ("vit_a", "operator", 10.0, "method"),
        ("vit_a", "patch", 10.0, "method"),
        ("vit_a", "reference", 15.0, "method"),
        ("vit_a", "reference", 30.0, "method"),
    ]
    findings = " ".join((RESULTS / "FINDINGS.md").read_text().split())
    readme = " ".join((RESULTS.parent / "README.md").read_text().split())
    for verdict in held:
        for tier in verdict.tiers:
            assert gap_text(tier.gap.estimate, tier.gap) in findings, (verdict.release, tier.tier)
    reference_0 = held[0].tiers[-1]
    assert f"{gap_text(reference_0.gap.estimate, reference_0.gap)} points" in readme


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
