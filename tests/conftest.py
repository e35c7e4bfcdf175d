"""Shared fixtures: one torch thread, offline hub, a private cache, and a tiny digits zoo trained once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "NXB_CACHE" not in os.environ:  # tests never read or fill the user's cache (~/.cache/nonxfer-bench)
    import atexit
    import shutil
    import tempfile

    os.environ["NXB_CACHE"] = tempfile.mkdtemp(prefix="nxb-test-cache-")
    _owner = os.getpid()  # forked or spawned workers must not remove it
    atexit.register(lambda: os.getpid() == _owner and shutil.rmtree(os.environ["NXB_CACHE"], ignore_errors=True))

from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(int(os.environ.get("NXB_TEST_THREADS", "1")))

DIGITS_PREPROCESS = {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]}
DIGITS_ZOO = {
    "dataset": {"name": "digits"},
    "train": {"epochs": 12, "batch_size": 64, "lr": 0.003, "weight_decay": 0.01},
    "models": [
        {
            "name": f"vit_{suffix}",
            "arch": "vit_tiny_patch16_224",
            "kwargs": {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 12, "depth": 2, "num_heads": 2, "num_classes": 10},
            "train": {"epochs": 30, "batch_size": 32, "lr": 0.003, "weight_decay": 0.01},
            "preprocess": DIGITS_PREPROCESS,
            "weights": {"source": "file", "path": f"vit_{suffix}.safetensors"},
            "seed": seed,
        }
        for suffix, seed in (("a", 0), ("b", 1))
    ]
    + [
        {
            "name": "res",
            "arch": "resnet18",
            "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10},
            "preprocess": DIGITS_PREPROCESS,
            "weights": {"source": "file", "path": "res.safetensors"},
            "seed": 2,
        }
    ],
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped without a CUDA device (benchmarks/gpu.py runs them on a GPU machine);
    each has a CPU twin, so a skip here is never the only test of a behaviour."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run by benchmarks/gpu.py on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def encoders_with_defaults() -> list[str]:
    """The registered encoders that can be made with their default parameters: every one but those that need files
    (``stored_release`` reads a release folder; tests/encoders/test_stored_release.py makes one for it)."""
    from nonxfer_bench.encoders import ENCODERS

    return [name for name in ENCODERS.names() if not any(field.is_required() for field in ENCODERS.get(name).Params.model_fields.values())]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def digits_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-model digits zoo (two ViT twins with an exact 4-dim patch null space, one ResNet), trained here.

    Two ViTs that differ only in their training seed are the hardest unauthorized pair.
    """
    from nonxfer_bench.training import train_zoo

    folder = tmp_path_factory.mktemp("digits_zoo")
    path = write_yaml(folder / "zoo.yaml", DIGITS_ZOO)
    train_zoo(path)
    return path


def digits_suite(tmp_path: Path, zoo: Path, **overrides) -> Path:
    """Write a small digits suite using the trained zoo; keys in ``overrides`` replace the defaults."""
    suite = {
        "name": "digits",
        "dataset": {"name": "digits", "limit": 120},
        "zoo": str(zoo),
        "authorized": ["vit_a"],
        "encoders": [{"name": "patch", "strengths": [0.0]}, {"name": "reference", "strengths": [20.0]}],
        "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
        "batch_size": 50,
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 4},
        "tracking": {"enabled": False},
    }
    suite.update(overrides)
    return write_yaml(tmp_path / "suite.yaml", suite)


@pytest.fixture(autouse=True)
def _tracking_uri_does_not_leak():
    """``mlflow.set_tracking_uri`` (tests, and the Tracker in an in-process ``main``) also sets the
    MLFLOW_TRACKING_URI environment variable, which wins over a suite's own store in every later test and
    subprocess; put it back as it was after each test."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def tracked_patch_group(tmp_path: Path, uri: str, experiment: str, models: list[str], strength: float):
    """A suite of tiny random ResNets (``models``, the first authorized) with one patch encoding, tracked to
    ``uri``/``experiment``; returns (suite, suite file, its patch group) for logging cells as a group run."""
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.loading import load_suite

    model = {
        "arch": "resnet18", "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
        "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
    }  # fmt: skip
    path = write_yaml(tmp_path / "suite.yaml", {
        "name": experiment, "dataset": {"name": "digits", "limit": 10}, "zoo": [{"name": name, **model} for name in models],
        "authorized": [models[0]], "encoders": [{"name": "patch", "strengths": [strength]}], "attacks": [{"name": "identity"}],
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
        "tracking": {"uri": uri, "experiment": experiment},
    })  # fmt: skip
    suite = load_suite(path)
    return suite, path, next(g for g in plan_suite(suite) if g.encoder.name == "patch")
