"""Issue 23, data loss 1-4 and the GPU bundle: a command writes only inside the folder it was given or created,
and replaces only what it can prove it wrote. Each case plants the victim's files where the command used to
delete them and checks they survive byte for byte."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nonxfer_bench.cli import main
from tests.helpers import digits_suite
from tests.hostile.conftest import REPO, error_line, refused, run_cli, tree_digest
from tests.hostile.test_releases import encode_args, make_images

DDPM = REPO / "suites" / "zoo" / "weights" / "fashion-ddpm"
SPEC = REPO / "suites" / "zoo" / "fashion-ddpm.yaml"
HOURS_AGO = time.time() - 2 * 3600


def load_script(name: str):
    """A benchmarks/ script as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "benchmarks" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_ddpm_config(path: Path, output: str) -> Path:
    """The committed DDPM config shrunk to seconds of CPU (8 px, two 8-channel levels, 16 images), writing to
    ``output``."""
    data = yaml.safe_load(SPEC.read_text())
    data.update(
        output=output, image_size=8, block_out_channels=[8, 8], attention=False, num_train_timesteps=20, batch_size=4
    )
    data["dataset"]["limit"] = 16
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def zoo_copy(tmp_path: Path) -> Path:
    """A project's suites/zoo/: a zoo file, weight files and the committed DDPM folder beside them."""
    zoo = tmp_path / "suites" / "zoo"
    (zoo / "weights").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "zoo" / "fashion.yaml", zoo / "fashion.yaml")
    for name in ("vit_a", "vit_b", "resnet"):
        (zoo / "weights" / f"{name}.safetensors").write_bytes(os.urandom(256))
    shutil.copytree(DDPM, zoo / "weights" / "fashion-ddpm")
    return zoo


# --- 1. train diffusion --------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["weights", "fashion.yaml", "weights/vit_a.safetensors"])
def test_train_diffusion_never_replaces_what_it_did_not_write(zoo_copy: Path, cwd: Path, output: str) -> None:
    """`output: weights` (a typo for weights/fashion-ddpm) deleted every zoo weight file; `output: fashion.yaml` the zoo
    file."""
    config = tiny_ddpm_config(zoo_copy / "typo.yaml", output)
    before = tree_digest(zoo_copy)
    refused(
        "train", "diffusion", config, "--steps", "2", cwd=cwd, expected=(str(zoo_copy / output), "new or empty folder")
    )
    assert tree_digest(zoo_copy) == before
    assert sorted(p.name for p in (zoo_copy / "weights").iterdir()) == [
        "fashion-ddpm",
        "resnet.safetensors",
        "vit_a.safetensors",
        "vit_b.safetensors",
    ]


def foreign_file(folder: Path) -> None:
    (folder / "notes.txt").write_text("mine")


def other_command(folder: Path) -> None:
    marker = folder / "WRITTEN_BY.json"
    marker.write_text(marker.read_text().replace("train diffusion", "train zoo"))


def edited_card(folder: Path) -> None:
    with open(folder / "MODEL_CARD.md", "a") as handle:
        handle.write("my notes\n")


@pytest.mark.parametrize(
    ("change", "expected"),
    [(foreign_file, "'notes.txt', which WRITTEN_BY.json does not list"), (other_command, "WRITTEN_BY.json names"),
     (edited_card, "'MODEL_CARD.md' changed"), (lambda folder: (folder / "WRITTEN_BY.json").unlink(), "holds no "
                                                                                                      "WRITTEN_BY.json"),
     (lambda folder: (folder / "WRITTEN_BY.json").write_text("{"), "WRITTEN_BY.json is damaged")],
    ids=["foreign file", "other command", "edited card", "no marker", "damaged marker"],
)  # fmt: skip
def test_train_diffusion_replaces_its_own_folder_only_while_it_holds_nothing_else(
    zoo_copy: Path, cwd: Path, change, expected: str
) -> None:
    folder = zoo_copy / "weights" / "fashion-ddpm"
    change(folder)
    before = tree_digest(folder)
    refused(
        "train",
        "diffusion",
        tiny_ddpm_config(zoo_copy / "ddpm.yaml", "weights/fashion-ddpm"),
        "--steps",
        "2",
        cwd=cwd,
        expected=(expected,),
    )
    assert tree_digest(folder) == before


def test_the_committed_ddpm_is_provably_written_by_train_diffusion() -> None:
    """Its marker lists exactly its files, unchanged: retraining into it (and only into it) works."""
    from nonxfer_bench.core.atomic import written_by

    written_by("nonxfer-bench train diffusion")(DDPM)
    listed = json.loads((DDPM / "WRITTEN_BY.json").read_text())["files"]
    assert set(listed) == {
        p.relative_to(DDPM).as_posix() for p in DDPM.rglob("*") if p.is_file() and p.name != "WRITTEN_BY.json"
    }


def test_a_file_planted_while_the_staging_folder_is_built_stops_the_swap(tmp_path: Path) -> None:
    """The check runs again at swap time: a file that appeared in the command's own folder meanwhile is not deleted."""
    from nonxfer_bench.core.atomic import staged_folder, write_marker, written_by
    from nonxfer_bench.core.errors import UserError

    command = "nonxfer-bench train diffusion"
    target = tmp_path / "ddpm"
    with staged_folder(target, written_by(command)) as staging:
        (staging / "unet.bin").write_bytes(b"first")
        write_marker(staging, command)
    with pytest.raises(UserError, match="'arrived.txt', which WRITTEN_BY.json does not list"):
        with staged_folder(target, written_by(command)) as staging:
            (staging / "unet.bin").write_bytes(b"second")
            write_marker(staging, command)
            (target / "arrived.txt").write_text("someone else's")
    assert sorted(p.name for p in target.iterdir()) == ["WRITTEN_BY.json", "arrived.txt", "unet.bin"]
    assert (target / "unet.bin").read_bytes() == b"first" and (target / "arrived.txt").read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["ddpm"], "the staging folder was left behind"


def test_the_stale_staging_sweep_takes_only_the_names_staging_makes(tmp_path: Path) -> None:
    """Dead-pid look-alikes that staged_folder never makes (a file, another suffix, a user's folder) survive."""
    from nonxfer_bench.core.atomic import staged_folder

    target = tmp_path / "model"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f".model.staging-{dead}-abcd_123"
    stale.mkdir()
    keep = [
        tmp_path / f".model.staging-{dead}-abcd_123.txt",
        tmp_path / f".model.backup-{dead}-abcdefgh",
        tmp_path / f".model.old-{dead}-abcdefgh.keep",
    ]
    keep[0].write_text("a file")
    for folder in keep[1:]:
        folder.mkdir()
        (folder / "mine.txt").write_text("mine")
    before = tree_digest(*keep)
    with staged_folder(target, lambda folder: None) as staging:
        (staging / "new.txt").write_text("new")
    assert not stale.exists() and tree_digest(*keep) == before and (target / "new.txt").read_text() == "new"


# --- 2. encode ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "--overwrite"])
@pytest.mark.parametrize(
    "manifest", ["{}", "not json", "release"], ids=["empty manifest", "garbage manifest", "a release's manifest"]
)
def test_encode_never_replaces_a_folder_that_merely_holds_a_manifest(
    tmp_path: Path, cwd: Path, digits_zoo: Path, manifest: str, overwrite: list[str]
) -> None:
    """A folder with a file named manifest.json lost its other files, even when the manifest was a release's."""
    source = make_images(tmp_path / "photos")
    output = tmp_path / "documents"
    if manifest == "release":
        assert main(encode_args(source, output, digits_zoo)) == 0  # a real release, then the user's own file in it
    else:
        output.mkdir()
        (output / "manifest.json").write_text(manifest)
    (output / "thesis.tex").write_text("four years of work")
    before = tree_digest(output)
    refused(
        *encode_args(source, output, digits_zoo, "30", *overwrite), cwd=cwd, expected=(str(output), "not a release")
    )
    assert tree_digest(output) == before


def test_encode_replaces_an_earlier_release_only_with_overwrite(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    source = make_images(tmp_path / "photos")
    output = tmp_path / "release"
    assert main(encode_args(source, output, digits_zoo)) == 0
    before = tree_digest(output)
    refused(*encode_args(source, output, digits_zoo, "30"), cwd=cwd, expected=(str(output), "--overwrite"))
    assert tree_digest(output) == before
    assert run_cli(*encode_args(source, output, digits_zoo, "30", "--overwrite"), cwd=cwd).code == 0
    assert json.loads((output / "manifest.json").read_text())["encoder"]["strength"] == 30


# --- 3. the array cache ----------------------------------------------------------------------------------


def plant_old(folder: Path, names: list[str]) -> dict[str, str]:
    """Files of someone else's under ``names`` in ``folder``, two hours old; their digests."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(os.urandom(64))
        os.utime(folder / name, (HOURS_AGO, HOURS_AGO))
    return tree_digest(*(folder / name for name in names))


def test_a_cache_pointed_at_the_users_data_deletes_none_of_it(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """`NXB_CACHE=/data nonxfer-bench run` deleted the user's files under /data/datasets/ older than an hour."""
    data = tmp_path / "data"
    plant_old(data / "datasets", ["scan.png", "notes.txt", "survey.json", "survey.npy", ".hidden"])
    before = tree_digest(data)
    suite = digits_suite(tmp_path, digits_zoo, dataset={"name": "digits", "limit": 20}, batch_size=20,
                         encoders=[{"name": "patch", "strengths": [0.0]}], attacks=[{"name": "identity"}])  # fmt: skip
    refused("run", suite, "--no-tracking", cwd=cwd, env={"NXB_CACHE": str(data), "NXB_CACHE_MAX_GB": "0"},
            expected=("NXB_CACHE", "datasets/ holds files the cache did not write", "new or empty folder"))  # fmt: skip
    assert tree_digest(data) == before and sorted(p.name for p in data.iterdir()) == ["datasets"]


def test_eviction_in_the_caches_own_folder_takes_only_its_own_entries(tmp_path: Path) -> None:
    """Files that appeared later in a folder the cache made (tagged) survive its orphan sweep and its eviction."""
    from nonxfer_bench.core.cache import ArrayCache

    cache = ArrayCache("datasets", root=tmp_path, limit_bytes=0)
    cache.put("0" * 16, np.zeros(10, np.uint8))
    assert (
        (tmp_path / "datasets" / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    names = ["photo.json", "photo.npy", "a.npy", ".a.npy.abcdefgh.partial", "0123.npy", "CACHEDIR.TAG.bak"]
    before = plant_old(tmp_path / "datasets", names)
    cache.put("1" * 16, np.zeros(10, np.uint8))  # over the limit of 0 bytes: every other entry goes
    assert "0" * 16 not in cache and "1" * 16 in cache
    assert tree_digest(*(tmp_path / "datasets" / name for name in names)) == before


# --- 4. the runtime benchmark ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> Path:
    """A finished small digits run (cells, run log): the suite file."""
    root = tmp_path_factory.mktemp("timed")
    suite = digits_suite(
        root,
        digits_zoo,
        name="timed",
        dataset={"name": "digits", "limit": 20},
        batch_size=20,
        encoders=[{"name": "patch", "strengths": [0.0]}],
        attacks=[{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
    )
    assert main(["run", str(suite), "--no-tracking"]) == 0
    return suite


def runtime_outcome(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    runtime = load_script("runtime")
    try:
        code = runtime.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_the_runtime_benchmark_keeps_a_table_with_whole_group_timings(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented command rewrote the committed RUNTIME.md from a fresh clone (no run logs) and dropped its
    whole-group timings: it now needs --replace, and even then keeps a table whose group timings it cannot measure."""
    out = tmp_path / "fashion-full"
    out.mkdir()
    shutil.copy(REPO / "results" / "fashion-full" / "RUNTIME.md", out / "RUNTIME.md")
    shutil.copy(REPO / "results" / "fashion-full" / "runtime.png", out / "runtime.png")
    before = tree_digest(out)
    code, err = runtime_outcome(capsys, finished_run, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--replace" in err
    log = finished_run.parent / "runs" / "timed" / "run.log"
    log.rename(log.with_suffix(".away"))  # a fresh clone: no run log
    try:
        code, err = runtime_outcome(capsys, finished_run, "--out", out, "--replace")
    finally:
        log.with_suffix(".away").rename(log)
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "whole-group timings" in err
        and "fashion-full-subset: clean" in err
    )
    assert tree_digest(out) == before


def test_the_runtime_benchmark_replaces_its_own_table_when_asked(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert runtime_outcome(capsys, finished_run, "--out", out, "--machine", "first")[0] == 0
    assert runtime_outcome(capsys, finished_run, "--out", out, "--machine", "second", "--replace")[0] == 0
    assert "second" in (out / "RUNTIME.md").read_text() and "| patch | 1 |" in (out / "RUNTIME.md").read_text()


def test_the_documented_runtime_command_writes_under_runs() -> None:
    documented = [
        line
        for text in (
            (REPO / "docs" / "guides" / "findings.md").read_text(),
            (REPO / "benchmarks" / "runtime.py").read_text(),
        )
        for line in text.splitlines()
        if "benchmarks/runtime.py suites/" in line
    ]
    assert len(documented) == 2 and all("--out runs/" in line for line in documented), documented


# --- the GPU bundle --------------------------------------------------------------------------------------


def fashion_root(folder: Path, images: int = 12) -> Path:
    """A tiny valid Fashion-MNIST test split (IDX files, gzipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(
            bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (images, 28, 28)) + os.urandom(images * 784)
        )
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + images.to_bytes(4, "big") + bytes(range(images)))
    return folder


def bundle_outcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], out: Path, fashion: Path, pack=None
) -> tuple[int, str]:
    """gpu_bundle.main() with ``out`` as .gpu/ and ``pack`` standing in for the pip download (the test fails if
    it is reached and no ``pack`` is given: a refusal must come first)."""
    bundle = load_script("gpu_bundle")
    monkeypatch.setattr(bundle, "OUT", out)
    monkeypatch.setattr(
        bundle, "pack_site", pack or (lambda *args: pytest.fail("downloads started before the refusal"))
    )
    monkeypatch.setattr(sys, "argv", ["gpu_bundle.py", "--fashion-root", str(fashion), "--fashion-images", "5"])
    try:
        bundle.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_gpu_bundle_never_replaces_a_gpu_folder_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / ".gpu"
    out.mkdir()
    (out / "experiment.ipynb").write_text("someone's notebook")
    before = tree_digest(out)
    code, err = bundle_outcome(monkeypatch, capsys, out, fashion_root(tmp_path / "fashion"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "WRITTEN_BY.json" in err
    assert tree_digest(out) == before


def test_gpu_bundle_replaces_its_own_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The swap itself (pip stood in for by a fixed archive): a second bundle replaces the first, whole."""
    out, fashion = tmp_path / ".gpu", fashion_root(tmp_path / "fashion")

    def pack(staging: Path, python_version: str) -> Path:
        (staging / "site.tar.xz").write_bytes(python_version.encode())
        return staging / "site.tar.xz"

    assert bundle_outcome(monkeypatch, capsys, out, fashion, pack)[0] == 0
    first = tree_digest(out)
    assert bundle_outcome(monkeypatch, capsys, out, fashion, pack)[0] == 0
    assert sorted(Path(p).name for p in tree_digest(out)) == sorted(Path(p).name for p in first)
    assert json.loads((out / "WRITTEN_BY.json").read_text())["written_by"] == "python benchmarks/gpu_bundle.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gpu", "fashion"], "a staging folder was left behind"


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"\x1f\x8b" + os.urandom(200), lambda data: b"garbage",
     lambda data: gzip.compress(b"\x00\x00\x08\x03" + (10**6).to_bytes(4, "big") * 3)],
    ids=["truncated gzip", "garbage after the gzip magic", "not gzip", "header beyond the data"],
)  # fmt: skip
def test_gpu_bundle_refuses_a_corrupt_fashion_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], damage
) -> None:
    fashion = fashion_root(tmp_path / "fashion", images=200)
    images = fashion / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(damage(images.read_bytes()))
    code, err = bundle_outcome(monkeypatch, capsys, tmp_path / ".gpu", fashion)
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "t10k-images-idx3-ubyte.gz" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / ".gpu").exists()


def test_error_lines_name_foreign_files_as_excerpts(tmp_path: Path, cwd: Path, zoo_copy: Path) -> None:
    """A foreign file's name reaches the error line escaped and cut short (no raw newlines or escape codes)."""
    folder = zoo_copy / "weights" / "fashion-ddpm"
    (folder / ("\x1b[31mred\n" + "x" * 200)).write_text("x")
    line = error_line(
        run_cli("train", "diffusion", tiny_ddpm_config(zoo_copy / "ddpm.yaml", "weights/fashion-ddpm"), cwd=cwd)
    )
    assert "\x1b" not in line and "\\x1b[31mred\\n" in line and len(line) < 600
