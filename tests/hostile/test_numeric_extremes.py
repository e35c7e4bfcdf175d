"""Defect 9, numbers: extreme values in suite fields, zoo and training files, NXB_* variables and CLI
arguments are refused with one line before any work (or allocation) starts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.helpers import DIGITS_PREPROCESS, DIGITS_ZOO, digits_suite, encode_args
from tests.hostile.conftest import refused

INF, NAN = float("inf"), float("nan")

# (suite overrides, the key the error line names); validated without allocating anything
SUITE_CASES = {
    "huge batch": ({"batch_size": 10**18}, "batch_size"),
    "huge seed": ({"seeds": [2**64]}, "seeds[0]"),
    "negative seed": ({"seeds": [-1]}, "seeds[0]"),
    "huge limit": ({"dataset": {"name": "digits", "limit": 10**30}}, "dataset.limit"),
    "huge encoder strength": ({"encoders": [{"name": "patch", "strengths": [1e308]}]}, "encoders[0].strengths"),
    "very negative encoder strength": (
        {"encoders": [{"name": "patch", "strengths": [-1e308]}]},
        "encoders[0].strengths",
    ),
    "infinite threads": ({"threads": 10**9}, "threads"),
    "infinite cpus": ({"resources": {"cpus": INF}}, "resources.cpus"),
    "huge cpus": ({"resources": {"cpus": 1e300}}, "resources.cpus"),
    "NaN gpus": ({"resources": {"gpus": NAN}}, "resources.gpus"),
    "huge sample count": ({"output": {"sample_images": 10**9}}, "output.sample_images"),
    "huge digits size": ({"dataset": {"name": "digits", "params": {"size": 10**6}}}, "dataset.params.size"),
    "duplicate seeds": ({"seeds": [0, 0]}, "seeds"),
    "duplicate strengths": ({"encoders": [{"name": "patch", "strengths": [10.0, 10.0]}]}, "encoders[0].strengths"),
    "duplicate encoders": (
        {"encoders": [{"name": "patch", "strengths": [10.0]}, {"name": "patch", "strengths": [10.0]}]},
        "encoders[1]",
    ),
    "duplicate attacks": (
        {"attacks": [{"name": "blur", "strengths": [0.5]}, {"name": "blur", "strengths": [0.5]}]},
        "attacks[1]",
    ),
    "duplicate attack strengths": ({"attacks": [{"name": "blur", "strengths": [0.5, 0.5]}]}, "attacks[0].strengths"),
    "duplicate authorized": ({"authorized": ["vit_a", "vit_a"]}, "authorized[1]"),
    "duplicate controls": ({"controls": ["vit_b", "vit_b"]}, "controls[1]"),
    "huge attack draws": ({"attacks": [{"name": "diffusion", "params": {"draws": 10**9}}]}, "attacks[0].params.draws"),
}


@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_suite_extremes(tmp_path: Path, cwd: Path, digits_zoo: Path, case: str) -> None:
    overrides, key = SUITE_CASES[case]
    refused("list", "models", digits_suite(tmp_path, digits_zoo, **overrides), cwd=cwd, expected=(f"'{key}",))


PREPROCESS_CASES = {
    "huge input": {"input_size": [1, 10**6, 10**6]},
    "zero channels": {"input_size": [0, 16, 16]},
    "zero std": {"std": [0.0]},
    "negative std": {"std": [-0.4]},
    "NaN mean": {"mean": [NAN]},
    "infinite mean": {"mean": [INF]},
    "tiny crop": {"crop_pct": 1e-300},
    "std of the wrong length": {"std": [0.4, 0.4]},
}


@pytest.mark.parametrize("case", list(PREPROCESS_CASES))
def test_zoo_preprocess_extremes(tmp_path: Path, cwd: Path, case: str) -> None:
    """In a subprocess: a missed huge input size would allocate; the limits stop it instead of the test run."""
    zoo = copy.deepcopy(DIGITS_ZOO)
    zoo["models"][0]["preprocess"] = {**DIGITS_PREPROCESS, **PREPROCESS_CASES[case]}
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(zoo))
    refused("zoo", "train", path, cwd=cwd, expected=("models[0].preprocess",), isolate=case == "huge input")


TRAIN_CASES = {
    "huge epochs": ({"epochs": 10**12}, "train.epochs"),
    "infinite lr": ({"lr": INF}, "train.lr"),
    "huge batch": ({"batch_size": 10**15}, "train.batch_size"),
    "NaN weight decay": ({"weight_decay": NAN}, "train.weight_decay"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_zoo_training_extremes(tmp_path: Path, cwd: Path, case: str) -> None:
    change, key = TRAIN_CASES[case]
    zoo = copy.deepcopy(DIGITS_ZOO)
    zoo["train"].update(change)
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(zoo))
    refused("zoo", "train", path, cwd=cwd, expected=(key,))


ENV_CASES = {
    "NXB_CACHE_MAX_GB": ["-5", "nan", "inf", "1e999", "lots"],
    "NXB_RELEASE_MAX_GB": ["-1", "nan", "inf", "many"],
    "NXB_FAULT": ["store_append:abc", "store_append:1:BOGUS", "no_such_point", "store_append:0", "store_append:-3"],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in ENV_CASES.items() for v in values])
def test_environment_extremes(tmp_path: Path, cwd: Path, digits_zoo: Path, name: str, value: str) -> None:
    suite = digits_suite(tmp_path, digits_zoo, dataset={"name": "digits", "limit": 20})
    refused("run", suite, "--no-tracking", cwd=cwd, env={name: value}, expected=(name,))
    assert not (tmp_path / "runs" / "digits" / "cells.jsonl").exists()


CLI_CASES = [
    (["run", "{suite}", "--limit", str(10**30)], "--limit"),
    (["run", "{suite}", "--workers", str(10**6), "--executor", "process"], "--workers"),
    (["run", "{suite}", "--threads", str(10**9)], "--threads"),
    (["run", "{suite}", "--limit", "-1"], "--limit"),
    (encode_args("{tmp}", "{tmp}/out", "{zoo}", "vit_a", "patch", "1e308", seed_key="k"), "--strength"),
    (encode_args("{tmp}", "{tmp}/out", "{zoo}", "vit_a", "patch", 20, seed_key="k", batch_size=10**12), "--batch-size"),
    (["ui", "{suite}", "--port", "99999"], "--port"),
    (["ui", "{suite}", "--port", "-1"], "--port"),
    (["train", "diffusion", "{suite}", "--steps", str(10**30)], "--steps"),
]


@pytest.mark.parametrize(("argv", "key"), CLI_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_cli_extremes(tmp_path: Path, cwd: Path, digits_zoo: Path, argv: list[str], key: str) -> None:
    suite = digits_suite(tmp_path, digits_zoo)
    values = {"suite": str(suite), "tmp": str(tmp_path), "zoo": str(digits_zoo)}
    refused(*[a.format(**values) for a in argv], cwd=cwd, expected=(key,))
