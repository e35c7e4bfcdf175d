"""Defect 9, files: hostile images, weight files, dataset files, suite files and weight sources end in one
line within the time and memory limits, never silently fall back to something else, and never run code."""

from __future__ import annotations

import copy
import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import DIGITS_ZOO, digits_suite, encode_args
from tests.hostile.conftest import error_line, refused, run_cli, suite_with_zoo


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int) -> bytes:
    """A PNG that declares ``side`` x ``side`` pixels in a few kilobytes (zeros compress to nothing)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(compressor.compress(row) for _ in range(min(side, 2000))) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


IMAGES = {
    "zero bytes": lambda: b"",
    "truncated png": lambda: png_bytes(np.zeros((20, 20), np.uint8))[:40],
    "text named png": lambda: b"hello, not an image\n" * 10,
    "random bytes": lambda: os.urandom(4096),
    "decompression bomb": lambda: bomb_png(60000),
    "one pixel": lambda: png_bytes(np.zeros((1, 1), np.uint8)),
    "one pixel row": lambda: png_bytes(np.zeros((1, 5000), np.uint8)),
}


@pytest.mark.parametrize("kind", list(IMAGES))
def test_hostile_input_images(tmp_path: Path, cwd: Path, digits_zoo: Path, kind: str) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    good = png_bytes(np.full((20, 20), 128, np.uint8))
    (source / "a.png").write_bytes(good)
    (source / "b.png").write_bytes(IMAGES[kind]())
    outcome = run_cli(
        *encode_args(source, tmp_path / "out", digits_zoo, "vit_a", "patch", 20, seed_key="k"),
        cwd=cwd,
        isolate=kind == "decompression bomb",
    )
    if kind.startswith("one pixel"):  # tiny but valid: resized like any other image
        assert outcome.code == 0, outcome.err[-2000:]
        return
    error_line(outcome, "b.png")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def weight_files() -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save({"weight": Exploit()}, buffer)
    return {
        "pickle with code.pth": buffer.getvalue(),
        "garbage.safetensors": os.urandom(512),
        "huge header.safetensors": struct.pack("<Q", 2**62) + b"{}",
        "empty.safetensors": b"",
        "empty.pth": b"",
        "text.pth": b"not a checkpoint",
    }


@pytest.mark.parametrize("name", list(weight_files()))
def test_hostile_weight_files(tmp_path: Path, cwd: Path, digits_zoo: Path, name: str) -> None:
    weights = tmp_path / name
    weights.write_bytes(weight_files()[name])
    models = copy.deepcopy(yaml.safe_load(digits_zoo.read_text())["models"])
    models[1]["weights"] = {"source": "file", "path": str(weights)}
    for model in models[::2]:
        model["weights"]["path"] = str(digits_zoo.parent / model["weights"]["path"])
    suite = suite_with_zoo(tmp_path, digits_zoo, models, dataset={"name": "digits", "limit": 20})
    refused("run", suite, "--no-tracking", cwd=cwd, expected=(name,), isolate=name.startswith("pickle"))
    assert not (cwd / "pwned").exists()


def test_dataset_root_that_does_not_exist_is_not_replaced(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """fashion_mnist with a root that does not exist must not silently read the Debian copy instead."""
    suite = digits_suite(
        tmp_path, digits_zoo, dataset={"name": "fashion_mnist", "params": {"root": str(tmp_path / "nowhere")}}
    )
    refused("run", suite, "--no-tracking", cwd=cwd, expected=("nowhere",))


def idx_header(count: int, side: int) -> bytes:
    return b"\x00\x00\x08\x03" + struct.pack(">III", count, side, side)


IDX_FILES = {
    "longer than its header": lambda: gzip.compress(idx_header(10, 28) + b"\x00" * (64 << 20), compresslevel=1),
    "declares 2^32 images": lambda: gzip.compress(idx_header(2**32 - 1, 2**16) + b"\x00" * 100),
    "truncated": lambda: gzip.compress(idx_header(10, 28) + b"\x00" * 100),
    "not gzip": lambda: b"plain garbage",
    "wrong magic": lambda: gzip.compress(b"\x01\x02\x03\x04" + b"\x00" * 100),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(IDX_FILES))
def test_hostile_dataset_files(tmp_path: Path, cwd: Path, digits_zoo: Path, kind: str) -> None:
    root = tmp_path / "fashion"
    root.mkdir()
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(IDX_FILES[kind]())
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + bytes(10))
    )
    suite = digits_suite(
        tmp_path, digits_zoo, dataset={"name": "fashion_mnist", "params": {"root": str(root)}, "limit": 5}
    )
    refused(
        "run",
        suite,
        "--no-tracking",
        cwd=cwd,
        expected=("t10k-images-idx3-ubyte.gz",),
        isolate=kind == "declares 2^32 images",
    )


SUITE_FILES = {
    "a folder": None,
    "empty": b"",
    "only null": b"null\n",
    "a list": b"- 1\n- 2\n",
    "binary": bytes(range(256)) * 4,
    "utf-16": "name: x\n".encode("utf-16"),
    "tabs": b"name:\tx\n\tdataset: 1\n",
    "duplicate keys": b"name: a\nname: b\n",
}


@pytest.mark.parametrize("kind", list(SUITE_FILES))
def test_hostile_suite_files(tmp_path: Path, cwd: Path, kind: str) -> None:
    path = tmp_path / "suite.yaml"
    if SUITE_FILES[kind] is None:
        path.mkdir()
    else:
        path.write_bytes(SUITE_FILES[kind])
    refused("list", "models", path, cwd=cwd, expected=(str(path),))


@pytest.mark.slow
def test_package_weight_source_imports_nothing(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """``source: package`` finds the package's folder without importing it (or any parent package)."""
    package = tmp_path / "site" / "evilpkg"
    (package / "sub" / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("open('IMPORTED', 'w').close()\n")
    (package / "sub" / "__init__.py").write_text("open('IMPORTED_SUB', 'w').close()\n")
    models = copy.deepcopy(DIGITS_ZOO["models"])
    for model in models:
        model["weights"] = {"source": "none"}
    models[1]["weights"] = {"source": "package", "package": "evilpkg.sub", "file": "models/*.pth"}
    suite = suite_with_zoo(tmp_path, digits_zoo, models)
    refused(
        "run",
        suite,
        "--no-tracking",
        cwd=cwd,
        env={"PYTHONPATH": str(tmp_path / "site")},
        expected=("evilpkg",),
        isolate=True,
    )
    assert not (cwd / "IMPORTED").exists() and not (cwd / "IMPORTED_SUB").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pretrained": True},
        {"checkpoint_path": "/tmp/x.pth"},
        {"pretrained_cfg_overlay": {"file": "/tmp/x.pth"}},
        {"pretrained_cfg": {"file": "/tmp/x.pth"}},
        {"pretrained_strict": False},
        {"cache_dir": "/tmp"},
    ],
    ids=lambda k: next(iter(k)),
)
def test_zoo_kwargs_that_load_weights_are_refused(tmp_path: Path, cwd: Path, digits_zoo: Path, kwargs: dict) -> None:
    zoo = copy.deepcopy(DIGITS_ZOO)
    zoo["models"][2]["kwargs"] = {**zoo["models"][2]["kwargs"], **kwargs}
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(zoo))
    refused("zoo", "train", path, cwd=cwd, expected=("models[2].kwargs", next(iter(kwargs))))
