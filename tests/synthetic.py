"""Synthetic cells for the reporting tests: a release attacked along the adversary ladder, with per-image outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nonxfer_bench.cells.cell import Cell, pack_bits

# the quickstart's cells.csv as committed before it ran the protocol (22 encodings at up to 3 strengths, 8 attacks):
# a fixed, rich table for the plot tests, which the recomputed quickstart (10 releases, 1-2 strengths) no longer is
QUICKSTART = Path(__file__).resolve().parent / "fixtures" / "quickstart_cells.csv"
IMAGES = 200
MODELS = ["a", "b", "c"]  # "a" is authorized
# (attack, strength, tier, released, labelled, public, unauthorized accuracy): a ladder where knowledge and budget pay
LADDER = [
    ("identity", 1.0, "none", 0, 0, 0, 0.15),
    ("blur", 0.5, "none", 0, 0, 0, 0.25),
    ("patch_mean", 1.0, "method", 1, 0, 100, 0.30),
    ("patch_mean", 1.0, "method", 10, 0, 2000, 0.45),
    ("patch_mean", 1.0, "method", 100, 0, 2000, 0.50),
    ("subspace_patch", 0.75, "architecture", 10, 0, 2000, 0.55),
    ("subspace_patch", 0.75, "architecture", 100, 0, 2000, 0.75),
    ("finetune", 1.0, "labelled_nes", 0, 16, 0, 0.40),
    ("finetune", 1.0, "labelled_nes", 0, 128, 0, 0.70),
    ("oracle_projection", 1.0, "white_box", 0, 0, 0, 0.85),
]
CLEAN = 0.90


def cell(
    attack: str,
    strength: float,
    model: str,
    accuracy: float,
    rng: np.random.Generator,
    encoder: str = "patch",
    **threat,
) -> Cell:
    """A cell of schema 2 whose per-image outcomes have (about) ``accuracy`` correct; its accuracy is theirs."""
    correct = rng.random(IMAGES) < accuracy
    bits = pack_bits(correct)
    param = {k: v for k, v in threat.items() if k.startswith("budget_") and v}
    return Cell(
        key=f"{encoder}-{attack}-{strength}-{model}-{json.dumps(param, sort_keys=True)}",
        suite="s",
        group=f"g-{encoder}",
        authorized="a",
        encoder=encoder,
        strength=0.0 if encoder == "clean" else 20.0,
        seed=0,
        attack=attack,
        attack_strength=strength,
        attack_param={k.removeprefix("budget_"): v for k, v in param.items()},
        baseline=attack == "identity",
        model=model,
        role="authorized" if model == "a" else "unauthorized",
        n=IMAGES,
        accuracy=float(correct.mean()),
        agreement=float(correct.mean()),
        encoded_psnr=None if encoder == "clean" else 20.0,
        outcomes={"images": IMAGES, "ids": "images", "correct": [bits], "agree": [bits]},
        **threat,
    )


def ladder_cells(seed: int = 0) -> list[Cell]:
    """A clean release and a patch release of authorized model ``a``, each attacked along :data:`LADDER`."""
    rng = np.random.default_rng(seed)
    cells = []
    for encoder in ("clean", "patch"):
        for attack, strength, tier, released, labelled, public, unauthorized in LADDER:
            threat = {"tier": tier, "budget_released": released, "budget_labelled": labelled, "budget_public": public}
            for model in MODELS:
                accuracy = (
                    CLEAN if encoder == "clean" or model == "a" else unauthorized - (0.1 if model == "c" else 0.0)
                )
                cells.append(cell(attack, strength, model, accuracy, rng, encoder, **threat))
    return cells


def quickstart_cells() -> list[Cell]:
    """The quickstart results of tests/fixtures/quickstart_cells.csv as cells: 6 models, 2 authorized, 5 encoders
    at up to 3 strengths (reference in nominal PSNR), 8 attacks; no per-image outcomes, no threat tiers."""
    frame = pd.read_csv(QUICKSTART, keep_default_na=False, na_values=[""])
    cells = []
    for index, row in enumerate(frame.to_dict("records")):
        record = {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
        record |= {
            "key": str(index),
            "suite": "quickstart",
            "group": f"{row['authorized']}-{row['encoder']}-{row['strength']}",
        }
        record["attack_param"] = {"setting": row["attack_param"]} if isinstance(row["attack_param"], str) else {}
        cells.append(Cell.from_record(record))  # schema 1: the no-attack step is identity
    return cells
