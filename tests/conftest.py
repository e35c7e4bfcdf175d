"""Shared fixtures: one torch thread, offline hub, a private cache, and a tiny digits zoo trained once per run
(helpers that tests import live in tests/helpers.py)."""

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

import fcntl
from pathlib import Path

import pytest
import torch

from tests.helpers import DIGITS_ZOO, write_yaml

torch.set_num_threads(int(os.environ.get("NXB_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped without a CUDA device (benchmarks/gpu.py runs them on a GPU machine);
    each has a CPU twin, so a skip here is never the only test of a behaviour."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run by benchmarks/gpu.py on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-model digits zoo (two ViT twins with an exact 4-dim patch null space, one ResNet), trained once per
    test run: pytest-xdist's workers share one copy, the first to ask trains it under a lock and the others wait.

    Two ViTs that differ only in their training seed are the hardest unauthorized pair. The weights are written
    atomically and ``train_zoo`` trains every model whose file is missing, so a worker killed mid-training leaves
    nothing that a later one would take for a trained model.
    """
    from nonxfer_bench.training import train_zoo

    run = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        run = run.parent  # a worker's folder (popen-gw0, ...) is inside the run's
    folder = run / "digits_zoo"
    folder.mkdir(exist_ok=True)
    path = folder / "zoo.yaml"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not path.is_file():  # written once, before any worker reads it
            write_yaml(folder / "zoo.yaml.partial", DIGITS_ZOO).replace(path)
        train_zoo(path)
    return path


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
