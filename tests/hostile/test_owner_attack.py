"""The data owner's commands on hostile input (issue 27): a class folder the zoo does not know, and ``attack`` on a
release whose folder, originals or run folder do not match. Each is one line, before any work, and changes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from nonxfer_bench.cli import main
from tests.hostile.conftest import error_line, refused, run_cli, tree_digest
from tests.hostile.test_releases import encode_args, make_images

NE_V1 = Path(__file__).resolve().parents[2] / "suites" / "protocols" / "ne-v1.yaml"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("owner")
    source = make_images(root / "photos")
    assert main(encode_args(source, root / "release", digits_zoo)) == 0
    return source, root / "release"


@pytest.fixture
def copies(pristine: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return shutil.copytree(pristine[0], tmp_path / "photos"), shutil.copytree(pristine[1], tmp_path / "release")


def attack(release: Path, originals: Path, zoo: Path, cwd: Path, *extra: object, expected: tuple[str, ...] = ()) -> str:
    return refused(
        "attack",
        release,
        "--originals",
        originals,
        "--zoo",
        zoo,
        "--protocol",
        NE_V1,
        "--ensemble",
        "fast",
        *extra,
        cwd=cwd,
        expected=expected,
    )


def test_verify_labels_refuses_a_class_folder_the_zoo_does_not_know(copies, tmp_path: Path, digits_zoo: Path) -> None:
    source, _ = copies
    (source / "0").rename(source / "cat")
    assert main(encode_args(source, tmp_path / "cats", digits_zoo)) == 0
    before = tree_digest(tmp_path / "cats")
    refused(
        "verify",
        tmp_path / "cats",
        "--zoo",
        digits_zoo,
        "--labels",
        cwd=tmp_path,
        expected=("class folder 'cat' names no class", "'0', '1'"),
    )
    assert tree_digest(tmp_path / "cats") == before


@pytest.mark.parametrize("text", ["zero\none\nzero\n", "zero\n\none\n", "\xff\xfe"])
def test_verify_labels_refuses_a_class_file_it_cannot_read(copies, tmp_path: Path, digits_zoo: Path, text: str) -> None:
    _, release = copies
    (tmp_path / "classes.txt").write_bytes(text.encode("latin-1"))
    before = tree_digest(release)
    refused(
        "verify",
        release,
        "--zoo",
        digits_zoo,
        "--labels",
        "--classes",
        tmp_path / "classes.txt",
        cwd=tmp_path,
        expected=("--classes", "classes.txt"),
    )
    assert tree_digest(release) == before


BROKEN = {
    "an original missing": (
        lambda source, release: (source / "0" / "img0.png").unlink(),
        ("0/img0.png", "is not an image in a class folder"),
    ),
    "an original too many": (
        lambda source, release: shutil.copy(source / "0" / "img0.png", source / "1" / "new.png"),
        ("1/new.png", "is not in the release"),
    ),
    "a released file edited": (lambda source, release: (release / "0" / "img0.png").write_bytes(b"x"), ("0/img0.png",)),
    "no manifest": (lambda source, release: (release / "manifest.json").unlink(), ("manifest.json",)),
    "a foreign run folder": (
        lambda source, release: (release / "attack").mkdir() or (release / "attack" / "notes.txt").write_text("mine"),
        ("no earlier",),
    ),
    "no authorized_agreement": (
        lambda source, release: drop_key(release, "authorized_agreement"),
        ("manifest.json", "authorized_agreement"),
    ),
    "no ssim_mean": (lambda source, release: drop_key(release, "ssim_mean"), ("manifest.json", "ssim_mean")),
}


def drop_key(release: Path, key: str) -> None:
    path = release / "manifest.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != key}))


def paths(*roots: Path) -> list[str]:
    """Every file and folder under ``roots``: a refusal may leave no empty folder behind either."""
    return sorted(str(path) for root in roots for path in root.rglob("*"))


@pytest.mark.parametrize("case", list(BROKEN))
def test_attack_refuses_a_release_it_cannot_vouch_for(copies, tmp_path: Path, digits_zoo: Path, case: str) -> None:
    source, release = copies
    damage, expected = BROKEN[case]
    damage(source, release)
    before = tree_digest(source, release)
    attack(release, source, digits_zoo, tmp_path, expected=expected)
    assert tree_digest(source, release) == before


def test_attack_refuses_a_zoo_without_the_releases_model(copies, tmp_path: Path, digits_zoo: Path) -> None:
    source, release = copies
    zoo = tmp_path / "zoo.yaml"
    text = digits_zoo.read_text().replace("name: vit_a", "name: vit_x")
    zoo.write_text(text.replace("path: ", f"path: {digits_zoo.parent}/"))
    before = tree_digest(source, release)
    attack(release, source, zoo, tmp_path, expected=("vit_a",))
    assert tree_digest(source, release) == before


OUTS = {
    "an empty folder in the release": (
        lambda source, release: (release / "empty").mkdir() or release / "empty",
        ("inside the release",),
    ),
    "a new folder deep in the release": (lambda source, release: release / "a" / "b" / "c", ("inside the release",)),
    "the release itself": (lambda source, release: release, ("inside the release",)),
    "a new folder in the originals": (lambda source, release: source / "newdir", ("originals",)),
    "a folder of the originals": (lambda source, release: source / "0", ("originals",)),
    "a folder holding the originals": (lambda source, release: source.parent, ("originals",)),
}


def edit_in_place(path: Path) -> None:
    """Other pixels under the same name: an original retouched (or replaced) after encode."""
    with Image.open(path) as image:
        edited = ImageOps.invert(image.convert("L"))
    edited.save(path)


@pytest.mark.parametrize("command", ["verify", "attack"])
def test_an_original_edited_after_encode_is_refused_by_its_content(
    copies, tmp_path: Path, digits_zoo: Path, command: str
) -> None:
    """Its name still matches the manifest's source, so only its SHA-256 tells it from the image the release was made
    from: scored, it would measure agreement (verify) or the whole card (attack) against another image."""
    source, release = copies
    edited = source / "0" / "img2.png"
    edit_in_place(edited)
    before, listed = tree_digest(source, release), paths(source, release)
    if command == "verify":
        outcome = run_cli("verify", release, "--zoo", digits_zoo, "--originals", source, cwd=tmp_path / "cwd")
        line = error_line(outcome, str(edited), "differs from the image encode read", "encode again")
    else:
        line = attack(release, source, digits_zoo, tmp_path / "cwd", expected=(str(edited), "differs", "encode again"))
    manifest = json.loads((release / "manifest.json").read_text())
    recorded = next(entry["source_sha256"] for entry in manifest["images"] if entry["source"] == "0/img2.png")
    assert f"SHA-256 {hashlib.sha256(edited.read_bytes()).hexdigest()[:12]}" in line and recorded[:12] in line
    assert tree_digest(source, release) == before and paths(source, release) == listed


@pytest.mark.parametrize("case", list(OUTS))
def test_attack_refuses_a_run_folder_inside_the_release_or_the_originals(
    copies, tmp_path: Path, digits_zoo: Path, case: str
) -> None:
    source, release = copies
    where, expected = OUTS[case]
    out = where(source, release)
    before, listed = tree_digest(source, release), paths(source, release)
    attack(release, source, digits_zoo, tmp_path / "cwd", "--out", out, expected=("--out", *expected))
    assert tree_digest(source, release) == before and paths(source, release) == listed


def test_a_refused_attack_leaves_no_folder_it_created(copies, tmp_path: Path, digits_zoo: Path) -> None:
    """The suite file is written, then loaded as ``run`` loads it: a refusal there removed only the innermost new
    folder."""
    source, release = copies
    out = tmp_path / "runs" / "a" / "b"
    attack(
        release,
        source,
        digits_zoo,
        tmp_path / "cwd",
        "--out",
        out,
        "--public",
        "{name: digits, params: {split: nope}}",
        expected=("split",),
    )
    assert not (tmp_path / "runs").exists()
    (tmp_path / "empty").mkdir()
    attack(
        release,
        source,
        digits_zoo,
        tmp_path / "cwd",
        "--out",
        tmp_path / "empty",
        "--public",
        "{name: digits, params: {split: nope}}",
        expected=("split",),
    )
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_finished_attack_run_is_one_encode_overwrite_may_replace(copies, tmp_path: Path, digits_zoo: Path) -> None:
    """``attack`` marks its finished run file by file, so ``encode --overwrite`` can prove the folder is a run's and
    replace it."""
    from nonxfer_bench.core.atomic import MARKER

    source, release = copies
    cwd = tmp_path / "cwd"
    for _ in range(2):  # the second run resumes the first, in its own marked folder
        done = run_cli(
            "attack",
            release,
            "--originals",
            source,
            "--zoo",
            digits_zoo,
            "--protocol",
            NE_V1,
            "--ensemble",
            "fast",
            cwd=cwd,
        )
        assert done.code == 0, done.err[-2000:]
    assert json.loads((release / "attack" / MARKER).read_text())["written_by"] == "nonxfer-bench attack"
    assert run_cli(*encode_args(source, release, digits_zoo, "30", "--overwrite"), cwd=cwd).code == 0
    assert not (release / "attack").exists()
