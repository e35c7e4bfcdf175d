"""A release pins its originals by content: ``encode`` records each source image's SHA-256 beside its path, and
``verify`` and ``attack`` check the originals they are given against it (refusals: tests/hostile/test_owner_attack.py).
A release written before the hashes were recorded still verifies, with one notice that its originals are matched by
name only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nonxfer_bench.cli import main
from tests.helpers import encode_args
from tests.hostile.test_releases import make_images

NOT_PINNED = "not checked by content"


@pytest.fixture
def released(tmp_path: Path, digits_zoo: Path) -> tuple[Path, Path]:
    """Six 20 px images released for vit_a by patch at 20 dB in png8."""
    source = make_images(tmp_path / "photos")
    options = dict(format="png8", seed_key="k", batch_size=4, threads=1)
    assert main(encode_args(source, tmp_path / "release", digits_zoo, "vit_a", "patch", 20, **options)) == 0
    return source, tmp_path / "release"


def verify(release: Path, zoo: Path, originals: Path) -> int:
    return main(
        ["verify", str(release), "--zoo", str(zoo), "--originals", str(originals), "--threads", "1", "--overwrite"]
    )


def test_encode_records_each_sources_sha256_beside_its_path(released) -> None:
    source, release = released
    entries = json.loads((release / "manifest.json").read_text())["images"]
    assert len(entries) == 6
    for entry in entries:
        assert entry["source_sha256"] == hashlib.sha256((source / entry["source"]).read_bytes()).hexdigest()


def test_a_release_without_source_hashes_still_verifies_with_one_notice(released, digits_zoo, capsys) -> None:
    """Releases written before encode recorded the sources' hashes exist: they verify as before, and say once that
    their originals cannot be checked by content."""
    source, release = released
    assert verify(release, digits_zoo, source) == 0
    assert NOT_PINNED not in capsys.readouterr().out  # a release that pins its originals says nothing
    path = release / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["images"]:
        entry.pop("source_sha256", None)  # absent before encode recorded it
    path.write_text(json.dumps(manifest, indent=1))
    assert verify(release, digits_zoo, source) == 0
    notices = [line for line in capsys.readouterr().out.splitlines() if NOT_PINNED in line]
    assert len(notices) == 1 and "6 of 6 source image(s)" in notices[0] and str(path) in notices[0]
    assert json.loads((release / "verify.json").read_text())["stored_agreement"]["n"] == 6


def test_a_manifest_that_hashes_some_sources_but_not_others_is_refused(released, digits_zoo, capsys) -> None:
    """encode hashes every source or none: a manifest with one hash removed was edited, and the edited original it
    would let through is not matched by name only."""
    source, release = released
    path = release / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["images"][0]["source_sha256"] = None
    path.write_text(json.dumps(manifest, indent=1))
    assert verify(release, digits_zoo, source) == 2
    error = capsys.readouterr().err
    assert "records a source SHA-256 for 5 of 6 images but not the others" in error and "encode again" in error
    assert not (release / "verify.json").exists()
