"""The training attacks are a function of the group: a fine-tuning group computed twice, whatever the process drew
before
it, gives the same outcome bits. A bundle's replay computes one group alone, in a fresh process, and compares bits."""

from __future__ import annotations

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.testing import context
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model
from tests.helpers import write_yaml

MODEL = {
    "arch": "resnet18", "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
    "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
}  # fmt: skip
TRAINING = [
    {
        "name": "finetune",
        "strengths": [1.0],
        "params": {"labelled": 48, "scope": "all", "epochs": 2, "lr": 0.01, "batch_size": 8},
    },
    {
        "name": "finetune",
        "strengths": [1.0],
        "params": {"labelled": 48, "scope": "first_layer", "epochs": 2, "lr": 0.01, "batch_size": 8},
    },
    {
        "name": "augment_finetune",
        "strengths": [1.0],
        "params": {"images": 24, "epochs": 2, "lr": 0.01, "batch_size": 8},
    },
    {"name": "bn_adapt", "strengths": [1.0]},
    {
        "name": "learned_inverse",
        "strengths": [1.0],
        "params": {"pairs": "leaked", "m": 24, "steps": 10, "batch_size": 8},
    },
]


def outcomes(path, group: EncodingGroup, global_seed: int, cache, monkeypatch) -> dict:
    """Every cell's outcomes of ``group`` computed by a new runner in an empty cache, its models built first (building a
    random-weight model seeds the global generators), then the global generators seeded with ``global_seed`` (what
    earlier
    groups of a run, or nothing in a replay, leave behind)."""
    monkeypatch.setenv("NXB_CACHE", str(cache))
    runner = Runner(load_suite(path))
    for name in ("own", "other"):
        runner.model(name)
    torch.manual_seed(global_seed)
    cells, _ = runner.compute(group, dict(group.cells))
    return {(cell.attack, cell.attack_param.get("scope"), cell.model): cell.outcomes for cell in cells}


def test_a_fine_tuning_group_computed_twice_gives_the_same_outcome_bits(tmp_path, monkeypatch):
    """The unauthorized model has dropout (timm's ``drop_rate``): fine-tuning it in training mode draws dropout masks,
    which must come from the group's keyed draws, not from whatever state the global generator was left in."""
    zoo = [
        {"name": "own", **MODEL, "seed": 0},
        {"name": "other", **MODEL, "kwargs": MODEL["kwargs"] | {"drop_rate": 0.5}, "seed": 1},
    ]
    path = write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": "replay",
            "dataset": {"name": "digits", "limit": 40},
            "public": {"name": "digits", "params": {"split": "train"}, "limit": 48},
            "zoo": zoo,
            "authorized": ["own"],
            "encoders": [{"name": "patch", "strengths": [10.0]}],
            "attacks": TRAINING,
            "batch_size": 40,
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
            "tracking": {"enabled": False},
        },
    )
    group = next(group for group in Runner(load_suite(path)).groups if group.encoder.name == "patch")
    first = outcomes(path, group, 1, tmp_path / "cache-1", monkeypatch)
    again = outcomes(path, group, 2, tmp_path / "cache-2", monkeypatch)
    assert len(first) == 2 * len(TRAINING)  # every step on both models
    differing = sorted(str(cell) for cell in first if first[cell] != again[cell])
    assert differing == [], f"outcome bits differ between two computations of the group: {differing}"


@pytest.mark.parametrize("name", ["finetune", "augment_finetune"])
def test_training_with_dropout_is_keyed_and_leaves_the_global_random_state_as_it_was(name):
    """The same adapted weights whatever the global generators hold, and those generators as they were afterwards."""
    spec = ModelSpec(
        name="dropout",
        arch="resnet18",
        kwargs=MODEL["kwargs"] | {"drop_rate": 0.5},
        preprocess={"input_size": [1, 20, 24], "mean": [0.5], "std": [0.25]},
        seed=3,
    )
    model = build_model(spec)
    attack = ATTACKS.create(name, {"scope": "all", "epochs": 2, "lr": 0.01, "batch_size": 4})
    attack.prepare(context(1))
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        weights.append(attack.adapt(model, 1.0).state_dict())
        assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
