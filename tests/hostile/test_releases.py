"""Defect 4: a release folder is all or nothing, encode never reads its own output, and verify reads only
what the manifest vouches for, inside the release."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nonxfer_bench.cli import main
from tests.hostile.conftest import error_line, refused, run_cli, tree_digest


def make_images(folder: Path, count: int = 6) -> Path:
    """``count`` small grayscale PNGs in the class folders ``0`` and ``1``."""
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / f"{i % 2}" / f"img{i}.png"  # class folders named by the digits zoo's classes
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(target)
    return folder


def encode_args(source: Path, output: Path, zoo: Path, strength: str = "20", *extra: str) -> list[str]:
    return [
        "encode",
        str(source),
        str(output),
        "--zoo",
        str(zoo),
        "--model",
        "vit_a",
        "--encoder",
        "patch",
        "--strength",
        strength,
        "--format",
        "png8",
        "--seed-key",
        "k",
        "--batch-size",
        "2",
        *extra,
    ]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> tuple[Path, Path]:
    """Source images and a release of them, encoded once for the module."""
    root = tmp_path_factory.mktemp("release")
    source = make_images(root / "photos")
    assert main(encode_args(source, root / "release", digits_zoo)) == 0
    return source, root / "release"


@pytest.fixture
def release(pristine: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(pristine[1], copy)
    return copy


def verify(release: Path, zoo: Path, cwd: Path, *extra: str, isolate: bool = False):
    """``verify`` against the class folders (labels), writing a fresh verify.json over an earlier one."""
    return run_cli(
        "verify",
        release,
        "--zoo",
        zoo,
        "--models",
        "vit_a",
        "--labels",
        "--overwrite",
        *extra,
        cwd=cwd,
        isolate=isolate,
    )


def edit_manifest(release: Path, change) -> None:
    path = release / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(change(manifest)))


@pytest.mark.parametrize("layout", ["output inside input", "input inside output", "same folder", "symlink to input"])
def test_encode_never_mixes_input_and_output(tmp_path: Path, cwd: Path, digits_zoo: Path, layout: str) -> None:
    source = make_images(tmp_path / "photos")
    before = tree_digest(source)
    output = {
        "output inside input": source / "0" / "release",
        "input inside output": tmp_path,
        "same folder": source,
        "symlink to input": tmp_path / "link",
    }[layout]
    if layout == "symlink to input":
        output.symlink_to(source)
    refused(*encode_args(source, output, digits_zoo), cwd=cwd, expected=("input",))
    assert tree_digest(source) == before


def test_killed_re_encode_leaves_the_old_release_whole(
    pristine: tuple[Path, Path], release: Path, cwd: Path, digits_zoo: Path
) -> None:
    before = tree_digest(release)
    killed = run_cli(
        *encode_args(pristine[0], release, digits_zoo, "30", "--overwrite"),
        cwd=cwd,
        env={"NXB_FAULT": "release_image_written:3"},
        isolate=True,
    )
    assert killed.code == -9, killed.err[-2000:]
    assert tree_digest(release) == before
    assert verify(release, digits_zoo, cwd).code == 0


def test_killed_first_encode_leaves_no_release(
    pristine: tuple[Path, Path], tmp_path: Path, cwd: Path, digits_zoo: Path
) -> None:
    output = tmp_path / "new"
    killed = run_cli(
        *encode_args(pristine[0], output, digits_zoo),
        cwd=cwd,
        env={"NXB_FAULT": "release_image_written:3"},
        isolate=True,
    )
    assert killed.code == -9
    assert not output.exists() or not any(output.iterdir())
    error_line(verify(output, digits_zoo, cwd), "manifest.json")


def test_finished_re_encode_replaces_every_file(
    pristine: tuple[Path, Path], release: Path, tmp_path: Path, cwd: Path, digits_zoo: Path
) -> None:
    fewer = shutil.copytree(pristine[0], tmp_path / "fewer")
    (fewer / "0" / "img0.png").unlink()
    assert run_cli(*encode_args(fewer, release, digits_zoo, "30", "--overwrite"), cwd=cwd).code == 0
    assert not (release / "0" / "img0.png").exists(), "a file of the old release survived the new one"
    assert json.loads((release / "manifest.json").read_text())["encoder"]["strength"] == 30
    assert verify(release, digits_zoo, cwd).code == 0


MANIFEST_EDITS = {
    "absolute file path": lambda m: {**m, "images": [{**m["images"][0], "file": "/etc/hostname"}, *m["images"][1:]]},
    "parent file path": lambda m: {**m, "images": [{**m["images"][0], "file": "../outside.png"}, *m["images"][1:]]},
    "inner parent path": lambda m: {
        **m,
        "images": [{**m["images"][0], "file": "0/../../outside.png"}, *m["images"][1:]],
    },
    "file not a string": lambda m: {**m, "images": [{**m["images"][0], "file": 7}, *m["images"][1:]]},
    "missing file key": lambda m: {**m, "images": [{"source": "x.png"}, *m["images"][1:]]},
    "duplicate entry": lambda m: {**m, "images": [m["images"][0], *m["images"]]},
    "no images": lambda m: {**m, "images": []},
    "images not a list": lambda m: {**m, "images": {"a": 1}},
    "unknown format": lambda m: {**m, "format": "png7"},
    "missing decode": lambda m: {k: v for k, v in m.items() if k != "decode"},
    "missing model": lambda m: {k: v for k, v in m.items() if k != "model"},
    "not a mapping": lambda m: [m],
    "missing listed file": lambda m: {**m, "images": [*m["images"], {**m["images"][0], "file": "0/ghost.png"}]},
    "huge number": lambda m: {**m, "release_size": [10**30, 10**30, 10**30]},
    "missing authorized_agreement": lambda m: {k: v for k, v in m.items() if k != "authorized_agreement"},
    "kept above n": lambda m: {**m, "authorized_agreement": {"kept": 7, "n": 6}},
    "agreement of no images": lambda m: {**m, "authorized_agreement": {"kept": 0, "n": 0}},
    "agreement not ints": lambda m: {**m, "authorized_agreement": {"kept": 5.5, "n": 6}},
    "missing ssim_mean": lambda m: {k: v for k, v in m.items() if k != "ssim_mean"},
    "ssim_mean not a number": lambda m: {**m, "ssim_mean": "high"},
}


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS))
def test_verify_refuses_a_manifest_it_cannot_trust(
    release: Path, tmp_path: Path, cwd: Path, digits_zoo: Path, edit: str
) -> None:
    (tmp_path / "outside.png").write_bytes((release / "0" / "img0.png").read_bytes())
    edit_manifest(release, MANIFEST_EDITS[edit])
    error_line(verify(release, digits_zoo, cwd, isolate=edit == "huge number"), "manifest.json")


def test_verify_refuses_a_source_outside_the_originals(
    pristine: tuple[Path, Path], release: Path, cwd: Path, digits_zoo: Path
) -> None:
    edit_manifest(
        release, lambda m: {**m, "images": [{**m["images"][0], "source": "../../etc/hostname"}, *m["images"][1:]]}
    )
    error_line(verify(release, digits_zoo, cwd, "--originals", str(pristine[0])), "manifest.json")


@pytest.mark.parametrize("intruder", ["extra image", "symlinked image", "extra folder"])
def test_verify_refuses_files_the_manifest_does_not_vouch_for(
    release: Path, tmp_path: Path, cwd: Path, digits_zoo: Path, intruder: str
) -> None:
    if intruder == "extra image":
        shutil.copy(release / "0" / "img0.png", release / "0" / "planted.png")
    elif intruder == "symlinked image":
        outside = tmp_path / "outside.png"
        shutil.copy(release / "0" / "img0.png", outside)
        (release / "0" / "img0.png").unlink()
        os.symlink(outside, release / "0" / "img0.png")
    else:
        (release / "9").mkdir()
        shutil.copy(release / "0" / "img0.png", release / "9" / "x.png")
    error_line(verify(release, digits_zoo, cwd), str(release))


@pytest.mark.parametrize(
    "damage",
    ["not json", "empty", "binary", "huge"],
)
def test_verify_refuses_a_damaged_manifest(release: Path, cwd: Path, digits_zoo: Path, damage: str) -> None:
    path = release / "manifest.json"
    path.write_bytes(
        {
            "not json": b"{images: [",
            "empty": b"",
            "binary": os.urandom(256),
            "huge": b'{"images": [' + b'{"file": "x.png"},' * 1_000_000 + b"{}]}",
        }[damage]
    )
    error_line(verify(release, digits_zoo, cwd, isolate=damage == "huge"), "manifest.json")


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "decompression bomb", "zero bytes"])
def test_verify_refuses_a_hostile_released_image(release: Path, cwd: Path, digits_zoo: Path, damage: str) -> None:
    from tests.hostile.test_hostile_files import bomb_png

    target = release / "0" / "img0.png"
    data = target.read_bytes()
    target.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "random bytes": os.urandom(2048),
            "decompression bomb": bomb_png(60000),
            "zero bytes": b"",
        }[damage]
    )
    error_line(verify(release, digits_zoo, cwd, isolate=damage == "decompression bomb"), "img0.png")


ATTACK_HEADER = "# Written by `nonxfer-bench attack`"  # the first line of the suite file an attack run writes


def attack_run(release: Path, marked: bool = True) -> Path:
    """A release's ``attack/`` folder as a finished attack run leaves it: its suite file, a result, and (``marked``)
    the ownership marker the command writes when the run finishes."""
    from nonxfer_bench.core.atomic import write_marker

    run = release / "attack"
    (run / "results").mkdir(parents=True)
    (run / "suite.yaml").write_text(f"{ATTACK_HEADER}: protocol ne-v1 (fast)\nname: release\n")
    (run / "results" / "leaderboard.md").write_text("# leaderboard\n")
    if marked:
        write_marker(run, "nonxfer-bench attack")
    return run


def test_encode_overwrite_replaces_a_release_with_its_finished_attack_run(
    pristine, release: Path, cwd: Path, digits_zoo: Path
) -> None:
    attack_run(release)
    assert run_cli(*encode_args(pristine[0], release, digits_zoo, "30", "--overwrite"), cwd=cwd).code == 0
    assert (
        not (release / "attack").exists()
        and json.loads((release / "manifest.json").read_text())["encoder"]["strength"] == 30
    )


FOREIGN_IN_ATTACK = {
    "a file, no run": (
        lambda release: (release / "attack").mkdir() or (release / "attack" / "thesis.txt").write_text("draft"),
        "suite.yaml",
    ),
    "a file beside a finished run": (
        lambda release: (attack_run(release) / "thesis.txt").write_text("draft"),
        "thesis.txt",
    ),
    "a folder in a finished run": (
        lambda release: (
            (attack_run(release) / "mine").mkdir() or (release / "attack" / "mine" / "data.csv").write_text("x")
        ),
        "data.csv",
    ),
    "a result edited after the run": (
        lambda release: (attack_run(release) / "results" / "leaderboard.md").write_text("mine"),
        "leaderboard.md",
    ),
    "a run that never finished": (lambda release: attack_run(release, marked=False), "WRITTEN_BY.json"),
    "a suite file of its own": (
        lambda release: (release / "attack").mkdir() or (release / "attack" / "suite.yaml").write_text("name: mine\n"),
        "suite.yaml",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN_IN_ATTACK))
def test_encode_overwrite_never_deletes_what_an_attack_run_did_not_write(
    pristine, release: Path, cwd: Path, digits_zoo: Path, case: str
) -> None:
    damage, named = FOREIGN_IN_ATTACK[case]
    damage(release)
    before = tree_digest(release)
    refused(
        *encode_args(pristine[0], release, digits_zoo, "30", "--overwrite"),
        cwd=cwd,
        expected=("not a release that encode may replace", named),
    )
    assert tree_digest(release) == before


def foreign_manifest(release: Path) -> None:
    """A folder of the user's own whose hand-written manifest has every key verify needs and lists its photo, with no
    SHA-256."""
    manifest = json.loads((release / "manifest.json").read_text())
    shutil.rmtree(release)
    release.mkdir()
    (release / "my_photo.png").write_bytes(b"my photo")
    (release / "manifest.json").write_text(
        json.dumps({**manifest, "images": [{"file": "my_photo.png", "source": "0/img0.png"}]})
    )


UNPROVEN = {
    "a manifest without hashes": (foreign_manifest, "records no sha256"),
    "a released file edited": (lambda release: (release / "0" / "img0.png").write_bytes(b"edited"), "0/img0.png"),
    "a key encode does not write": (lambda release: edit_manifest(release, lambda m: {**m, "mine": 1}), "'mine'"),
    "an entry key encode does not write": (
        lambda release: edit_manifest(
            release, lambda m: {**m, "images": [{**m["images"][0], "note": "x"}, *m["images"][1:]]}
        ),
        "'note'",
    ),
}


@pytest.mark.parametrize("case", list(UNPROVEN))
def test_encode_overwrite_replaces_only_a_release_its_manifest_proves(
    pristine, release: Path, cwd: Path, digits_zoo: Path, case: str
) -> None:
    damage, named = UNPROVEN[case]
    damage(release)
    before = tree_digest(release)
    refused(
        *encode_args(pristine[0], release, digits_zoo, "30", "--overwrite"),
        cwd=cwd,
        expected=("not a release that encode may replace", named),
    )
    assert tree_digest(release) == before


def test_a_release_has_the_modes_the_umask_gives(pristine, tmp_path: Path, digits_zoo: Path) -> None:
    """Staging through mkdtemp and mkstemp left the release folder 0700 and its manifest and card 0600 (its images
    0644)."""
    import stat

    mask = os.umask(0o022)
    try:
        assert main(encode_args(pristine[0], tmp_path / "release", digits_zoo)) == 0
    finally:
        os.umask(mask)
    release = tmp_path / "release"
    modes = {
        path.relative_to(release).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [release, *release.rglob("*")]
    }
    assert modes == {name: 0o755 if (release / name).is_dir() else 0o644 for name in modes}
