"""The array cache (atomic, bounded), the memory-mapped dataset cache and streamed release batches."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.datasets.base import load_cached, load_dataset
from nonxfer_bench.execution.runner import CleanInputs, Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model
from tests.helpers import digits_suite

A, B, C, D, E, F = (f"{n:016x}" for n in range(6))  # keys are hex digests


def test_an_entry_reads_back_memory_mapped_and_identical(tmp_path):
    cache = ArrayCache("kind", root=tmp_path, limit_bytes=10**6)
    array = np.arange(120, dtype=np.uint8).reshape(2, 3, 4, 5)
    cache.put(D, array, {"labels": [1, 2]})
    stored, meta = cache.get(D)
    assert isinstance(stored, np.memmap) and np.array_equal(stored, array) and meta == {"labels": [1, 2]}
    assert cache.get(E) is None
    with pytest.raises(ValueError, match="hex digest"):
        cache.get("other")


def test_a_write_killed_before_its_metadata_leaves_no_entry_and_is_cleaned_up(tmp_path, monkeypatch):
    cache = ArrayCache("kind", root=tmp_path, limit_bytes=10**6)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    real_dumps = __import__("json").dumps
    monkeypatch.setattr("nonxfer_bench.core.cache.json.dumps", killed)  # dies after the array, before the metadata
    with pytest.raises(KeyboardInterrupt):
        cache.put(D, np.zeros(10, np.uint8))
    assert cache.get(D) is None
    assert sorted(p.name for p in cache.folder.iterdir()) == [
        f"{D}.npy",
        "CACHEDIR.TAG",
    ]  # no temporary file left behind
    monkeypatch.setattr("nonxfer_bench.core.cache.json.dumps", real_dumps)
    cache.put(E, np.ones(10, np.uint8))
    assert f"{D}.npy" in {p.name for p in cache.folder.iterdir()}  # young: another process may be between its renames
    hours_ago = time.time() - 2 * 3600
    os.utime(cache.folder / f"{D}.npy", (hours_ago, hours_ago))
    cache.put(F, np.ones(10, np.uint8))
    assert sorted(p.name for p in cache.folder.iterdir()) == [
        *sorted(f"{k}.{s}" for k in (F, E) for s in ("json", "npy")),
        "CACHEDIR.TAG",
    ]  # the old orphan is gone


def test_the_least_recently_used_entries_go_when_the_limit_is_exceeded(tmp_path):
    cache = ArrayCache(
        "kind", root=tmp_path, limit_bytes=2500
    )  # two 1000-byte arrays with their headers fit, three do not
    for key in (A, B):
        cache.put(key, np.zeros(1000, np.uint8))
    assert cache.get(A) is not None  # A is now more recently used than B
    cache.put(C, np.zeros(1000, np.uint8))
    assert cache.get(B) is None and cache.get(A) is not None and cache.get(C) is not None


def test_the_dataset_is_decoded_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NXB_CACHE", str(tmp_path))
    first = load_cached("digits", {}, 50, 0)
    direct = load_dataset("digits", {}).subset(50, 0)
    assert torch.equal(first.images, direct.images) and torch.equal(first.labels, direct.labels)
    monkeypatch.setattr("nonxfer_bench.datasets.digits.Digits.load", lambda self: pytest.fail("decoded again"))
    again = load_cached("digits", {}, 50, 0)
    assert torch.equal(again.images, direct.images) and again.classes == direct.classes
    assert len(list((tmp_path / "datasets").glob("*.npy"))) == 1


def test_streamed_clean_inputs_batches_equal_the_batches_of_the_whole_converted_set(monkeypatch):
    images = load_dataset("digits", {"size": 8}).subset(40, 0).images  # 8 px, resized to the model's 16 px
    model = build_model(
        ModelSpec(
            name="vit",
            arch="vit_tiny_patch16_224",
            preprocess={"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]},
            kwargs=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=12, depth=1, num_heads=2, num_classes=10),
        )
    )
    kept = CleanInputs(images, model)
    monkeypatch.setenv("NXB_RELEASE_MAX_GB", "0")
    streamed = CleanInputs(images, model)
    assert kept.prepared is not None and streamed.prepared is None
    for start in range(0, 40, 16):
        assert torch.equal(streamed.batch(start, 16), kept.batch(start, 16))


def test_a_streamed_run_gives_the_cells_of_an_in_memory_run(tmp_path, digits_zoo, monkeypatch):
    def cells(name):
        (tmp_path / name).mkdir()
        suite = load_suite(
            digits_suite(tmp_path / name, digits_zoo, dataset={"name": "digits", "limit": 60}, batch_size=25)
        )
        return {c.key: c for c in Runner(suite).run().cells}

    in_memory = cells("memory")
    monkeypatch.setenv("NXB_RELEASE_MAX_GB", "0")
    assert cells("streamed") == in_memory


def test_a_recomputed_group_reuses_the_cached_diffusion_outputs_and_gives_the_same_cells(tmp_path, monkeypatch):
    from nonxfer_bench.attacks.reconstruction import DiffusionPurification
    from tests.helpers import write_yaml

    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    suite = load_suite(
        write_yaml(
            tmp_path / "suite.yaml",
            {
                "name": "diffusion-cache",
                "dataset": {"name": "fashion_mnist", "params": {"split": "test"}, "limit": 12},
                "zoo": str(root / "suites/zoo/fashion.yaml"),
                "authorized": ["vit_a"],
                "encoders": [{"name": "reference", "strengths": [20.0]}],
                "attacks": [
                    {
                        "name": "diffusion",
                        "params": {"source": str(root / "suites/zoo/weights/fashion-ddpm"), "steps": 2},
                        "strengths": [0.1],
                    }
                ],
                "batch_size": 8,
                "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 0},
                "tracking": {"enabled": False},
            },
        )
    )
    first = {c.key: c for c in Runner(suite).run().cells}
    assert (
        len(list((tmp_path / "cache" / "attacked").glob("*.json"))) == 2
    )  # the reference release x 2 batches (the clean images face no attack)
    monkeypatch.setattr(DiffusionPurification, "forward", lambda *args: pytest.fail("purified again"))
    again = Runner(suite, fresh=True).run()
    assert (
        again.computed_groups == 1 and {c.key: c for c in again.cells} == first
    )  # the reference release (no clean group: no identity)
