"""Runs a suite's work graph: decode once, encode once per group, attack once per step, evaluate every model.

The runner owns what groups share (models, attacks, the decoded dataset at each authorized model's
release format, clean predictions) and hands each group with missing cells to an executor; a group's
own stages (encode, attack, score, assemble) are :mod:`nonxfer_bench.execution.group`. What a suite entry raises
(building an attack or a model, decoding a dataset, or in a group's stages) is one line naming the entry
(:class:`~nonxfer_bench.execution.group.ComponentError`). Executors
(:mod:`nonxfer_bench.execution.executors`, built by the CLI) compute groups in process, in a process
pool or on Ray; this process alone writes a group's sample grid and then its cells to the
:class:`CellStore` as the group finishes, so a killed run resumes at the groups it was in.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import torch

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.core import faults
from nonxfer_bench.core.device import make_deterministic, resolve_device
from nonxfer_bench.core.environment import gigabytes
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.core.version import code_version
from nonxfer_bench.datasets.base import ImageSet, load_cached
from nonxfer_bench.execution.backoff import BatchBackOff
from nonxfer_bench.execution.group import GroupComputation, GroupInputs, GroupServices, Missing, blame
from nonxfer_bench.execution.loader import PrefetchingReader
from nonxfer_bench.execution.plan import AttackStep, EncodingGroup, plan_suite
from nonxfer_bench.execution.progress import Plan, Progress
from nonxfer_bench.loading import suite_protocol
from nonxfer_bench.schema.protocol import VerdictSpec
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import AttackSpec, DatasetSpec, EncoderSpec, Suite
from nonxfer_bench.storage.samples import sample_file, save_sample_grid
from nonxfer_bench.zoo import ZooModel, build_model

log = logging.getLogger(__name__)
Work = list[tuple[EncodingGroup, Missing]]
Result = tuple[EncodingGroup, list[Cell], dict[str, torch.Tensor]]


class Executor(ABC):
    """Where the runner's groups are computed; implementations in :mod:`nonxfer_bench.execution.executors`."""

    @abstractmethod
    def run(self, runner: "Runner", work: Work) -> Iterator[Result]:
        """Compute every work item; yield ``(group, cells, sample rows)`` in completion order."""


class InProcess(Executor):
    """Groups one after the other in this process, sharing its models and prepared images (the default)."""

    def run(self, runner: "Runner", work: Work) -> Iterator[Result]:
        for group, missing in work:
            yield group, *runner.compute(group, missing)


@dataclass
class RunResult:
    cells: list[Cell]
    computed_groups: int
    skipped_groups: int
    samples: dict[str, Path]


class CleanInputs:
    """The clean evaluation images (uint8, possibly memory-mapped) at an authorized model's release format, by batch,
    on the model's device.

    Converted once and kept (on the device) when the float images fit in ``NXB_RELEASE_MAX_GB`` (default 2),
    else converted batch by batch as a :class:`PrefetchingReader` brings them to the device, so that peak
    memory does not grow with the dataset. A batch is the same either way: the conversion works image by image.
    """

    def __init__(self, images: torch.Tensor, model: ZooModel, device: torch.device = torch.device("cpu")) -> None:
        self.images, self.model, self.device = images, model, device
        float_bytes = 4 * len(images) * math.prod(model.input_size)
        keep = float_bytes <= gigabytes("NXB_RELEASE_MAX_GB") * 1e9
        self.prepared = self.model.prepare(images.to(device).float() / 255.0) if keep else None
        self.reader = None if keep else PrefetchingReader(images, device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, start: int, size: int) -> torch.Tensor:
        if self.prepared is not None:
            return self.prepared[start : start + size]
        return self.model.prepare(self.reader.batch(start, size))


class Runner:
    """Executes a validated suite with ``settings`` (default: as its file says); ``on_group`` is called with each
    finished group's cells (tracking)."""

    def __init__(
        self,
        suite: Suite,
        settings: RunSettings | None = None,
        fresh: bool = False,
        on_group: Callable[[EncodingGroup, list[Cell], Path | None], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.suite = suite
        self.settings = settings or RunSettings.of(suite)
        self.fresh = fresh
        self.on_group = on_group
        self.executor = executor or InProcess()
        self.groups = plan_suite(suite, self.settings)
        self._dataset: ImageSet | None = None
        self._clean_predictions: dict[str, dict[str, torch.Tensor]] = {}  # authorized -> model -> predictions
        self.backoff = BatchBackOff()
        self._models: dict[str, ZooModel] = {}
        self._attacks: dict[int, Attack] = {}
        self._public: ImageSet | None = None
        self._public_prepared: dict[str, torch.Tensor] = {}  # authorized -> public images at its release format
        self._clean_inputs: dict[str, CleanInputs] = {}  # authorized -> clean images at its release format
        self.progress: Progress | None = None  # set by run(); workers, which only compute, have none
        self.computed: set[str] = set()  # keys of the cells this runner computed (what --fresh has recomputed already)

    @cached_property
    def device(self) -> torch.device:
        """Where models and batches live; resolved where groups are computed (a Ray driver may have no GPU), and made
        deterministic there (:func:`~nonxfer_bench.core.device.make_deterministic`)."""
        device = resolve_device(self.settings.device)
        make_deterministic(device)
        return device

    @cached_property
    def overlap_cpu_attacks(self) -> bool:
        """Whether CPU-only attacks run on a thread pool beside the device work: not on the CPU, whose cores they would
        share."""
        return self.device.type != "cpu"

    @cached_property
    def store(self) -> CellStore:
        """Opened on first use, so that workers, which only :meth:`compute`, never open it."""
        return CellStore(self.suite.run_dir() / "cells.jsonl")

    def predict(self, model: ZooModel, images: torch.Tensor) -> torch.Tensor:
        """Top-1 predictions of one batch (on the host), in smaller chunks if the batch runs out of memory."""
        with torch.inference_mode():
            return self.backoff(model.name, lambda chunk: model(chunk).argmax(1).cpu(), images)

    def model(self, name: str) -> ZooModel:
        if name not in self._models:
            with blame(f"zoo model {name!r}"):
                self._models[name] = build_model(self.suite.model(name)).to_device(self.device, self.settings.precision)
        return self._models[name]

    def attack(self, step: AttackStep) -> Attack:
        key = id(step.spec)
        if key not in self._attacks:
            with blame(self.entry(step.spec)):
                self._attacks[key] = ATTACKS.create(step.spec.name, step.spec.params)
        return self._attacks[key]

    def entry(self, spec: EncoderSpec | AttackSpec | DatasetSpec) -> str:
        """Where ``spec`` is in the suite file, as error lines name it: ``attacks[3] (finetune)``, ``public
        (digits)``."""
        suite = self.suite
        for key, specs in (("encoders", suite.encoders), ("attacks", suite.attacks)):
            for i, listed in enumerate(specs):
                if listed is spec:
                    return f"{key}[{i}] ({spec.name})"
        for key in ("dataset", "public"):
            if getattr(suite, key) is spec:
                return f"{key} ({spec.name})"
        return f"encoder {spec.name!r}"  # the clean encoder every plan adds

    def public_images(self, authorized: ZooModel) -> torch.Tensor:
        """The suite's public (attacker-held) clean images at the release resolution; empty if none."""
        spec = self.suite.public
        if spec is None:
            return torch.empty(0, *authorized.input_size, device=self.device)
        if self._public is None:
            with blame(self.entry(spec)):
                self._public = load_cached(spec.name, spec.params, spec.limit, self.suite.seeds[0])
        if authorized.name not in self._public_prepared:
            self._public_prepared[authorized.name] = authorized.prepare(self._public.as_float().to(self.device))
        return self._public_prepared[authorized.name]

    def clean_inputs(self, authorized: ZooModel) -> CleanInputs:
        """The clean evaluation images at ``authorized``'s release format, one :class:`CleanInputs` per authorized
        model."""
        if self._dataset is None:
            spec = self.settings.dataset(self.suite)
            with blame(self.entry(spec)):
                self._dataset = load_cached(spec.name, spec.params, spec.limit, self.suite.seeds[0])
            faults.point("dataset_loaded")
        if authorized.name not in self._clean_inputs:
            self._clean_inputs[authorized.name] = CleanInputs(self._dataset.images, authorized, self.device)
        return self._clean_inputs[authorized.name]

    @property
    def image_ids(self) -> str:
        """Identifies the evaluated image list (dataset, parameters, subset): equal ids, same images in the same
        order."""
        spec = self.settings.dataset(self.suite)
        return stable_hash({"dataset": spec.model_dump(mode="json"), "subset_seed": self.suite.seeds[0]})

    def missing(self, group: EncodingGroup) -> Missing:
        """The cells of ``group`` to compute: those not in the store, or with ``fresh`` those not computed by this
        runner."""
        if self.fresh:
            return {cell: key for cell, key in group.cells.items() if key not in self.computed}
        return {cell: key for cell, key in group.cells.items() if key not in self.store}

    def plan(self, pending: Work) -> Plan:
        """How big this run is and how much of it is already finished."""
        cells = sum(len(group.cells) for group in self.groups)
        todo = sum(len(missing) for _, missing in pending)
        steps = max(
            (len({step for step, _ in group.cells}) for group in self.groups), default=0
        )  # the clean images face fewer
        return Plan(len(self.groups), steps, len(self.suite.models), cells, cells - todo, len(pending))

    def run(self, progress: Progress | None = None) -> RunResult:
        """Compute every group with missing cells through the executor; only this process writes the store.

        ``progress`` reports the plan, phases and finished groups (default: to stderr and ``run.log`` in the run
        folder).
        """
        self.suite.run_dir().mkdir(parents=True, exist_ok=True)
        self.progress = progress or Progress(self.suite.name, self.suite.run_dir() / "run.log")
        computed = skipped = 0
        samples: dict[str, Path] = {}
        pending = []
        for group in self.groups:
            missing = self.missing(group)
            if missing:
                pending.append((group, missing))
                continue
            skipped += 1
            if self.on_group:
                self.on_group(group, [self.store.cells[k] for k in group.cells.values()], None)
        self.progress.plan(self.plan(pending))
        try:
            code = code_version()  # what computes this run's cells, recorded with each (run metadata)
            for group, cells, sample_rows in self.executor.run(self, pending):
                sample = self.save_sample(group, sample_rows)  # before the cells: a stored group always has its grid
                if sample is not None:
                    samples[group.label] = sample
                self.store.add([cell.model_copy(update={"code": code}) for cell in cells])
                self.computed.update(cell.key for cell in cells)
                computed += 1
                self.progress.group_done(group.label)
                if self.on_group:
                    self.on_group(group, [self.store.cells[k] for k in group.cells.values()], sample)
        finally:
            self.progress.close()
        return RunResult(
            [self.store.cells[k] for g in self.groups for k in g.cells.values()], computed, skipped, samples
        )

    def phase(self, group: EncodingGroup, phase: str) -> None:
        """A group entered ``phase``: reported by the driver's progress, or in a worker (which has none) as a log
        line, which a process pool's workers print on the driver's terminal (a long group is not silent)."""
        if self.progress is not None:
            self.progress.phase(group.label, phase)
        else:
            log.info(f"{group.label}: {phase}")

    def note(self, group: EncodingGroup, text: str) -> None:
        """Tell the user something about a group (shown and logged in run.log; in a worker, a log line)."""
        if self.progress is not None:
            self.progress.note(f"{group.label}: {text}")
        else:
            log.info(f"note: {group.label}: {text}")

    def compute(self, group: EncodingGroup, missing: Missing) -> tuple[list[Cell], dict[str, torch.Tensor]]:
        """One group's missing cells and its sample rows; touches neither the store nor the tracker (runs in
        workers)."""
        self.phase(group, "clean predictions")
        authorized = self.model(group.authorized)
        clean = self.clean_inputs(authorized)
        size = self.suite.batch_size
        predictions = self._clean_predictions.setdefault(group.authorized, {})
        for model_name in {name for _, name in missing} - set(predictions):
            model = self.model(model_name)
            with torch.no_grad():
                predictions[model_name] = torch.cat(
                    [self.predict(model, clean.batch(start, size)) for start in range(0, len(clean), size)]
                )
        inputs = GroupInputs(clean.batch, len(clean), self._dataset.labels, predictions, self.image_ids)
        return GroupComputation(group, missing, self.services).run(inputs)

    @cached_property
    def services(self) -> GroupServices:
        suite = self.suite
        return GroupServices(
            self.model,
            self.attack,
            self.predict,
            self.public_images,
            suite.role,
            self.phase,
            self.note,
            suite.name,
            suite.batch_size,
            suite.output.sample_images,
            public_labels=lambda: None if self._public is None else self._public.labels,
            precision=self.settings.precision,
            overlap_cpu_attacks=self.overlap_cpu_attacks,
            bounds=self.settings.bounds,
            entry=self.entry,
            verdict=self.verdict,
        )

    @cached_property
    def verdict(self) -> VerdictSpec:
        """How the suite's protocol computes its verdict (the defaults without a protocol, as the leaderboard's
        verdict)."""
        protocol, _ = suite_protocol(self.suite)
        return protocol.verdict if protocol else VerdictSpec()

    def save_sample(self, group: EncodingGroup, rows: dict[str, torch.Tensor]) -> Path | None:
        if not rows:
            return None
        return save_sample_grid(rows, sample_file(self.suite.run_dir(), group.label), self.suite.output.sample_images)
