"""A suite small enough for execution tests: 16-px digits, two random-weight ResNets (nothing to train)."""

from __future__ import annotations

from pathlib import Path

from nonxfer_bench.loading import load_suite
from nonxfer_bench.schema.suite import Suite
from tests.helpers import write_yaml

RESNET = {
    "arch": "resnet18",
    "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
    "preprocess": {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]},
}


def small_suite(folder: Path, **overrides) -> Suite:
    """A digits suite with models ``a`` (authorized) and ``b``, the clean images and a 40 dB white-noise release; keys
    in
    ``overrides`` replace the defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    suite = {
        "name": "small",
        "dataset": {"name": "digits", "limit": 40},
        "zoo": [{"name": "a", "seed": 0, **RESNET}, {"name": "b", "seed": 1, **RESNET}],
        "authorized": ["a"],
        "encoders": [
            {"name": "gaussian", "strengths": [40.0]}
        ],  # nearly clean, and attacked (the clean images face no attack)
        "attacks": [{"name": "identity"}],
        "batch_size": 10,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
    }
    return load_suite(write_yaml(folder / "suite.yaml", suite | overrides))
