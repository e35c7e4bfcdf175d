"""Where encoding groups are computed: in process, in a local process pool, or as Ray tasks.

An executor maps ``(group, missing cells)`` work items onto workers and yields each group's cells as it
finishes. Workers rebuild the models and the dataset from the (picklable) suite and never touch the
cell store or MLflow: the driver (:meth:`nonxfer_bench.execution.runner.Runner.run`) writes both as results
arrive, so a failed worker loses only the groups it was computing. A one-line error a worker raises (a suite entry's
:class:`~nonxfer_bench.execution.group.ComponentError`) reaches the driver as it was raised. Every draw is keyed by the
group
(``keyed_generator``), so cells do not depend on the executor, the worker count or the completion order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator

import torch

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution import EXECUTOR_NAMES
from nonxfer_bench.execution.runner import Executor, InProcess, Result, Runner, Work
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite


class WorkerDied(RuntimeError):
    """A worker process died (killed, out of memory) more often than the executor retries."""


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine, ``threads`` torch threads each.

    A worker that dies breaks the pool: the groups it had not finished are resubmitted to a fresh pool up
    to ``retries`` times, then :class:`WorkerDied` says which groups are missing (finished ones are stored).
    """

    def __init__(self, workers: int = 2, threads: int = 1, retries: int = 1) -> None:
        self.workers, self.threads, self.retries = workers, threads, retries

    def run(self, runner: Runner, work: Work) -> Iterator[Result]:
        remaining = {group.key: (group, missing) for group, missing in work}
        index = {group.key: i for i, group in enumerate(runner.groups)}
        failures = 0
        while remaining:
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads, os.getcwd()),
            )
            try:
                futures = {
                    pool.submit(
                        compute_task, runner.suite, runner.settings, index[key], key, sorted(missing.values())
                    ): key
                    for key, (_, missing) in remaining.items()
                }
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        try:
                            cells, rows = future.result()
                        except BrokenProcessPool:
                            continue  # its group stays in ``remaining``
                        group, _ = remaining.pop(futures[future])
                        yield group, cells, rows
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            if remaining:
                failures += 1
                labels = ", ".join(group.label for group, _ in remaining.values())
                if failures > self.retries:
                    raise WorkerDied(
                        f"a worker process died (killed or out of memory) {failures} time(s); groups not computed: "
                        f"{labels}. Finished groups are stored: run the same command again to resume"
                    )
                print(
                    f"nonxfer-bench: a worker process died; retrying {len(remaining)} group(s): {labels}",
                    file=sys.stderr,
                )


class RayExecutor(Executor):
    """One Ray task per group on an existing cluster (``address``; None starts a local Ray instance).

    Each task requests the suite's ``resources`` (CPUs, GPUs) and runs with that many torch threads; with
    ``gpus >= 1`` each group gets a GPU of its own and its worker computes there (:func:`worker_device`).
    Ray retries a task whose worker died ``retries`` times; after that the group is reported, the
    others still finish and are stored, and :class:`WorkerDied` names what is missing.
    """

    def __init__(self, address: str | None = None, retries: int = 2) -> None:
        self.address, self.retries = address, retries

    def run(self, runner: Runner, work: Work) -> Iterator[Result]:
        try:
            import ray  # optional: the [ray] extra, only for --executor ray
        except ImportError:
            raise UserError("--executor ray: Ray is not installed; pip install 'nonxfer-bench[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        resources = runner.suite.resources
        task = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=self.retries)(_ray_task)
        suite = ray.put(runner.suite)
        threads = max(1, int(resources.cpus))
        index = {group.key: i for i, group in enumerate(runner.groups)}
        refs = {
            task.remote(
                suite, runner.settings, index[group.key], group.key, sorted(missing.values()), threads, os.getcwd()
            ): group
            for group, missing in work
        }
        lost = []
        while refs:
            [ref], _ = ray.wait(list(refs), num_returns=1)
            group = refs.pop(ref)
            try:
                cells, rows = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError):
                lost.append(group.label)
                continue
            except ray.exceptions.RayTaskError as error:  # a one-line error of the task (a component's): as in process
                if isinstance(error.cause, UserError):
                    raise error.cause from None
                raise
            yield group, cells, rows
        if lost:
            raise WorkerDied(
                f"Ray workers died (killed, out of memory or node lost) after {self.retries} retries; groups not "
                f"computed: {', '.join(lost)}. Finished groups are stored: run the same command again to resume"
            )


EXECUTORS: dict[str, Callable[[int, str | None], Executor]] = dict(
    zip(
        EXECUTOR_NAMES,
        (
            lambda workers, address: InProcess(),
            lambda workers, address: ProcessExecutor(workers=workers, threads=max(1, (os.cpu_count() or 1) // workers)),
            lambda workers, address: RayExecutor(address=address),
        ),
        strict=True,
    )
)


def create_executor(name: str, workers: int = 2, address: str | None = None) -> Executor:
    """The executor a ``--executor`` name selects (the CLI's choices are ``EXECUTORS``' keys)."""
    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r}: valid executors are {', '.join(EXECUTORS)}")
    return EXECUTORS[name](workers, address)


_worker_runner: tuple[str, Runner] | None = None


def compute_task(
    suite: Suite, settings: RunSettings, index: int, key: str, cell_keys: list[str]
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Worker side: compute the group ``key`` (the driver's ``index``, for messages) of ``suite`` run with ``settings``,
    cells ``cell_keys`` only, reusing this process's runner. The worker plans the whole suite: the driver may compute
    part of it (a protocol run's tiers)."""
    global _worker_runner

    identity = (suite.model_dump_json(), settings)
    if _worker_runner is None or _worker_runner[0] != identity:
        _worker_runner = (identity, Runner(suite, settings))
    runner = _worker_runner[1]
    group = next((group for group in runner.groups if group.key == key), None)
    wanted = set(cell_keys)
    if group is None or not wanted <= set(group.cells.values()):
        raise RuntimeError(
            f"the worker's plan has no group {key} (the driver's group {index}) with these cells: driver and worker "
            "run different code"
        )
    return runner.compute(group, {cell: k for cell, k in group.cells.items() if k in wanted})


def _init_worker(threads: int, cwd: str) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if os.path.isdir(cwd):  # relative paths in the suite (weights, data, caches) mean the driver's folder
        os.chdir(cwd)
    # the package's notices (the operator encoder's one-time solve and its estimate, a basis loaded from the
    # cache) as lines on the worker's stderr, which the process pool and Ray pass to the driver's terminal
    logger = logging.getLogger("nonxfer_bench")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s worker {os.getpid()}: %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def ray_device(device: str, gpus: float) -> str:
    """The device a Ray run plans with (its cells' draws): ``cuda`` when each task gets a GPU, else ``cpu``. Ray hides
    every GPU from a task that requests none, so ``device: cuda`` with ``resources.gpus: 0`` is refused up front."""
    if gpus <= 0:
        if device.startswith("cuda"):
            raise UserError(
                f"device {device!r} with --executor ray needs resources: {{gpus: 1}} in the suite (Ray hides GPUs "
                "from tasks that request none)"
            )
        return "cpu"
    return "cpu" if device == "cpu" else "cuda"


def worker_device(device: str, assigned_gpus: list) -> str:
    """The device a Ray worker uses: the GPU Ray assigned it (visible as cuda:0 there) unless the suite asks for the
    CPU."""
    return "cuda" if assigned_gpus and device != "cpu" else device


def _ray_task(suite: Suite, settings: RunSettings, index: int, key: str, cell_keys: list[str], threads: int, cwd: str):
    import ray  # optional: the [ray] extra; this runs on a Ray worker, which has it

    _init_worker(threads, cwd)
    return compute_task(suite, settings.on(worker_device(settings.device, ray.get_gpu_ids())), index, key, cell_keys)
