"""Defect class 'unbounded parameters' and the load-time checks of component parameters: every numeric parameter of
every registered attack, encoder and dataset refuses an absurd value (1e300, -1e300, NaN, infinity, 10**18) with one
line and exit code 2 at load, before any work; names of zoo models, the operator's k, the suite resources an attack
needs and attacker data that shares images with the evaluated ones are checked against the suite; a store line that
claims absurd sizes is refused before anything is allocated."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Annotated, Any, Iterator, Union, get_args, get_origin

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.cells.cell import Outcomes, pack_bits
from nonxfer_bench.core.params import unbounded
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.encoders import ENCODERS
from tests.helpers import write_yaml
from tests.hostile.conftest import REPO, error_line, refused, run_cli

TINY_MODEL = {
    "arch": "resnet18",
    "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
    "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
}


def tiny_suite(folder: Path, **overrides: Any) -> Path:
    """A digits suite of two random-weight ResNets on 8x8 inputs (nothing to train), the public images from the
    train split; keys in ``overrides`` replace the defaults."""
    suite = {
        "name": "tiny",
        "dataset": {"name": "digits", "limit": 12},
        "public": {"name": "digits", "params": {"split": "train"}, "limit": 12},
        "zoo": [{"name": "a", **TINY_MODEL}, {"name": "b", **TINY_MODEL, "seed": 1}],
        "authorized": ["a"],
        "encoders": [{"name": "gaussian", "strengths": [20.0]}],
        "attacks": [{"name": "identity"}],
        "batch_size": 6,
        "bounds": False,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results")},
        "tracking": {"enabled": False},
    }
    suite.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    return write_yaml(folder / "suite.yaml", suite)


# property: every numeric parameter of every registered component, at every absurd value

ABSURD = (1e300, -1e300, math.nan, math.inf, 10**18)
SEED_RANGE = 2**63  # a seed only keys a generator: any 63-bit one is valid, 10**18 too
REGISTRIES = {"dataset": DATASETS, "encoders": ENCODERS, "attacks": ATTACKS}
# what a component needs to validate at all (its required parameters)
NEEDED = {
    ("attacks", "identify"): {"candidates": ["b"]},
    ("attacks", "surrogate_projection"): {"candidates": ["b"]},
    ("attacks", "diffusers_vae"): {"source": "vae-folder"},
    ("attacks", "img2img"): {"source": "sd-folder"},
    ("attacks", "learned_inverse"): {"pairs": "leaked"},
    ("attacks", "tuned"): {"attack": "blur", "space": {"max_sigma": [1.0]}},
    ("dataset", "imagenet_val"): {"solution": "LOC_val_solution.csv"},
    ("encoders", "stored_release"): {"release": "release", "originals": "photos", "manifest_sha256": "0" * 64},
}


def numeric_values(annotation: Any, default: Any, value: Any) -> Iterator[tuple[str, Any]]:
    """(key path below the field, the field's value) for each numeric place in a field of type ``annotation``, with
    ``value`` put there: a number itself, every item of a tuple or list, a dict's entry, a nested model's field."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in (int, float):
        yield "", value
    elif origin is Annotated:
        yield from numeric_values(args[0], default, value)
    elif origin in (Union, types.UnionType):
        seen = set()
        for arg in args:
            for sub, built in numeric_values(arg, default, value):
                if sub not in seen:
                    seen.add(sub)
                    yield sub, built
    elif origin is tuple:
        items = [a for a in args if a is not Ellipsis]
        for sub, built in numeric_values(items[0], None, value):
            yield f"[0]{sub}", [built] * (1 if Ellipsis in args else len(items))
    elif origin is list:
        for sub, built in numeric_values(args[0], None, value):
            yield f"[0]{sub}", [built]
    elif origin is dict:
        key = next(iter(default), "x") if isinstance(default, dict) else "x"
        for sub, built in numeric_values(args[1], None, value):
            yield f".{key}{sub}", {key: built}
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        base = default.model_dump(mode="json") if isinstance(default, BaseModel) else {}
        for name, field in annotation.model_fields.items():
            for sub, built in numeric_values(field.annotation, field.get_default(call_default_factory=True), value):
                yield f".{name}{sub}", {**base, name: built}


def numeric_parameters(key: str, name: str) -> list[tuple[str, Any]]:
    """(parameter path, field) of every numeric parameter of a registered component."""
    found = []
    for field_name, field in REGISTRIES[key].get(name).Params.model_fields.items():
        found += [
            (f"{field_name}{sub}", field)
            for sub, _ in numeric_values(field.annotation, field.get_default(call_default_factory=True), 0)
        ]
    return found


def test_every_numeric_parameter_declares_both_bounds():
    for key, registry in REGISTRIES.items():
        for name in registry.names():
            assert not unbounded(registry.get(name).Params), (
                f"{key} {name!r}: unbounded {unbounded(registry.get(name).Params)}"
            )


def test_every_component_validates_with_the_parameters_it_needs():
    """A component with a required parameter the property test does not know would go untested: name it here."""
    for key, registry in REGISTRIES.items():
        for name in registry.names():
            required = {f for f, field in registry.get(name).Params.model_fields.items() if field.is_required()}
            assert required <= set(NEEDED.get((key, name), {})), (
                f"{key} {name!r}: add its required parameters {required} to NEEDED"
            )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "name"), [(key, name) for key, registry in REGISTRIES.items() for name in registry.names()]
)
def test_every_absurd_numeric_parameter_is_one_line_at_load(tmp_path, cwd, key, name):
    where = {"dataset": "dataset", "encoders": "encoders[0]", "attacks": "attacks[0]"}[key]
    for parameter, field in numeric_parameters(key, name):
        field_name = parameter.split(".")[0].split("[")[0]
        for absurd in ABSURD:
            if field_name == "seed" and absurd == 10**18 < SEED_RANGE:
                continue
            [value] = [
                v
                for s, v in numeric_values(field.annotation, field.get_default(call_default_factory=True), absurd)
                if f"{field_name}{s}" == parameter
            ]
            spec = {"name": name, "params": {**NEEDED.get((key, name), {}), field_name: value}}
            overrides = {
                "dataset": {"dataset": spec},
                "encoders": {"encoders": [{**spec, "strengths": [20.0]}]},
                "attacks": {"attacks": [spec]},
            }[key]
            refused(
                "list",
                "models",
                tiny_suite(tmp_path, **overrides),
                cwd=cwd,
                expected=(f"'{where}.params.{field_name}",),
            )


# the campaign's cases, each refused at load with the key and what would be valid

CASES = {
    "finetune without public": (
        {"public": None, "attacks": [{"name": "finetune"}]},
        ("'attacks[0]'", "needs the suite's 'public' dataset"),
    ),
    "finetune on unlabelled public images": (
        {"public": {"name": "skimage_photos"}, "attacks": [{"name": "finetune"}]},
        ("'attacks[0]'", "labelled public images", "'skimage_photos'"),
    ),
    "augment_finetune without public": (
        {"public": None, "attacks": [{"name": "augment_finetune"}]},
        ("'attacks[0]'", "'public' dataset"),
    ),
    "unknown noise model": (
        {"attacks": [{"name": "augment_finetune", "params": {"noise_models": ["b", "resnet_typo"]}}]},
        ("'attacks[0].params.noise_models[1]'", "'resnet_typo' is not a model of the zoo; valid: a, b"),
    ),
    "unknown identify candidate": (
        {"attacks": [{"name": "identify", "params": {"candidates": ["a", "vit_z"]}}]},
        ("'attacks[0].params.candidates[1]'", "'vit_z'", "valid: a, b"),
    ),
    "unknown surrogate candidate": (
        {"attacks": [{"name": "surrogate_projection", "params": {"candidates": ["nobody"]}}]},
        ("'attacks[0].params.candidates[0]'", "'nobody'"),
    ),
    "unknown torchattacks model": (
        {"attacks": [{"name": "pgd", "params": {"model": "c"}}]},
        ("'attacks[0].params.model'", "'c' is not a model of the zoo"),
    ),
    "unknown geometry model": (
        {"attacks": [{"name": "patch_mean", "params": {"geometry_model": "c"}}]},
        ("'attacks[0].params.geometry_model'", "'c' is not a model"),
    ),
    "huge finetune lr": (
        {"attacks": [{"name": "finetune", "params": {"lr": 1e300}}]},
        ("'attacks[0].params.lr'", "less than or equal to 10"),
    ),
    "a billion finetune epochs": (
        {"attacks": [{"name": "finetune", "params": {"epochs": 1_000_000_000}}]},
        ("'attacks[0].params.epochs'", "10000"),
    ),
    "a billion PGD steps": (
        {"attacks": [{"name": "pgd", "params": {"kwargs": {"steps": 10**9}}}]},
        ("'attacks[0].params.kwargs'", "steps = 1000000000"),
    ),
    "huge PGD eps": (
        {"attacks": [{"name": "pgd", "params": {"scaled": {"eps": 1e300}}}]},
        ("'attacks[0].params.scaled.eps'", "less than or equal to 10000"),
    ),
    "operator k above the input dimension": (
        {"encoders": [{"name": "operator", "strengths": [20.0], "params": {"k": 65}}]},
        (
            "'encoders[0].params.k'",
            "65 is above the input dimension of the authorized model 'a' (1x8x8 = 64); at most 64",
        ),
    ),
    "image_folder crop_pct 1e-5": (
        {"dataset": {"name": "image_folder", "params": {"root": "images", "crop_pct": 1e-5}}, "public": None},
        ("'dataset.params.crop_pct'", "greater than or equal to 0.01"),
    ),
    "image_folder resized past 16384 pixels": (
        {
            "dataset": {"name": "image_folder", "params": {"root": "images", "size": 4096, "crop_pct": 0.2}},
            "public": None,
        },
        ("'dataset.params'", "20,480 pixels per side", "at most 16,384"),
    ),
    "autoencoder data of an unknown dataset": (
        {"attacks": [{"name": "autoencoder", "params": {"dataset": {"name": "digitz"}}}]},
        ("'attacks[0].params.dataset'", "unknown dataset 'digitz'"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_component_parameters_are_checked_against_the_suite_at_load(tmp_path, cwd, case):
    overrides, expected = CASES[case]
    refused(
        "list", "models", tiny_suite(tmp_path, **overrides), cwd=cwd, expected=expected
    )  # public: None is a suite without one


# attacker data that may share images with the evaluated ones (the attacker would be scored on what it trained on)


def image_folders(root: Path) -> Path:
    for name in ("val/cat", "val/dog", "train/cat"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "link").symlink_to(root / "val")
    return root


def folder(root: Path, name: str, **params: Any) -> dict:
    return {"name": "image_folder", "params": {"root": str(root / name), "channels": 1, **params}}


OVERLAPS = {
    "public on the evaluated split": ({"public": {"name": "digits", "params": {"split": "test"}}}, "(digits test)"),
    "public on all splits": ({"public": {"name": "digits", "params": {"split": "all"}}}, "(digits test and digits)"),
    "evaluated on all splits": (
        {"dataset": {"name": "digits", "params": {"split": "all"}}},
        "(digits and digits train)",
    ),
    "Fashion-MNIST's test split from another copy": (
        {
            "dataset": {"name": "fashion_mnist", "params": {"root": "copy1"}},
            "public": {"name": "fashion_mnist", "params": {"root": "copy2"}},
        },
        "(fashion_mnist test)",
    ),
    "the evaluated image folder": (
        lambda root: {"dataset": folder(root, "val"), "public": folder(root, "val", size=16)},
        "(folder ",
    ),
    "a class folder of the evaluated one": (
        lambda root: {"dataset": folder(root, "val"), "public": folder(root, "val/cat")},
        "/val and folder ",
    ),
    "a link to the evaluated folder": (
        lambda root: {"dataset": folder(root, "val"), "public": folder(root, "link")},
        "/val)",
    ),
    "ImageNet-val's images in foolbox": (
        {
            "dataset": {"name": "imagenet_val", "params": {"solution": "LOC_val_solution.csv"}},
            "public": {"name": "foolbox_imagenet"},
        },
        "(ilsvrc2012_val and ilsvrc2012_val foolbox)",
    ),
    "an autoencoder trained on the evaluated split": (
        {"attacks": [{"name": "autoencoder", "params": {"dataset": {"name": "digits", "params": {"split": "test"}}}}]},
        "keys 'dataset' and 'attacks[0].params.dataset'",
    ),
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_attacker_data_that_may_share_images_with_the_evaluated_ones_is_refused(tmp_path, cwd, case):
    overrides, expected = OVERLAPS[case]
    overrides = overrides(image_folders(tmp_path / "images")) if callable(overrides) else overrides
    line = refused(
        "list",
        "models",
        tiny_suite(tmp_path, **overrides),
        cwd=cwd,
        expected=(expected, "the attacker would hold images it is scored on"),
    )
    assert (
        "'all' holds every split" in line and "a folder holds those of every folder inside it" in line
    )  # the rule, in the error


def test_disjoint_attacker_data_loads(tmp_path, cwd):
    """Guard: the rule refuses overlap only (another split, a sibling folder, an autoencoder on the train split)."""
    root = image_folders(tmp_path / "images")
    for overrides in (
        {},
        {"dataset": {"name": "fashion_mnist"}, "public": {"name": "fashion_mnist", "params": {"split": "train"}}},
        {"dataset": folder(root, "val"), "public": folder(root, "train")},
        {"attacks": [{"name": "autoencoder", "params": {"dataset": {"name": "digits", "params": {"split": "train"}}}}]},
    ):
        outcome = run_cli("list", "models", tiny_suite(tmp_path, **overrides), cwd=cwd)
        assert outcome.code == 0, (overrides, outcome.err)


@pytest.mark.parametrize("suite", sorted(p.name for p in (REPO / "suites").glob("*.yaml")))
def test_every_committed_suite_still_loads(cwd, suite):
    """Guard: the checks at load refuse none of the committed suites."""
    outcome = run_cli("list", "models", REPO / "suites" / suite, cwd=cwd)
    assert outcome.code == 0, outcome.err


def test_a_store_line_claiming_a_trillion_images_is_not_a_cell(tmp_path, cwd):
    """Its packed bits hold 12 images; unpacking 10**12 allocated a terabyte (a MemoryError under the limits)."""
    suite = tiny_suite(tmp_path)
    assert run_cli("run", suite, cwd=cwd).code == 0
    store = tmp_path / "runs" / "tiny" / "cells.jsonl"
    lines = store.read_text().splitlines()
    record = json.loads(lines[0])
    record["outcomes"]["images"] = 10**12
    store.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    before = store.read_bytes()
    outcome = run_cli("leaderboard", suite, cwd=cwd, isolate=True)
    error_line(
        outcome, f"{store}: line 1 is not a finished cell", "'outcomes.images'", "less than or equal to 1000000000"
    )
    assert store.read_bytes() == before


@pytest.mark.parametrize("images", [25, 10**9])
def test_outcomes_whose_bits_hold_another_count_of_images_are_refused(images):
    """Within the bound, a count the packed bits do not hold is refused from the string lengths (nothing unpacked)."""
    bits = pack_bits(np.ones(12, dtype=bool))  # 12 images
    with pytest.raises(
        ValidationError, match=rf"'correct\[0\]' holds 4 base64 characters, {images:,} images pack into"
    ):
        Outcomes(images=images, ids="x", correct=[bits], agree=[bits])
    with pytest.raises(ValidationError, match="1 draws of 'correct' but 2 of 'agree'"):
        Outcomes(images=12, ids="x", correct=[bits], agree=[bits, bits])
    assert Outcomes(images=12, ids="x", correct=[bits], agree=[bits]).correct_bits().all()
