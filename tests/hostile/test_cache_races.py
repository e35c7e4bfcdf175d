"""Defect 8: processes sharing one NXB_CACHE. Temporary names are unique, eviction skips files that vanish
or are still being written, a mapped entry stays readable after eviction, and an entry that disappears
between the check and the read is recomputed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nonxfer_bench.cli import main
from nonxfer_bench.core.cache import ArrayCache
from tests.helpers import digits_suite
from tests.hostile.conftest import refused

HELD, A, B, HALF = (f"{n:016x}" for n in range(4))  # keys are hex digests

HAMMER = textwrap.dedent(
    """
    import sys, numpy as np
    from nonxfer_bench.core.cache import ArrayCache
    cache = ArrayCache("race", limit_bytes=6000)
    rng = np.random.default_rng(int(sys.argv[1]))
    for i in range(150):
        key = f"{rng.integers(0, 12):016x}"
        cache.put(key, np.full(400, i, dtype=np.uint8), {"writer": sys.argv[1]})
        hit = cache.get(f"{rng.integers(0, 12):016x}")
        if hit is not None:
            assert hit[0].shape == (400,) and len(set(hit[0].tolist())) == 1, "a torn entry"
    """
)


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    env = {**os.environ, "NXB_CACHE": str(tmp_path / "cache")}
    processes = [
        subprocess.Popen([sys.executable, "-c", HAMMER, str(seed)], env=env, stderr=subprocess.PIPE, text=True)
        for seed in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err


def test_a_mapped_entry_survives_eviction(tmp_path: Path) -> None:
    cache = ArrayCache("kind", root=tmp_path, limit_bytes=2500)
    cache.put(HELD, np.arange(1000, dtype=np.float32)[:250])
    held, _ = cache.get(HELD)
    other = ArrayCache("kind", root=tmp_path, limit_bytes=2500)
    for i in range(4):
        other.put(f"{i + 100:016x}", np.full(1000, i, dtype=np.uint8))
    assert np.array_equal(held, np.arange(250, dtype=np.float32))


def test_eviction_ignores_files_that_vanish_or_are_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's array renamed into place before its metadata is not an orphan yet; a file that
    vanishes while eviction looks at it is skipped."""
    cache = ArrayCache("kind", root=tmp_path, limit_bytes=10**6)
    cache.put(A, np.zeros(10, dtype=np.uint8))
    np.save(tmp_path / "kind" / f"{HALF}.npy", np.zeros(10, dtype=np.uint8))  # the other writer's metadata comes next
    real_stat = Path.stat

    def vanishing(path: Path, *args, **kwargs):
        if path.name.startswith(f"{A}."):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", vanishing)
    cache.put(B, np.zeros(10, dtype=np.uint8))
    monkeypatch.undo()
    assert (tmp_path / "kind" / f"{HALF}.npy").is_file()
    assert B in cache


def test_an_entry_whose_array_vanished_is_a_miss(tmp_path: Path) -> None:
    cache = ArrayCache("kind", root=tmp_path, limit_bytes=10**6)
    cache.put(A, np.zeros(10, dtype=np.uint8))
    (tmp_path / "kind" / f"{A}.npy").unlink()
    assert cache.get(A) is None


def results(store: Path) -> dict[str, tuple]:
    """Each cell's numbers by key (the last line of a key wins, as in the store); timings are left out."""
    cells = {json.loads(line)["key"]: json.loads(line) for line in store.read_text().splitlines()}
    return {
        key: tuple(cell.get(name) for name in ("n", "accuracy", "agreement", "attacked_psnr", "attacked_ssim"))
        for key, cell in cells.items()
    }


def test_attacked_outputs_evicted_between_runs_are_recomputed(
    tmp_path: Path, digits_zoo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half-evicted attack outputs (metadata left, arrays gone): the group recomputes them, same cells."""
    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    suite = digits_suite(
        tmp_path,
        digits_zoo,
        dataset={"name": "digits", "limit": 40},
        batch_size=20,
        encoders=[{"name": "patch", "strengths": [10.0]}],
        attacks=[{"name": "fgsm", "strengths": [1.0]}],
    )
    assert main(["run", str(suite), "--no-tracking"]) == 0
    store = tmp_path / "runs" / "digits" / "cells.jsonl"
    first = results(store)
    arrays = list((tmp_path / "cache" / "attacked").glob("*.npy"))
    assert arrays
    arrays[-1].unlink()
    assert main(["run", str(suite), "--no-tracking", "--fresh"]) == 0
    assert results(store) == first


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e400", "abc", "0x10", "20 GB"])
def test_cache_limit_variable(cwd: Path, value: str, tmp_path: Path, digits_zoo: Path) -> None:
    suite = digits_suite(tmp_path, digits_zoo)
    refused("run", suite, "--no-tracking", cwd=cwd, env={"NXB_CACHE_MAX_GB": value}, expected=("NXB_CACHE_MAX_GB",))


def test_cache_folder_that_is_a_file(cwd: Path, tmp_path: Path, digits_zoo: Path) -> None:
    (tmp_path / "file").write_text("x")
    suite = digits_suite(tmp_path, digits_zoo)
    refused("run", suite, "--no-tracking", cwd=cwd, env={"NXB_CACHE": str(tmp_path / "file")}, expected=("NXB_CACHE",))
