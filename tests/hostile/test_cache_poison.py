"""Poisoned caches (issue 23): whatever sits in ``NXB_CACHE`` is checked before it is used. A damaged or planted
operator basis (zeros: the release carried no noise), decoded dataset or attack output is logged and computed again,
so a run over a poisoned cache gives the cells of a run over a clean one; and no solved basis is ever taken for
damaged (that would solve it again on every run)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import nonxfer_bench.linalg.operator as operator
from nonxfer_bench.cells.cell import RUN_METADATA
from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.linalg.operator import ConvOperator, cache_damage, cached_operator_subspace
from tests.helpers import digits_suite
from tests.hostile.conftest import run_cli
from tests.linalg.test_operator import GEOMETRIES, make_conv

K = 6


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty NXB_CACHE and an empty in-memory basis cache (so the disk entry is what is read)."""
    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    operator._CACHE.clear()
    yield tmp_path / "cache"
    operator._CACHE.clear()


def entry(cache: Path, kind: str) -> tuple[ArrayCache, str]:
    (array,) = (cache / kind).glob("*.npy")
    return ArrayCache(kind), array.stem


def orthonormal(rows: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``rows`` random orthonormal images: a valid basis, but not the layer's least sensitive one."""
    frame = torch.randn(int(np.prod(shape)), rows, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(frame)[0].T.reshape(rows, *shape).numpy()


def other_layer(array: np.ndarray, meta: dict) -> tuple[np.ndarray, dict]:
    conv, shape = make_conv("overlap_3x3_s1", seed=1)
    other = operator.operator_subspace(conv, shape, K, 1e-10)
    return other.basis.numpy(), meta | {"singular_values": other.singular_values.tolist()}


POISONS: dict[str, Callable[[np.ndarray, dict], tuple[np.ndarray, object]]] = {
    "zeros": lambda a, m: (np.zeros_like(a), m),
    "a NaN": lambda a, m: (np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a), m),
    "one direction fewer": lambda a, m: (a[:-1], m),
    "float32": lambda a, m: (a.astype(np.float32), m),
    "not orthonormal": lambda a, m: (np.concatenate([a[:1], a[:-1]]), m),
    "random orthonormal directions": lambda a, m: (orthonormal(len(a), a.shape[1:], 0), m),
    "another layer's basis and values": other_layer,
    "singular values that lie": lambda a, m: (a, m | {"singular_values": [0.0] * len(a)}),
    "an operator norm that lies": lambda a, m: (a, m | {"sigma_max_operator": 1e300}),
    "a missing key": lambda a, m: (a, {k: v for k, v in m.items() if k != "stop"}),
    "metadata that is a list": lambda a, m: (a, [m]),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_operator_basis_is_solved_again(cache: Path, caplog: pytest.LogCaptureFixture, poison: str) -> None:
    conv, shape = make_conv("overlap_3x3_s1")
    solved = cached_operator_subspace(conv, shape, K, 1e-10)
    disk, key = entry(cache, "operator")
    array, meta = disk.get(key)
    disk.put(key, *POISONS[poison](np.array(array), meta))
    operator._CACHE.clear()
    with caplog.at_level(logging.WARNING, logger="nonxfer_bench"):
        again = cached_operator_subspace(conv, shape, K, 1e-10)
    assert torch.equal(again.basis, solved.basis) and torch.equal(again.singular_values, solved.singular_values)
    assert again.sigma_max_operator == solved.sigma_max_operator and again.stop == solved.stop
    assert any("damaged" in record.message and key in record.message for record in caplog.records), caplog.text
    assert cache_damage(*disk.get(key), ConvOperator.of(conv, shape), K) is None  # the entry was replaced


@pytest.mark.parametrize("method", ["dense", "lobpcg"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_every_solved_basis_passes_the_check(cache: Path, name: str, method: str) -> None:
    """No false alarm for any layer geometry or solver (a false alarm would solve again on every run)."""
    conv, shape = make_conv(name)
    scale = torch.linspace(2.0, 4.0, shape[0])
    cached_operator_subspace(conv, shape, K, 1e-10, input_scale=scale, method=method)
    disk, key = entry(cache, "operator")
    assert cache_damage(*disk.get(key), ConvOperator.of(conv, shape, scale), K) is None


# --- the same through the CLI: a digits run over a poisoned cache gives the cells of the clean run ---

SUITE = {
    "dataset": {"name": "digits", "limit": 40}, "batch_size": 20,
    "encoders": [{"name": "operator", "strengths": [30.0], "params": {"k": 8}}],
    "attacks": [{"name": "identity"}, {"name": "fgsm", "strengths": [1.0]}],
}  # fmt: skip


def cells(run_dir: Path) -> dict[str, dict]:
    """The run's cells by key, without how they were computed (attack seconds, device, code)."""
    records = [json.loads(line) for line in (run_dir / "cells.jsonl").read_text().splitlines()]
    return {r["key"]: {k: v for k, v in r.items() if k not in RUN_METADATA} for r in records}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> tuple[Path, dict[str, dict]]:
    """A digits run (operator encoder, a cached attack) over an empty cache: the cache it filled and its cells."""
    root = tmp_path_factory.mktemp("clean")
    operator._CACHE.clear()
    outcome = run_cli(
        "run",
        digits_suite(root, digits_zoo, **SUITE),
        "--no-tracking",
        cwd=root / "cwd",
        env={"NXB_CACHE": str(root / "cache")},
    )
    assert outcome.code == 0, outcome.err[-3000:]
    return root / "cache", cells(root / "runs" / "digits")


def nan_first(array: np.ndarray) -> np.ndarray:
    poisoned = np.array(array)
    poisoned.flat[0] = np.nan
    return poisoned


CLI_POISONS: dict[str, tuple[str, Callable[[np.ndarray, dict], tuple[np.ndarray, dict]]]] = {
    "operator basis of zeros": ("operator", lambda a, m: (np.zeros_like(a), m)),
    "dataset labels one short": ("datasets", lambda a, m: (a, m | {"labels": m["labels"][:-1]})),
    "dataset label out of range": ("datasets", lambda a, m: (a, m | {"labels": [99, *m["labels"][1:]]})),
    "dataset images of another size": ("datasets", lambda a, m: (np.ascontiguousarray(a[:, :, ::2, ::2]), m)),
    "attack output with a NaN": ("attacked", lambda a, m: (nan_first(a), m)),
    "attack output of another shape": ("attacked", lambda a, m: (a[:, :, ::2], m)),
}


@pytest.mark.slow
@pytest.mark.parametrize("poison", sorted(CLI_POISONS))
def test_a_run_over_a_poisoned_cache(clean_run, tmp_path: Path, cwd: Path, digits_zoo: Path, poison: str) -> None:
    clean_cache, expected = clean_run
    shutil.copytree(clean_cache, tmp_path / "cache")
    kind, damage = CLI_POISONS[poison]
    disk = ArrayCache(kind, root=tmp_path / "cache")
    for path in sorted(disk.folder.glob("*.npy")):
        array, meta = disk.get(path.stem)
        disk.put(path.stem, *damage(np.array(array), meta))
    operator._CACHE.clear()  # a later process: the basis comes from disk
    outcome = run_cli(
        "run",
        digits_suite(tmp_path, digits_zoo, **SUITE),
        "--no-tracking",
        cwd=cwd,
        env={"NXB_CACHE": str(tmp_path / "cache")},
    )
    assert outcome.code == 0, outcome.err[-3000:]
    assert cells(tmp_path / "runs" / "digits") == expected
    assert "damaged" in outcome.out, outcome.out[-2000:]  # the notice says which entry and why
