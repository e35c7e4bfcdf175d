"""Hostile bundles and bundle commands: a folder that is not a bundle, a manifest out of bounds, a link or a special
file in the folder, a 10 GB file claimed or planted: each is one line with exit 2 (or, for a planted file, a FAIL
that never reads it), in bounded time and memory, and nothing is written inside the bundle."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from nonxfer_bench.bundles.manifest import BUNDLE
from tests.bundles.tiny import tiny_bundle
from tests.hostile.conftest import refused, run_cli, tree_digest


@pytest.fixture(scope="module")
def bundle(digits_zoo, tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("tiny"), digits_zoo)


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    shutil.copytree(bundle.parent.parent, tmp_path / "project")
    return tmp_path / "project" / "results" / "tiny"


def edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / BUNDLE).read_text())
    change(data)
    (folder / BUNDLE).write_text(json.dumps(data))


def test_a_folder_that_is_not_a_bundle(copy, cwd):
    (copy / BUNDLE).unlink()
    refused(
        "check", copy, cwd=cwd, expected=(f"{copy}: no BUNDLE.json; a bundle is a results folder with the BUNDLE.json",)
    )
    refused("check", copy / "nowhere", cwd=cwd, expected=("nowhere: no such folder",))
    refused("check", copy / "cells.csv", cwd=cwd, expected=("cells.csv: not a folder",))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "BUNDLE.json: not JSON"),
        ("[" * 100_000 + "]" * 100_000, "BUNDLE.json: not JSON"),
        ('{"format": 1}', "BUNDLE.json: key 'suite': "),
        ("[]", "BUNDLE.json: key '(top)': "),
    ],
    ids=["broken", "nested", "partial", "list"],
)
def test_a_manifest_that_is_no_manifest(copy, cwd, text, expected):
    (copy / BUNDLE).write_text(text)
    refused("check", copy, cwd=cwd, expected=(expected,))


def test_a_manifest_larger_than_its_bound_is_not_read(copy, cwd):
    (copy / BUNDLE).write_bytes(b" " * (17 << 20) + b"{}")
    refused("check", copy, cwd=cwd, isolate=True, expected=("BUNDLE.json: larger than 16 MiB",))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda data: data["files"]["cells.csv"].update(bytes=10 * 10**9), "key 'files.cells.csv.bytes': "),
        (
            lambda data: data["files"].update({f"f{i}": {"bytes": 2**30, "sha256": "0" * 64} for i in range(5)}),
            "'files' claims 5,",
        ),
        (
            lambda data: data["files"].update({"../../../etc/passwd": {"bytes": 1, "sha256": "0" * 64}}),
            "is not a relative path inside the bundle",
        ),
        (lambda data: data.update(suite_file="/etc/passwd"), "key 'suite_file': "),
        (lambda data: data.update(suite_file="../../suites/tiny.yaml"), "key 'suite_file': "),
        (lambda data: data.update(suite_file="suites/gone.yaml"), "its suite file"),
        (lambda data: data.update(cells=10**12), "key 'cells': "),
    ],
    ids=[
        "10GB-file",
        "5GB-bundle",
        "escaping-name",
        "absolute-suite",
        "escaping-suite",
        "missing-suite",
        "absurd-count",
    ],
)
def test_a_manifest_with_absurd_or_escaping_claims(copy, cwd, change, expected):
    edit_manifest(copy, change)
    before = tree_digest(copy)
    refused("check", copy, cwd=cwd, expected=(expected,))
    assert tree_digest(copy) == before


def test_a_symbolic_link_out_of_the_folder(copy, cwd, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not the bundle's")
    (copy / "leak.txt").symlink_to(secret)
    refused("check", copy, cwd=cwd, expected=("leak.txt is a symbolic link; a bundle holds only regular files",))
    (copy / "leak.txt").unlink()
    (copy / "deep").mkdir()
    (copy / "deep" / "up").symlink_to(copy.parent)
    refused("check", copy, cwd=cwd, expected=("deep/up is a symbolic link",))


def test_a_manifest_that_is_a_link(copy, cwd, tmp_path):
    shutil.move(copy / BUNDLE, tmp_path / BUNDLE)
    (copy / BUNDLE).symlink_to(tmp_path / BUNDLE)
    refused("check", copy, cwd=cwd, expected=("no BUNDLE.json (a symbolic link)",))


def test_a_fifo_in_the_folder_never_hangs(copy, cwd):
    os.mkfifo(copy / "pipe")
    refused("check", copy, cwd=cwd, isolate=True, expected=("pipe is a special file",))


def test_folders_nested_too_deep(copy, cwd):
    deep = copy.joinpath(*["d"] * 10)
    deep.mkdir(parents=True)
    refused("check", copy, cwd=cwd, expected=("is nested deeper than 8 folders",))


@pytest.mark.slow
def test_a_planted_10_gb_file_is_never_read(copy, cwd):
    with open(copy / "cells.csv", "r+b") as handle:  # a sparse file: 10 GB claimed by the file system, nothing on disk
        handle.truncate(10 * 10**9)
    outcome = run_cli("check", copy, "--no-replay", cwd=cwd, isolate=True)
    assert outcome.code == 1, outcome.err[-2000:]
    assert "check: files: FAIL: cells.csv: 10,000,000,000 bytes; BUNDLE.json records " in outcome.out
    assert "check: tables: FAIL: cells.csv is larger than 256 MiB" in outcome.out
    assert outcome.seconds < 60


def test_bundle_refuses_a_folder_without_results_and_never_replaces_a_foreign_manifest(copy, cwd):
    suite = copy.parent.parent / "suites" / "tiny.yaml"
    (copy / BUNDLE).write_text('{"mine": "a note that happens to be called BUNDLE.json"}')
    refused("bundle", suite, cwd=cwd, expected=(f"{copy / BUNDLE}: key ",))
    assert json.loads((copy / BUNDLE).read_text()) == {"mine": "a note that happens to be called BUNDLE.json"}
    shutil.rmtree(copy)
    refused("bundle", suite, cwd=cwd, expected=(f"{copy}: no results of tiny.yaml there; run `nonxfer-bench run",))


def test_site_refuses_to_write_inside_a_bundle_or_over_a_foreign_folder(copy, cwd, tmp_path):
    results = copy.parent
    before = tree_digest(results)
    refused(
        "site",
        results,
        "--out",
        copy / "site",
        cwd=cwd,
        expected=("inside the bundle", "whose files its BUNDLE.json pins"),
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused("site", results, "--out", foreign, cwd=cwd, expected=("not a folder that `nonxfer-bench site` wrote",))
    assert (foreign / "notes.txt").read_text() == "mine"
    refused("site", tmp_path / "nowhere", "--out", tmp_path / "site", cwd=cwd, expected=("nowhere: no such folder",))
    assert tree_digest(results) == before
