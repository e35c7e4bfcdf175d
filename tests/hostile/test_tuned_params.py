"""Hostile parameters of the ``tuned`` attack: each is one line at load naming the key and what would be valid, before
any work; a suite whose evaluated images have no labels (nothing to score a trial on) is one line naming the entry."""

from __future__ import annotations

import pytest

from tests.hostile.conftest import refused
from tests.hostile.test_component_params import tiny_suite

BLUR = {"attack": "blur", "space": {"max_sigma": [1.0, 2.0]}}

CASES = {
    "unknown attack": (
        {"attack": "blurr", "space": {"max_sigma": [1.0]}},
        ("'attacks[0].params.attack'", "unknown attack 'blurr'", "valid: ", "jpeg_pil"),
    ),
    "no attack to search": (
        {"attack": "identity", "space": {"x": [1]}},
        ("'attacks[0].params.attack'", "'identity'", "valid: "),
    ),
    "a search of a search": ({"attack": "tuned", "space": {"trials": [1]}}, ("'attacks[0].params.attack'", "'tuned'")),
    "unknown parameter in space": (
        {"attack": "blur", "space": {"sigma": [1.0]}},
        ("'attacks[0].params.space'", "'sigma' is not a setting of attack 'blur'", "valid: max_sigma"),
    ),
    "unknown fixed parameter": (
        {**BLUR, "params": {"sigmaa": 1}},
        ("'attacks[0].params.params'", "blur parameter 'sigmaa'", "valid keys here: max_sigma"),
    ),
    "low above high": (
        {"attack": "blur", "space": {"max_sigma": {"low": 3.0, "high": 1.0}}},
        ("'attacks[0].params.space.max_sigma'", "low 3 is above high 1"),
    ),
    "an end outside the parameter's bounds": (
        {"attack": "blur", "space": {"max_sigma": {"low": 0.5, "high": 500}}},
        ("'attacks[0].params.space'", "'max_sigma' = 500", "less than or equal to 100"),
    ),
    "log from zero": (
        {"attack": "blur", "space": {"max_sigma": {"low": 0, "high": 1, "log": True}}},
        ("'attacks[0].params.space.max_sigma'", "log needs low > 0"),
    ),
    "a fractional integer range": (
        {"attack": "jpeg_pil", "space": {"min_quality": {"low": 5.5, "high": 40, "int": True}}},
        ("'attacks[0].params.space.min_quality'", "int needs integer"),
    ),
    "draws searched": (
        {"attack": "diffusion", "space": {"draws": [1, 2]}},
        ("'attacks[0].params.space'", "'draws'", "fixed per step"),
    ),
    "zero trials": ({**BLUR, "trials": 0}, ("'attacks[0].params.trials'", "greater than or equal to 1")),
    "a billion trials": ({**BLUR, "trials": 10**9}, ("'attacks[0].params.trials'", "less than or equal to 64")),
    "a thousand listed values": (
        {"attack": "blur", "space": {"max_sigma": [1.0] * 1000}},
        ("'attacks[0].params.space'", "lists 1000 values; give 1 to 64"),
    ),
    "an empty space": ({"attack": "blur", "space": {}}, ("'attacks[0].params.space'", "at least 1 item")),
    "a setting that changes the tier": (
        {"attack": "learned_inverse", "params": {"pairs": "leaked"}, "space": {"pairs": ["leaked", "architecture"]}},
        ("'attacks[0].params.space'", "'pairs' = 'architecture'", "a step keeps one threat model"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_tuned_parameters_are_one_line_at_load(tmp_path, cwd, case):
    params, expected = CASES[case]
    refused(
        "list",
        "models",
        tiny_suite(tmp_path, attacks=[{"name": "tuned", "params": params}]),
        cwd=cwd,
        expected=expected,
    )


def test_a_search_of_an_attack_that_needs_public_images_is_refused_without_them(tmp_path, cwd):
    params = {
        "attack": "finetune",
        "params": {"labelled": 4, "epochs": 1},
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    suite = tiny_suite(tmp_path, public=None, attacks=[{"name": "tuned", "params": params}])
    refused("list", "models", suite, cwd=cwd, expected=("'attacks[0]'", "needs the suite's 'public' dataset"))


@pytest.mark.slow
def test_unlabelled_evaluated_images_leave_no_trial_to_score_and_say_so(tmp_path, cwd):
    suite = tiny_suite(
        tmp_path,
        dataset={"name": "skimage_photos"},
        public=None,
        attacks=[{"name": "identity"}, {"name": "tuned", "strengths": [1.0], "params": BLUR}],
    )
    refused("run", suite, cwd=cwd, isolate=True, expected=("attacks[1] (tuned)", "no labelled tuning images"))
