"""Runs a suite's work graph: decode once, encode once per group, attack once per step, evaluate every model.

Work is streamed in batches: each batch of the dataset is encoded, attacked by every pending attack
step and classified by every model that still has a missing cell. Groups are computed by an executor
(:mod:`nonxfer_bench.executors`: in process, a process pool or Ray); this process alone writes a group's
cells to the :class:`CellStore` as the group finishes, so a killed run resumes at the groups it was in.
"""

from __future__ import annotations

import ctypes
import math
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from nonxfer_bench.attacks import ATTACKS, Attack, AttackContext
from nonxfer_bench.core import faults
from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.core.hashing import keyed_generator, stable_hash
from nonxfer_bench.datasets.base import ImageSet, load_cached
from nonxfer_bench.encoders import ENCODERS, Encoder
from nonxfer_bench.execution.backoff import BatchBackOff
from nonxfer_bench.execution.plan import AttackStep, EncodingGroup, plan_suite
from nonxfer_bench.execution.store import CellStore
from nonxfer_bench.metrics.image_quality import psnr_per_image, ssim_per_image
from nonxfer_bench.metrics.outcomes import Tally
from nonxfer_bench.schema.suite import Suite
from nonxfer_bench.storage.formats import apply_storage
from nonxfer_bench.storage.samples import sample_file, save_sample_grid
from nonxfer_bench.zoo import ZooModel, build_model

Work = list[tuple[EncodingGroup, dict[tuple[AttackStep, str], str]]]
Result = tuple[EncodingGroup, list[dict], dict[str, torch.Tensor]]


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
    cells: list[dict[str, Any]]
    computed_groups: int
    skipped_groups: int
    samples: dict[str, Path]


class Release:
    """Evaluation images (uint8, possibly memory-mapped) in an authorized model's release format, by batch.

    Converted once and kept when the float images fit in ``NXB_RELEASE_MAX_GB`` (default 2), else
    converted batch by batch, so that peak memory does not grow with the dataset. A batch is the same
    either way: the conversion works image by image.
    """

    def __init__(self, images: torch.Tensor, model: ZooModel) -> None:
        self.images, self.model = images, model
        float_bytes = 4 * len(images) * math.prod(model.input_size)
        keep = float_bytes <= float(os.environ.get("NXB_RELEASE_MAX_GB", "2")) * 1e9
        self.prepared = self.convert(images) if keep else None

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.prepare(images.float() / 255.0)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, start: int, size: int) -> torch.Tensor:
        if self.prepared is not None:
            return self.prepared[start : start + size]
        return self.convert(self.images[start : start + size])


class Runner:
    """Executes a validated suite; ``on_group`` is called with each finished group's cells (tracking)."""

    def __init__(
        self,
        suite: Suite,
        fresh: bool = False,
        on_group: Callable[[EncodingGroup, list[dict], Path | None], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.suite = suite
        self.fresh = fresh
        self.on_group = on_group
        self.executor = executor or InProcess()
        self.groups = plan_suite(suite)
        self._dataset: ImageSet | None = None
        self._clean_predictions: dict[tuple[str, str], torch.Tensor] = {}
        self.backoff = BatchBackOff()
        _return_freed_batches_to_the_system()
        self._models: dict[str, ZooModel] = {}
        self._attacks: dict[int, Attack] = {}
        self._public: ImageSet | None = None
        self._public_prepared: dict[str, torch.Tensor] = {}  # authorized -> public images at its release format
        self._releases: dict[str, Release] = {}  # authorized -> evaluation images at its release format

    @cached_property
    def store(self) -> CellStore:
        """Opened on first use, so that workers, which only :meth:`compute`, never open it."""
        return CellStore(self.suite.run_dir() / "cells.jsonl")

    def predict(self, model: ZooModel, images: torch.Tensor) -> torch.Tensor:
        """Top-1 predictions of one batch, in smaller chunks if the batch runs out of memory."""
        return self.backoff(model.name, lambda chunk: model(chunk).argmax(1), images)

    def model(self, name: str) -> ZooModel:
        if name not in self._models:
            self._models[name] = build_model(self.suite.model(name))
        return self._models[name]

    def attack(self, step: AttackStep) -> Attack:
        key = id(step.spec)
        if key not in self._attacks:
            self._attacks[key] = ATTACKS.create(step.spec.name, step.spec.params)
        return self._attacks[key]

    def public_images(self, authorized: ZooModel) -> torch.Tensor:
        """The suite's public (attacker-held) clean images at the release resolution; empty if none."""
        spec = self.suite.public
        if spec is None:
            return torch.empty(0, *authorized.input_size)
        if self._public is None:
            self._public = load_cached(spec.name, spec.params, spec.limit, self.suite.seeds[0])
        if authorized.name not in self._public_prepared:
            self._public_prepared[authorized.name] = authorized.prepare(self._public.as_float())
        return self._public_prepared[authorized.name]

    def release(self, authorized: ZooModel) -> Release:
        """The evaluation images in ``authorized``'s release format, one :class:`Release` per authorized model."""
        if self._dataset is None:
            spec = self.suite.dataset
            self._dataset = load_cached(spec.name, spec.params, spec.limit, self.suite.seeds[0])
            faults.point("dataset_loaded")
        if authorized.name not in self._releases:
            self._releases[authorized.name] = Release(self._dataset.images, authorized)
        return self._releases[authorized.name]

    def missing(self, group: EncodingGroup) -> dict[tuple[AttackStep, str], str]:
        if self.fresh:
            return dict(group.cells)
        return {cell: key for cell, key in group.cells.items() if key not in self.store}

    def run(self) -> RunResult:
        """Compute every group with missing cells through the executor; only this process writes the store."""
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
        results = self.executor.run(self, pending)
        for group, cells, sample_rows in tqdm(results, total=len(pending), desc=f"suite {self.suite.name}", unit="encoding"):
            self.store.add(cells)
            computed += 1
            sample = self.save_sample(group, sample_rows)
            if sample is not None:
                samples[group.label] = sample
            if self.on_group:
                self.on_group(group, [self.store.cells[k] for k in group.cells.values()], sample)
        return RunResult(
            [self.store.cells[k] for g in self.groups for k in g.cells.values()], computed, skipped, samples
        )

    def compute(self, group: EncodingGroup, missing: dict[tuple[AttackStep, str], str]) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """One group's missing cells and its sample rows; touches neither the store nor the tracker (runs in workers)."""
        authorized = self.model(group.authorized)
        release = self.release(authorized)
        size = self.suite.batch_size
        for model_name in {name for _, name in missing}:
            if (group.authorized, model_name) not in self._clean_predictions:
                model = self.model(model_name)
                with torch.no_grad():
                    predictions = [self.predict(model, release.batch(start, size)) for start in range(0, len(release), size)]
                self._clean_predictions[(group.authorized, model_name)] = torch.cat(predictions)
        return self.run_group(group, missing, release, self._dataset.labels, self._clean_predictions)

    def save_sample(self, group: EncodingGroup, rows: dict[str, torch.Tensor]) -> Path | None:
        if not rows:
            return None
        return save_sample_grid(rows, sample_file(self.suite.run_dir(), group.label), self.suite.output.sample_images)

    @torch.no_grad()
    def run_group(
        self,
        group: EncodingGroup,
        missing: dict[tuple[AttackStep, str], str],
        release: Release,
        labels: torch.Tensor,
        clean_predictions: dict[tuple[str, str], torch.Tensor],
    ) -> tuple[list[dict], dict[str, torch.Tensor]]:
        authorized = self.model(group.authorized)
        encoder: Encoder = ENCODERS.create(group.encoder.name, group.encoder.params)
        encode_generator = keyed_generator(group.draw_key, "encode")
        steps = list(dict.fromkeys(step for step, _ in missing))
        draws = {step: self.attack(step).draws for step in steps}
        attack_generators = {
            (step, draw): keyed_generator(group.draw_key, step.spec.name, step.spec.params, step.strength, *([draw] if draw else []))
            for step in steps
            for draw in range(draws[step])
        }
        tallies = {cell: Tally(draws[cell[0]]) for cell in missing}
        outputs = ArrayCache("attacked")  # expensive attacks' outputs, reused when a group is recomputed
        output_keys = {
            (step, draw): _attacked_keys(group, step, draw, len(release), self.suite.batch_size)
            for step in steps
            if self.attack(step).cache_outputs
            for draw in range(draws[step])
        }
        reuse = {cell for cell, keys in output_keys.items() if all(key in outputs for key in keys)}  # all batches or none: draws are sequential
        psnr_encoded: list[torch.Tensor] = []
        psnr_stored: list[torch.Tensor] = []
        psnr_attacked: dict[AttackStep, list[torch.Tensor]] = defaultdict(list)
        ssim_attacked: dict[AttackStep, list[torch.Tensor]] = defaultdict(list)
        info: dict[str, float] = {}
        bounds: tuple[dict, dict] = ({}, {})
        sample_rows: dict[str, torch.Tensor] = {}
        size = self.suite.batch_size
        context: AttackContext | None = None
        for start in range(0, len(release), size):
            clean = release.batch(start, size)
            batch_labels = labels[start : start + size]
            encoding = encoder.encode(clean, authorized, group.strength, encode_generator)
            if group.storage != "float32":  # the release is what comes back from the stored files
                encoding.images = apply_storage(encoding.images, group.storage)
                encoding.flat_input = None  # the flat-input path bypasses any stored file
            psnr_stored.append(psnr_per_image(clean, encoding.images))
            info = encoding.info
            if start == 0 and any(step.spec.name == "identity" for step in steps):
                bounds = _group_bounds(encoder, authorized, clean, encoding, {name: self.model(name) for _, name in missing})
            if context is None:
                context = AttackContext(authorized, self.model, self.public_images(authorized), encoding.images)
                for spec_id in dict.fromkeys(id(step.spec) for step in steps):
                    self.attack(next(s for s in steps if id(s.spec) == spec_id)).fit(context)
            context.batch_labels = batch_labels
            psnr_encoded.append(encoding.achieved_psnr)
            if start == 0 and self.suite.output.sample_images:
                sample_rows = {"clean": clean, group.encoder.name: encoding.images}
            for step in steps:
                for draw in range(draws[step]):
                    cached_key = output_keys[(step, draw)][start // size] if (step, draw) in output_keys else None
                    if (step, draw) in reuse:
                        attacked = torch.from_numpy(outputs.get(cached_key)[0])
                    else:
                        attacked = self.attack(step)(encoding.images, step.strength, attack_generators[(step, draw)])
                        if cached_key is not None:
                            outputs.put(cached_key, attacked.detach().cpu().numpy())
                    unchanged = torch.equal(attacked, clean)  # e.g. clean/identity: the clean predictions are this cell's
                    psnr_attacked[step].append(psnr_per_image(clean, attacked))
                    ssim_attacked[step].append(ssim_per_image(clean, attacked))
                    if draw == 0 and start == 0 and sample_rows and step.strength == max(step.spec.strengths) and step.spec.name != "identity":
                        sample_rows[step.label] = attacked
                    for cell_step, model_name in missing:
                        if cell_step is not step:
                            continue
                        model = self.model(model_name)
                        if model.training:
                            raise RuntimeError(f"attack {step.spec.name!r} left model {model_name!r} in training mode")
                        clean_pred = clean_predictions[(group.authorized, model_name)][start : start + size]
                        tally = tallies[(step, model_name)]
                        tally.add(draw, clean_pred if unchanged else self.predict(model, attacked), batch_labels, clean_pred)
                        if encoding.flat_input is not None and model_name == group.authorized and step.spec.name == "identity":
                            flat = model.forward_first_layer(attacked, encoding.flat_input.first_layer(model.first_conv.weight)).argmax(1)
                            tally.flat = True
                            tally.correct_flat += int((flat == batch_labels).sum())
            faults.point("group_batch")
        encoded_psnr = torch.cat(psnr_encoded)
        stored_psnr = torch.cat(psnr_stored)
        cells = []
        for (step, model_name), key in missing.items():
            attacked_psnr = torch.cat(psnr_attacked[step])
            role = self.suite.role(model_name, group.authorized)
            cells.append(
                {
                    "key": key,
                    "suite": self.suite.name,
                    "group": group.key,
                    "authorized": group.authorized,
                    "encoder": group.encoder.name,
                    "strength": group.strength,
                    "seed": group.seed,
                    "attack": step.spec.name,
                    "attack_strength": step.strength,
                    "attack_param": self.attack(step).parameter(step.strength),
                    "model": model_name,
                    "role": role,
                    "encoded_psnr": _finite_mean(encoded_psnr),
                    "encoded_psnr_min": _finite_min(encoded_psnr),
                    "storage": group.storage,
                    "stored_psnr": _finite_mean(stored_psnr),
                    "attacked_psnr": _finite_mean(attacked_psnr),
                    "attacked_ssim": round(float(torch.cat(ssim_attacked[step]).mean()), 4),
                    "draws": draws[step],
                    "encoder_info": info,
                    **tallies[(step, model_name)].metrics(role),
                    **((bounds[0] | bounds[1].get(model_name, {})) if step.spec.name == "identity" else {}),
                }
            )
        count = self.suite.output.sample_images  # only the shown images travel back from a worker
        return cells, {label: rows[:count].clone() for label, rows in sample_rows.items()}


def _return_freed_batches_to_the_system() -> None:
    """Keep peak memory flat over many batches (measured: +50 % RSS at 1,500 images of 224 px without it).

    glibc raises its mmap threshold after a large block is freed, so later batch-sized tensors come from
    the heap, which fragments and is not given back: RSS then grows with the number of batches. A fixed
    1 MiB threshold gives every large tensor its own mapping, returned to the system when freed.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except OSError:
        pass  # not glibc: nothing to do


def _attacked_keys(group: EncodingGroup, step: AttackStep, draw: int, count: int, size: int) -> list[str]:
    """Cache keys of one attack draw's output batches: the group (its encoding and data), the attack, the batching."""
    attack = {"name": step.spec.name, "params": step.spec.params, "version": ATTACKS.get(step.spec.name).version}
    return [
        stable_hash({"group": group.key, "attack": attack, "strength": step.strength, "draw": draw, "start": start, "size": size})
        for start in range(0, count, size)
    ]


def _group_bounds(encoder: Encoder, authorized: ZooModel, clean: torch.Tensor, encoding, models: dict) -> tuple[dict, dict]:
    """Bound-tightness numbers of one encoding group (``nonxfer_bench.bounds``); never fails a run."""
    try:
        from nonxfer_bench.linalg.bounds import group_bounds

        return group_bounds(authorized, encoder, clean, encoding, models)
    except Exception as error:  # noqa: BLE001 - a diagnostic must not cost the benchmark its cells
        return {"bound/error": f"{type(error).__name__}: {str(error)[:300]}"}, {}


def _finite_mean(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.mean()), 4) if len(finite) else None


def _finite_min(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.min()), 4) if len(finite) else None
