"""Executors: a process pool and Ray compute exactly the cells the sequential runner computes, and a dead worker loses
nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch

from nonxfer_bench.cells.cell import RUN_METADATA
from nonxfer_bench.execution.executors import ProcessExecutor, RayExecutor, WorkerDied
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from tests.helpers import digits_suite


def small_suite(tmp_path, zoo, name):
    folder = tmp_path / name
    folder.mkdir()
    return load_suite(digits_suite(folder, zoo, dataset={"name": "digits", "limit": 60}, batch_size=25))


def by_key(cells):
    return {cell.key: cell for cell in cells}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, digits_zoo):
    """The committed-results path: every group in this process, one after the other."""
    result = Runner(small_suite(tmp_path_factory.mktemp("seq"), digits_zoo, "seq")).run()
    assert result.computed_groups == 3
    return by_key(result.cells)


@pytest.mark.slow
def test_a_process_pool_gives_the_sequential_cells_and_the_driver_alone_writes_them(
    tmp_path, digits_zoo, sequential, capfd
):
    """... and its workers say which group is in which phase, as lines on the driver's terminal."""
    suite = small_suite(tmp_path, digits_zoo, "pool")
    seen = []
    result = Runner(
        suite,
        executor=ProcessExecutor(workers=2, threads=1),
        on_group=lambda g, cells, sample: seen.append((g.key, sample)),
    ).run()
    assert by_key(result.cells) == sequential  # same keys, same numbers, every field
    assert sorted(key for key, _ in seen) == sorted(g.key for g in Runner(suite).groups)
    assert all(
        sample is not None and sample.is_file() for _, sample in seen
    )  # grids drawn from rows the workers sent back
    assert Runner(suite).run().computed_groups == 0  # the driver stored every cell
    shown = capfd.readouterr().err
    assert all(f"{group.label}: batch 3/3: attack and score" in shown for group in Runner(suite).groups)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_an_exhausted_retry_names_the_missing_groups(
    tmp_path, digits_zoo, sequential, monkeypatch
):
    """One worker computes the three groups (three batches each) in turn; the fault point kills it at its fourth
    batch, the first of the second group, so exactly one group is delivered, whatever the machine's load."""
    monkeypatch.setenv("NXB_FAULT", "group_batch:4")  # the worker inherits it; the driver computes no batch
    finished: list[str] = []
    suite = small_suite(tmp_path, digits_zoo, "killed")
    with pytest.raises(WorkerDied, match="groups not computed: .*run the same command again to resume"):
        Runner(
            suite,
            executor=ProcessExecutor(workers=1, threads=1, retries=0),
            on_group=lambda group, cells, sample: finished.append(group.key),
        ).run()
    assert len(finished) == 1
    monkeypatch.delenv("NXB_FAULT")
    resumed = Runner(suite).run()  # the rerun computes only what the dead worker lost
    assert resumed.skipped_groups == 1 and resumed.computed_groups == 2
    assert by_key(resumed.cells) == sequential


@pytest.mark.slow
def test_a_worker_killed_while_the_driver_takes_a_group_is_replaced_by_a_retry(tmp_path, digits_zoo, sequential):
    """A kill from outside, on the first delivery: whatever the worker had not delivered is computed by its retry."""

    def kill_the_worker(group, cells, sample):
        if not killed:
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)
            killed.append(group.key)

    killed: list[str] = []
    retried = Runner(
        small_suite(tmp_path, digits_zoo, "retried"),
        executor=ProcessExecutor(workers=1, threads=1, retries=1),
        on_group=kill_the_worker,
    ).run()
    assert killed and retried.computed_groups == 3 and by_key(retried.cells) == sequential


@pytest.mark.slow
def test_ray_tasks_on_a_local_cluster_give_the_sequential_cells(tmp_path, digits_zoo, sequential):
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = Runner(small_suite(tmp_path, digits_zoo, "ray"), executor=RayExecutor()).run()
    finally:
        ray.shutdown()
    assert by_key(result.cells) == sequential


def test_a_model_that_runs_out_of_memory_backs_off_to_smaller_batches_with_the_same_cells(
    tmp_path, digits_zoo, sequential, monkeypatch
):
    from nonxfer_bench.zoo import ZooModel

    forward = ZooModel.forward

    def small_device(self, images):
        if len(images) > 12:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, images)

    monkeypatch.setattr(ZooModel, "forward", small_device)
    runner = Runner(small_suite(tmp_path, digits_zoo, "oom"))
    cells = {key: cell.record() for key, cell in by_key(runner.run().cells).items()}
    expected = {key: cell.record() for key, cell in sequential.items()}
    differences = {
        (field, str(cell[field]))
        for key, cell in cells.items()
        for field in cell
        if field not in RUN_METADATA and cell[field] != expected[key].get(field)
    }
    # every cell number is the same; only the bound diagnostics (not backed off) record the error instead of failing
    assert {field for field, _ in differences} == {"bound/error"} and all(
        "out of memory" in text for _, text in differences
    )
    assert set(runner.backoff.sizes.values()) == {12}  # 25 -> 24 -> 16 -> 12, per model


@pytest.mark.slow
def test_a_worker_prints_the_package_s_notices_as_lines_naming_it(tmp_path):
    script = (
        "import logging, os; from nonxfer_bench.execution.executors import _init_worker; _init_worker(1, "
        "os.getcwd()); logging.getLogger('nonxfer_bench.encoders.operator').info('operator encoder: one-time solve, "
        "estimated 3 s'); print(os.getpid())"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith(
        f"worker {done.stdout.strip()}: operator encoder: one-time solve, estimated 3 s"
    )


def test_the_command_line_selects_the_executor():
    from nonxfer_bench.cli import build_parser
    from nonxfer_bench.execution.executors import create_executor
    from nonxfer_bench.execution.runner import InProcess

    def executor(*flags):
        args = build_parser().parse_args(["run", "suite.yaml", *flags])
        return create_executor(args.executor, workers=args.workers, address=args.address)

    assert isinstance(executor(), InProcess)
    pool = executor("--executor", "process", "--workers", "3")
    assert isinstance(pool, ProcessExecutor) and pool.workers == 3 and pool.threads >= 1
    ray_executor = executor("--executor", "ray", "--address", "auto")
    assert isinstance(ray_executor, RayExecutor) and ray_executor.address == "auto"


def test_a_suite_states_what_each_ray_task_requests(tmp_path, digits_zoo):
    from nonxfer_bench.core.errors import UserError

    suite = load_suite(digits_suite(tmp_path, digits_zoo, resources={"cpus": 2, "gpus": 0.5}))
    assert (suite.resources.cpus, suite.resources.gpus) == (2, 0.5)
    with pytest.raises(UserError, match="resources.cpus"):
        load_suite(digits_suite(tmp_path, digits_zoo, resources={"cpus": 0}))
