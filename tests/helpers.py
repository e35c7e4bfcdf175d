"""Helpers the tests import (fixtures live in conftest.py): YAML files, the digits zoo's config and a digits
suite on it, and a tracked group of tiny random ResNets."""

from __future__ import annotations

from pathlib import Path

import yaml

DIGITS_PREPROCESS = {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]}
DIGITS_ZOO = {
    "dataset": {"name": "digits"},
    "train": {"epochs": 12, "batch_size": 64, "lr": 0.003, "weight_decay": 0.01},
    "models": [
        {
            "name": f"vit_{suffix}",
            "arch": "vit_tiny_patch16_224",
            "kwargs": {
                "img_size": 16,
                "patch_size": 4,
                "in_chans": 1,
                "embed_dim": 12,
                "depth": 2,
                "num_heads": 2,
                "num_classes": 10,
            },
            "train": {"epochs": 30, "batch_size": 32, "lr": 0.003, "weight_decay": 0.01},
            "preprocess": DIGITS_PREPROCESS,
            "weights": {"source": "file", "path": f"vit_{suffix}.safetensors"},
            "seed": seed,
        }
        for suffix, seed in (("a", 0), ("b", 1))
    ]
    + [
        {
            "name": "res",
            "arch": "resnet18",
            "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10},
            "preprocess": DIGITS_PREPROCESS,
            "weights": {"source": "file", "path": "res.safetensors"},
            "seed": 2,
        }
    ],
}


def encoders_with_defaults() -> list[str]:
    """The registered encoders that can be made with their default parameters: every one but those that need files
    (``stored_release`` reads a release folder; tests/encoders/test_stored_release.py makes one for it)."""
    from nonxfer_bench.encoders import ENCODERS

    return [
        name
        for name in ENCODERS.names()
        if not any(field.is_required() for field in ENCODERS.get(name).Params.model_fields.values())
    ]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def digits_suite(tmp_path: Path, zoo: Path, **overrides) -> Path:
    """Write a small digits suite using the trained zoo; keys in ``overrides`` replace the defaults."""
    suite = {
        "name": "digits",
        "dataset": {"name": "digits", "limit": 120},
        "zoo": str(zoo),
        "authorized": ["vit_a"],
        "encoders": [{"name": "patch", "strengths": [0.0]}, {"name": "reference", "strengths": [20.0]}],
        "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
        "batch_size": 50,
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 4},
        "tracking": {"enabled": False},
    }
    suite.update(overrides)
    return write_yaml(tmp_path / "suite.yaml", suite)


def tracked_patch_group(tmp_path: Path, uri: str, experiment: str, models: list[str], strength: float):
    """A suite of tiny random ResNets (``models``, the first authorized) with one patch encoding, tracked to
    ``uri``/``experiment``; returns (suite, suite file, its patch group) for logging cells as a group run."""
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.loading import load_suite

    model = {
        "arch": "resnet18",
        "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
        "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
    }
    path = write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": experiment,
            "dataset": {"name": "digits", "limit": 10},
            "zoo": [{"name": name, **model} for name in models],
            "authorized": [models[0]],
            "encoders": [{"name": "patch", "strengths": [strength]}],
            "attacks": [{"name": "identity"}],
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
            "tracking": {"uri": uri, "experiment": experiment},
        },
    )
    suite = load_suite(path)
    return suite, path, next(g for g in plan_suite(suite) if g.encoder.name == "patch")


def encode_args(
    source: Path | str, output: Path | str, zoo: Path | str, model: str, encoder: str, strength: object, **options
) -> list[str]:
    """The arguments of ``nonxfer-bench encode``: ``options`` become ``--name value`` (``seed_key`` is
    ``--seed-key``; ``True`` is a bare flag), in the order given."""
    args = ["encode", str(source), str(output), "--zoo", str(zoo), "--model", model, "--encoder", encoder]
    args += ["--strength", str(strength)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args
