"""Runs a suite's work graph: decode once, encode once per group, attack once per step, evaluate every model.

Work is streamed in batches: each batch of the dataset is encoded, attacked by every pending attack
step and classified by every model that still has a missing cell. A group's cells are written to the
:class:`CellStore` when the group finishes, so a killed run resumes at the group it was in.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.data import ImageSet, load_dataset
from nonxfer_bench.encoders import ENCODERS, Encoder
from nonxfer_bench.metrics import psnr_per_image
from nonxfer_bench.plan import AttackStep, EncodingGroup, plan_suite
from nonxfer_bench.samples import save_sample_grid
from nonxfer_bench.store import CellStore
from nonxfer_bench.suite import Suite
from nonxfer_bench.zoo import ZooModel, build_model


def keyed_generator(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from a key, so every draw is a function of the cell's identity."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))


@dataclass
class RunResult:
    cells: list[dict[str, Any]]
    computed_groups: int
    skipped_groups: int
    samples: dict[str, Path]


class Tally:
    """Running sums for one (attack step, model) cell over the batches of a group."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.agree = 0
        self.correct_flat = 0
        self.flat = False

    def metrics(self) -> dict[str, float]:
        out = {"n": self.n, "accuracy": self.correct / self.n, "agreement": self.agree / self.n}
        if self.flat:
            out["accuracy_flat"] = self.correct_flat / self.n
        return out


class Runner:
    """Executes a validated suite; ``on_group`` is called with each finished group's cells (tracking)."""

    def __init__(self, suite: Suite, fresh: bool = False, on_group: Callable[[EncodingGroup, list[dict], Path | None], None] | None = None) -> None:
        self.suite = suite
        self.fresh = fresh
        self.on_group = on_group
        self.store = CellStore(suite.run_dir() / "cells.jsonl")
        self.groups = plan_suite(suite)
        self._models: dict[str, ZooModel] = {}
        self._attacks: dict[int, Attack] = {}

    def model(self, name: str) -> ZooModel:
        if name not in self._models:
            self._models[name] = build_model(self.suite.model(name))
        return self._models[name]

    def attack(self, step: AttackStep) -> Attack:
        key = id(step.spec)
        if key not in self._attacks:
            self._attacks[key] = ATTACKS.create(step.spec.name, step.spec.params)
        return self._attacks[key]

    def missing(self, group: EncodingGroup) -> dict[tuple[AttackStep, str], str]:
        if self.fresh:
            return dict(group.cells)
        return {cell: key for cell, key in group.cells.items() if key not in self.store}

    def run(self) -> RunResult:
        dataset: ImageSet | None = None
        computed = skipped = 0
        samples: dict[str, Path] = {}
        clean_predictions: dict[tuple[str, str], torch.Tensor] = {}
        for group in tqdm(self.groups, desc=f"suite {self.suite.name}", unit="encoding"):
            missing = self.missing(group)
            if not missing:
                skipped += 1
                if self.on_group:
                    self.on_group(group, [self.store.cells[k] for k in group.cells.values()], None)
                continue
            if dataset is None:
                spec = self.suite.dataset
                dataset = load_dataset(spec.name, spec.params).subset(spec.limit, self.suite.seeds[0])
            authorized = self.model(group.authorized)
            release = authorized.prepare(dataset.as_float())
            for model_name in {name for _, name in missing}:
                if (group.authorized, model_name) not in clean_predictions:
                    clean_predictions[(group.authorized, model_name)] = self.model(model_name).predict(release, self.suite.batch_size)
            cells, sample = self.run_group(group, missing, release, dataset.labels, clean_predictions)
            self.store.add(cells)
            computed += 1
            if sample is not None:
                samples[group.label] = sample
            if self.on_group:
                self.on_group(group, [self.store.cells[k] for k in group.cells.values()], sample)
        return RunResult(
            [self.store.cells[k] for g in self.groups for k in g.cells.values()], computed, skipped, samples
        )

    @torch.no_grad()
    def run_group(
        self,
        group: EncodingGroup,
        missing: dict[tuple[AttackStep, str], str],
        release: torch.Tensor,
        labels: torch.Tensor,
        clean_predictions: dict[tuple[str, str], torch.Tensor],
    ) -> tuple[list[dict], Path | None]:
        authorized = self.model(group.authorized)
        encoder: Encoder = ENCODERS.create(group.encoder.name, group.encoder.params)
        encode_generator = keyed_generator(group.key, "encode")
        steps = list(dict.fromkeys(step for step, _ in missing))
        attack_generators = {step: keyed_generator(group.key, step.spec.name, step.spec.params, step.strength) for step in steps}
        tallies: dict[tuple[AttackStep, str], Tally] = defaultdict(Tally)
        psnr_encoded: list[torch.Tensor] = []
        psnr_attacked: dict[AttackStep, list[torch.Tensor]] = defaultdict(list)
        info: dict[str, float] = {}
        sample_rows: dict[str, torch.Tensor] = {}
        size = self.suite.batch_size
        for start in range(0, len(release), size):
            clean = release[start : start + size]
            batch_labels = labels[start : start + size]
            encoding = encoder.encode(clean, authorized, group.strength, encode_generator)
            info = encoding.info
            psnr_encoded.append(encoding.achieved_psnr)
            if start == 0 and self.suite.output.sample_images:
                sample_rows = {"clean": clean, group.encoder.name: encoding.images}
            for step in steps:
                attacked = self.attack(step)(encoding.images, step.strength, attack_generators[step])
                psnr_attacked[step].append(psnr_per_image(clean, attacked))
                if start == 0 and self.suite.output.sample_images and step.strength == max(step.spec.strengths) and step.spec.name != "identity":
                    sample_rows[step.label] = attacked
                for (cell_step, model_name) in missing:
                    if cell_step is not step:
                        continue
                    model = self.model(model_name)
                    predictions = model(attacked).argmax(1)
                    tally = tallies[(step, model_name)]
                    tally.n += len(predictions)
                    tally.correct += int((predictions == batch_labels).sum())
                    clean_pred = clean_predictions[(group.authorized, model_name)][start : start + size]
                    tally.agree += int((predictions == clean_pred).sum())
                    if encoding.authorized_patches is not None and model_name == group.authorized and step.spec.name == "identity":
                        flat = model.forward_first_layer_patches(attacked, encoding.authorized_patches).argmax(1)
                        tally.flat = True
                        tally.correct_flat += int((flat == batch_labels).sum())
        encoded_psnr = torch.cat(psnr_encoded)
        cells = []
        for (step, model_name), key in missing.items():
            attacked_psnr = torch.cat(psnr_attacked[step])
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
                    "role": "authorized" if model_name == group.authorized else "unauthorized",
                    "encoded_psnr": _finite_mean(encoded_psnr),
                    "encoded_psnr_min": _finite_min(encoded_psnr),
                    "attacked_psnr": _finite_mean(attacked_psnr),
                    "encoder_info": info,
                    **tallies[(step, model_name)].metrics(),
                }
            )
        sample = None
        if sample_rows:
            path = self.suite.run_dir() / "samples" / f"{group.label.replace('/', '__')}.png"
            sample = save_sample_grid(sample_rows, path, self.suite.output.sample_images)
        return cells, sample


def _finite_mean(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.mean()), 4) if len(finite) else None


def _finite_min(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.min()), 4) if len(finite) else None
