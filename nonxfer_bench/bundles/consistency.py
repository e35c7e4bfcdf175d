"""A bundle's claims against its cells, without computing anything: every cell's numbers against its own outcome bits,
the cells against the suite's plan, the manifest's claims against the cells and the suite, and one line per cell in
the cells file.

Each function returns the problems it found, one line each (empty: none).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from nonxfer_bench.bundles.contents import Contents
from nonxfer_bench.bundles.manifest import Manifest, relative_paths
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import draws, store_lines
from nonxfer_bench.core.errors import excerpt
from nonxfer_bench.core.version import UNKNOWN
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.loading import suite_datasets
from nonxfer_bench.metrics.outcomes import aggregate_draws

NUMBERS = (
    "n", "n_labeled", "draws", "accuracy", "accuracy_worst", "accuracy_spread", "accuracy_draws",
    "agreement", "agreement_worst", "agreement_spread", "agreement_draws",
)  # fmt: skip
SHOWN = 10  # problems of one kind named one by one; beyond, how many more


def cell_label(group: EncodingGroup | None, cell: Cell) -> str:
    """A cell as people read it: ``vit_a/patch@10/seed0 blur@0.75 resnet``."""
    where = group.label if group else f"{cell.authorized}/{cell.encoder}@{cell.strength:g}/seed{cell.seed}"
    return f"{where} {cell.attack}@{cell.attack_strength:g} {cell.model}"


def numbers_from_bits(cell: Cell) -> dict[str, Any] | None:
    """The numbers a cell's outcome bits give, as the runner computes them
    (:meth:`~nonxfer_bench.metrics.outcomes.Tally.metrics`):
    accuracy = correct labeled images / labeled images per draw, agreement = agreeing images / images per draw, their
    mean over draws (and worst, spread and every draw's value with several draws). None without outcomes."""
    outcomes = cell.outcomes
    if outcomes is None:
        return None
    labeled = int(outcomes.labeled_bits().sum())
    count = len(outcomes.correct)
    accuracies = [int(outcomes.correct_bits(d).sum()) / labeled for d in range(count)] if labeled else None
    agreements = (
        [int(outcomes.agree_bits(d).sum()) / outcomes.images for d in range(count)] if outcomes.images else None
    )
    numbers = {"n": outcomes.images, "n_labeled": labeled if labeled != outcomes.images else None, "draws": count}
    numbers |= aggregate_draws("accuracy", accuracies, cell.role) | aggregate_draws("agreement", agreements, cell.role)
    return {name: numbers.get(name) for name in NUMBERS}


def number_problems(contents: Contents) -> list[str]:
    """Every cell's n, accuracy and agreement (and their per-draw values) are exactly what its outcome bits give."""
    groups = group_of(contents)
    problems = []
    for key, cell in contents.cells.items():
        expected = numbers_from_bits(cell)
        label = cell_label(groups.get(key), cell)
        if expected is None:
            problems.append(f"{label}: no per-image outcomes (a cell store of schema 1): its numbers cannot be checked")
            continue
        recorded = {name: getattr(cell, name) for name in NUMBERS}
        wrong = [name for name in NUMBERS if recorded[name] != expected[name]]
        if wrong:
            shown = ", ".join(
                f"{name} {_shown(recorded[name])} (the bits give {_shown(expected[name])})" for name in wrong[:3]
            )
            problems.append(f"{label}: {shown}")
    return problems


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else excerpt(value, 40)


def group_of(contents: Contents) -> dict[str, EncodingGroup]:
    """Planned cell key -> its encoding group."""
    return {key: group for group in contents.plan for key in group.cells.values()}


def plan_problems(contents: Contents) -> list[str]:
    """The cells are exactly the suite's plan (with the manifest's model identities and draws), and each says what
    its key plans: group, release, attack step, model and role."""
    planned = {key: (group, step, model) for group in contents.plan for (step, model), key in group.cells.items()}
    missing = [key for key in planned if key not in contents.cells]
    extra = sorted(set(contents.cells) - set(planned))
    problems = []
    if missing and len(missing) == len(planned):
        problems.append(
            f"none of the {len(planned):,} cells the suite plans is in the bundle ({len(contents.cells):,} cells "
            "there): the cells were computed with other weights than BUNDLE.json 'models' records, another suite, or "
            "another version of its components"
        )
    elif missing:
        group, step, model = planned[missing[0]]
        problems.append(
            f"{len(missing):,} of {len(planned):,} planned cells are missing (first: {group.label} {step.label} "
            f"{model})"
        )
    if extra and len(missing) != len(planned):
        cell = contents.cells[extra[0]]
        problems.append(
            f"{len(extra):,} cells are not in the suite's plan (first: {cell_label(None, cell)}, key {cell.key})"
        )
    for key, (group, step, model) in planned.items():
        cell = contents.cells.get(key)
        if cell is None:
            continue
        expected = {
            "group": group.key,
            "authorized": group.authorized,
            "encoder": group.encoder.name,
            "strength": group.strength,
            "seed": group.seed,
            "storage": group.storage,
            "precision": group.precision,
            "attack": step.spec.name,
            "attack_strength": step.strength,
            "attack_config": step.spec.params,
            "model": model,
            "role": contents.suite.role(model, group.authorized),
            "suite": contents.suite.name,
        }
        if (
            not cell.attack_config
        ):  # cells computed before they recorded it (fashion-full-subset's): their key still hashes the params
            expected.pop("attack_config")
        wrong = [name for name, value in expected.items() if getattr(cell, name) != value]
        if wrong:
            problems.append(
                f"cell {key} ({group.label} {step.label} {model}) says "
                f"{', '.join(f'{n} {excerpt(getattr(cell, n), 40)}' for n in wrong[:3])}"
            )
    return problems


def claim_problems(contents: Contents, manifest: Manifest) -> list[str]:
    """BUNDLE.json says what the cells and the suite say: the suite as loaded, its models, the counts, image ids, draws,
    devices, precisions and code; and every cell records a known code commit (provenance without gaps)."""
    cells = list(contents.cells.values())
    problems = []
    resolved = relative_paths(contents.suite.model_dump(mode="json"), contents.project)
    if resolved != manifest.resolved_suite:
        key = first_difference(manifest.resolved_suite, resolved)
        problems.append(
            f"{contents.suite_file} now loads another suite than BUNDLE.json 'resolved_suite' records (first "
            f"difference at '{key}')"
        )
    datasets = [
        (key, spec.model_dump(mode="json")) for key, spec in suite_datasets(contents.suite, contents.suite_file)
    ]
    if [(record.key, record.spec) for record in manifest.datasets] != datasets:
        problems.append(
            f"BUNDLE.json 'datasets' are not the datasets the suite reads ({', '.join(key for key, _ in datasets)})"
        )
    names = [model.name for model in contents.suite.models]
    if sorted(manifest.models) != sorted(names):
        problems.append(
            f"BUNDLE.json 'models' names {', '.join(sorted(manifest.models))}; the suite's zoo is "
            f"{', '.join(sorted(names))}"
        )
    claims = {
        "cells": (manifest.cells, len(cells)),
        "groups": (manifest.groups, len(contents.plan)),
        "image_ids": (manifest.image_ids, sorted({c.outcomes.ids for c in cells if c.outcomes is not None})),
        "draws": (manifest.draws, draws(cells)),
        "devices": (manifest.devices, sorted({c.device for c in cells if c.device})),
        "precisions": (manifest.precisions, sorted({c.precision for c in cells})),
        "code": (manifest.code, sorted({c.code or "not recorded" for c in cells})),
    }
    for name, (claimed, found) in claims.items():
        if claimed != found:
            problems.append(f"BUNDLE.json '{name}' says {excerpt(claimed, 60)}, the cells {excerpt(found, 60)}")
    return problems + code_problems(cells)


def code_problems(cells: list[Cell]) -> list[str]:
    """Provenance without gaps: every cell records the committed code that computed it (a git commit without
    uncommitted changes, :func:`~nonxfer_bench.core.version.code_version`)."""
    unknown = [c for c in cells if not c.code or f"git {UNKNOWN}" in c.code or "uncommitted" in c.code]
    if not unknown:
        return []
    return [
        f"{len(unknown):,} of {len(cells):,} cells do not record the committed code that computed them "
        f"({excerpt(unknown[0].code or 'no code field', 60)}): recompute them with committed code (`nonxfer-bench run "
        "SUITE --fresh` in a clean checkout)"
    ]


def weight_problems(contents: Contents, manifest: Manifest) -> tuple[list[str], list[str]]:
    """(problems, unusable): a zoo model whose weights here are not those BUNDLE.json 'models' records is a problem;
    ``unusable`` names it and every model whose weight file is not here (their cells cannot be replayed here)."""
    problems, unusable = [], []
    for model in contents.suite.models:
        recorded = manifest.models.get(model.name)
        if recorded is None:
            continue
        if model.weights.source == "file" and not model.weights.path.is_file():
            unusable.append(f"{model.name} (no file {model.weights.path})")
            continue
        here = model.identity()
        if here != recorded:
            sha = str(recorded.get("weights", {}).get("sha256", "none"))
            what = f"weights sha256 {here['weights'].get('sha256', 'none')[:12]}... here, {sha[:12]}... in BUNDLE.json"
            if here.get("weights") == recorded.get("weights"):
                what = f"its identity differs from BUNDLE.json's at '{first_difference(recorded, here)}'"
            problems.append(f"zoo model {model.name!r}: {what}")
            unusable.append(f"{model.name} (other weights)")
    return problems, unusable


def cells_file_problems(contents: Contents, folder: Path) -> list[str]:
    """One line per cell in the cells file: a store reader keeps the last of two lines with one key, so a second line
    could hide the first from every table. (Lines written before cells had their present fields read as they are.)"""
    path = results_cells(folder)
    if not path.is_file():
        return [f"{path.name} is missing"]
    keys = Counter(json.loads(line).get("key") for _, line, _ in store_lines(path))
    repeated = sorted(key for key, count in keys.items() if count > 1)
    if repeated:
        return [
            f"{path.name}: {len(repeated):,} key{'s' if len(repeated) > 1 else ''} on more than one line (first: "
            f"{repeated[0]}): only the last line is read"
        ]
    return []


def first_difference(left: Any, right: Any, key: str = "") -> str:
    """The first key path where two JSON values differ (``attacks[3].params.epochs``)."""
    if isinstance(left, dict) and isinstance(right, dict):
        for name in sorted(set(left) | set(right)):
            if left.get(name) != right.get(name):
                return first_difference(left.get(name), right.get(name), f"{key}.{name}" if key else name)
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (a, b) in enumerate(zip(left, right)):
            if a != b:
                return first_difference(a, b, f"{key}[{i}]")
    return key or "(top)"
