"""Audit replay: a random sample of a bundle's encoding groups computed again from the data and the weights, and
their per-image outcomes compared with the bundle's.

The runner computes whole encoding groups (an encoding and every attack step and model on it), so the sample is
drawn as groups: by default 2 % of them, at least one, chosen by a seed the checker draws (``os.urandom``) or gives
(``--seed``), never one the bundle could choose. The replay computes in a private, empty cache (decoded datasets,
trained attack models and attack outputs are all recomputed, none is read from an earlier run on this machine),
with the torch threads each cell records (a trained attack's float sums depend on them; the suite's ``threads`` for
cells that record none), on the draws the cells record.

Tolerance: cells drawn on the CPU (``draws: cpu``) are replayed on the CPU and must match bit for bit: every
image's correct and agree bit of every draw. Cells drawn on CUDA are replayed on a GPU, whose kernels may round
otherwise from one card or library to another: each cell must agree with the recorded one on at least
:data:`MIN_AGREEMENT` of its images' correct bits in every draw, and its replayed accuracy (agreement for unlabeled
images) must lie in the recorded value's 95 % Wilson interval.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from nonxfer_bench.analysis.uncertainty import proportion_interval
from nonxfer_bench.bundles.consistency import cell_label
from nonxfer_bench.bundles.contents import Contents
from nonxfer_bench.bundles.manifest import Manifest, dataset_records
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.schema.settings import RunSettings

FRACTION = 0.02  # of the groups replayed by default
# the most torch threads a replay starts: a bundle's cells name the count, and a tampered one must not make the
# checker start a thousand threads on a small machine
MAX_THREADS = max(64, 8 * (os.cpu_count() or 1))
MIN_AGREEMENT = 0.99  # of images' correct bits, per draw, for cells drawn on CUDA


@dataclass(frozen=True)
class Replayed:
    """One replayed group: its label, how many of its cells were compared, the problems found and the seconds it
    took."""

    group: str
    cells: int
    problems: list[str]
    seconds: float
    threads: tuple[int, ...] = ()


def default_count(groups: int) -> int:
    """How many groups a check replays by default: :data:`FRACTION` of them, at least one."""
    return max(1, round(FRACTION * groups))


def sample_groups(plan: list[EncodingGroup], count: int, seed: int) -> list[EncodingGroup]:
    """``count`` groups of ``plan`` drawn by ``seed``, in plan order."""
    chosen = random.Random(seed).sample(range(len(plan)), min(count, len(plan)))
    return [plan[i] for i in sorted(chosen)]


@contextlib.contextmanager
def private_cache() -> Iterator[None]:
    """``NXB_CACHE`` pointed at a new empty folder for the block (removed after it), then put back."""
    before = os.environ.get("NXB_CACHE")
    with tempfile.TemporaryDirectory(prefix="nxb-replay-cache-") as folder:
        os.environ["NXB_CACHE"] = folder
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("NXB_CACHE", None)
            else:
                os.environ["NXB_CACHE"] = before


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (when given) for the block, then put back."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def data_problems(contents: Contents, manifest: Manifest) -> list[str]:
    """Each dataset the suite reads, as its files are here: their checksums must be those the bundle records."""
    recorded = {record.key: record for record in manifest.datasets}
    problems = []
    for here in dataset_records(contents.suite, contents.suite_file):
        record = recorded.get(here.key)
        if record is None or here.sha256 != record.sha256 or here.files != record.files:
            listing = record.listing if record else {}
            differing = sorted(
                name for name in set(here.listing) | set(listing) if here.listing.get(name) != listing.get(name)
            )
            first = f" (first: {differing[0]})" if differing else ""
            problems.append(
                f"dataset {here.key} ({here.spec['name']}): its {here.files} file(s) here are not the "
                f"{record.files if record else 'no'} the bundle records{first}"
            )
    return problems


def by_threads(group: EncodingGroup, cells: dict[str, Cell], default: int) -> dict[int, dict]:
    """``group``'s cells split by the torch threads their recorded cells ran with (``default`` where a cell records
    none), as ``{threads: {(step, model): key}}``: a group resumed by runs of other thread counts replays in parts."""
    parts: dict[int, dict] = {}
    for cell, key in group.cells.items():
        recorded = cells.get(key)
        parts.setdefault((recorded.threads if recorded else None) or default, {})[cell] = key
    return parts


def replay_groups(contents: Contents, manifest: Manifest, groups: list[EncodingGroup]) -> Iterator[Replayed]:
    """Compute ``groups`` again (in a private cache, with the threads the cells record, on the cells' draws) and
    compare each cell's outcomes with the bundle's (:func:`outcome_problem`)."""
    exact = manifest.draws != "cuda"
    settings = RunSettings.of(contents.suite).on("cpu" if exact else "cuda").resolved()
    default = settings.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="nxb-replay-") as scratch, private_cache():
        output = contents.suite.output.model_copy(
            update={"dir": Path(scratch) / "runs", "results": Path(scratch) / "results"}
        )
        runner = Runner(contents.suite.model_copy(update={"output": output}), settings)
        for group in groups:
            began = time.perf_counter()
            parts = by_threads(group, contents.cells, default)
            if max(parts) > MAX_THREADS:
                raise UserError(
                    f"cells of {group.label} ran at {max(parts):,} torch threads; replaying them here would start that "
                    f"many (at most {MAX_THREADS} on this machine's {os.cpu_count()} cores): replay on a larger machine"
                )
            computed = []
            for threads, missing in sorted(parts.items()):
                with torch_threads(threads):
                    computed += runner.compute(group, missing)[0]
            problems = []
            compared = 0
            for cell in computed:
                recorded = contents.cells.get(cell.key)
                if recorded is None:
                    continue  # a missing cell: the plan check names it
                compared += 1
                problem = outcome_problem(recorded, cell, exact)
                if problem:
                    problems.append(f"{cell_label(group, cell)}: {problem}")
            yield Replayed(group.label, compared, problems, time.perf_counter() - began, tuple(sorted(parts)))


def outcome_problem(recorded: Cell, replayed: Cell, exact: bool) -> str | None:
    """What differs between a recorded cell's per-image outcomes and its replay, beyond the tolerance (see the module
    docstring); None when they match."""
    old, new = recorded.outcomes, replayed.outcomes
    if old is None:
        return "the bundle's cell has no per-image outcomes to compare"
    if (old.images, old.ids, len(old.correct)) != (new.images, new.ids, len(new.correct)):
        return (
            f"replayed on {new.images:,} images (ids {new.ids}, {len(new.correct)} draws); the bundle's: "
            f"{old.images:,} (ids {old.ids}, {len(old.correct)} draws)"
        )
    metric = "accuracy" if recorded.accuracy is not None else "agreement"
    values = f"{metric} {getattr(recorded, metric)} recorded, {getattr(replayed, metric)} replayed"
    if exact:
        if old == new:
            return None
        differ = max(
            int(
                np.count_nonzero(old.correct_bits(d) != new.correct_bits(d))
                + np.count_nonzero(old.agree_bits(d) != new.agree_bits(d))
            )
            for d in range(len(old.correct))
        )
        return (
            f"{differ:,} image outcome(s) of {old.images:,} differ in a draw ({values}; CPU draws replay bit for bit)"
        )
    agreement = min(float(np.mean(old.correct_bits(d) == new.correct_bits(d))) for d in range(len(old.correct)))
    n = (recorded.n_labeled if recorded.n_labeled is not None else recorded.n) if metric == "accuracy" else recorded.n
    interval = proportion_interval(getattr(recorded, metric), n)
    if agreement >= MIN_AGREEMENT and (interval is None or interval.lo <= getattr(replayed, metric) <= interval.hi):
        return None
    shown = f" (95% interval {interval.lo:.3f} to {interval.hi:.3f})" if interval else ""
    return f"{agreement:.1%} of images' correct bits agree (at least {MIN_AGREEMENT:.0%}), {values}{shown}"
