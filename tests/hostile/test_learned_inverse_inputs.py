"""learned_inverse's parameters from a hostile suite: extreme numbers are refused before any work, and a pairs model
the zoo does not hold is one line and exit 2 when the attack fits (not a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DIGITS_PREPROCESS, write_yaml
from tests.hostile.conftest import refused

VIT = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 12, "depth": 1, "num_heads": 2, "num_classes": 10}


def suite(tmp_path: Path, params: dict) -> Path:
    """A digits suite of one random-weight ViT (nothing to train) attacked by learned_inverse with ``params``."""
    return write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": "hostile-inverse",
            "dataset": {"name": "digits", "limit": 20},
            "public": {"name": "digits", "params": {"split": "train"}, "limit": 20},
            "zoo": [{"name": "a", "arch": "vit_tiny_patch16_224", "kwargs": VIT, "preprocess": DIGITS_PREPROCESS}],
            "authorized": ["a"],
            "encoders": [{"name": "patch", "strengths": [10.0]}],
            "attacks": [{"name": "identity"}, {"name": "learned_inverse", "params": {"m": 8, "steps": 2, **params}}],
            "bounds": False,
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 0},
            "tracking": {"enabled": False},
        },
    )


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"pairs": "leaked", "m": 10**12}, "m"),
        ({"pairs": "leaked", "steps": 10**12}, "steps"),
        ({"pairs": "leaked", "width": 10**9}, "width"),
        ({"pairs": "leaked", "batch_size": 10**9}, "batch_size"),
        ({"pairs": "leaked", "max_period": 10**9}, "max_period"),
        ({"pairs": "leaked", "lr": float("nan")}, "lr"),
        ({"pairs": "surrogate"}, "params"),  # which model?
    ],
)
def test_extreme_or_incomplete_parameters_are_refused_before_any_work(
    tmp_path: Path, cwd: Path, params: dict, key: str
) -> None:
    refused(
        "list",
        "models",
        suite(tmp_path, params),
        cwd=cwd,
        expected=(f"'attacks[1].params{'' if key == 'params' else '.' + key}'",),
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"pairs": "surrogate", "model": "nobody"}, "params.model': 'nobody' is not a model of the zoo"),
        ({"pairs": "surrogate", "model": "a"}, "is the authorized model"),
        ({"pairs": "identified", "candidates": ["a", "nobody"]}, "'nobody' is not a model"),
    ],
)
def test_a_pairs_model_the_zoo_does_not_hold_is_one_line(
    tmp_path: Path, cwd: Path, params: dict, expected: str
) -> None:
    refused("run", suite(tmp_path, params), cwd=cwd, expected=(expected,))
