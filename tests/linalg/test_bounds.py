"""Bound tightness (nonxfer_bench/linalg/bounds.py): the formulas on constructed layers, zoo pairs and in the runner."""

import json

import pytest
import torch

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.linalg.bounds import encoder_subspace, group_bounds, hoffman_wielandt, misalignment
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model
from tests.helpers import digits_suite


def tiny_vit(std: float = 0.5, patch: int = 2, embed: int = 4, seed: int = 0):
    """A random 8x8 one-channel ViT whose patch embedding is m x D = embed x patch^2 (non-overlapping stem)."""
    spec = ModelSpec.model_validate(
        {
            "name": "tiny",
            "arch": "vit_tiny_patch16_224",
            "kwargs": {
                "img_size": 8,
                "patch_size": patch,
                "in_chans": 1,
                "embed_dim": embed,
                "depth": 1,
                "num_heads": 1,
                "num_classes": 3,
            },
            "preprocess": {"input_size": [1, 8, 8], "mean": [0.5], "std": [std]},
            "seed": seed,
        }
    )
    return build_model(spec)


def test_k1_prediction_equals_observation_on_a_constructed_layer():
    torch.manual_seed(0)
    model = tiny_vit()
    u, _ = torch.linalg.qr(torch.randn(4, 4))
    v, _ = torch.linalg.qr(torch.randn(4, 4))
    weight = u @ torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.25])) @ v.T  # D = m = 4, no singular value <= tau: k = 1
    with torch.no_grad():
        model.first_conv.weight.copy_(weight.view(4, 1, 2, 2))
    clean = torch.rand(6, 1, 8, 8)
    for encoder, strength in (("patch", 20.0), ("reference", 30.0)):
        encoder = ENCODERS.create(encoder, {})
        encoding = encoder.encode(clean, model, strength, torch.Generator().manual_seed(1))
        common, per_model = group_bounds(model, encoder, clean, encoding, {"tiny": model})
        assert common["bound/k"] == 1 and common["bound/sigma_s"] > 0
        # noise along the smallest singular vector: ||W d_l|| = sigma_S ||d_l|| for every patch, and in mean square
        assert common["bound/auth_layer_ratio_median"] == pytest.approx(1.0, rel=1e-4)
        assert common["bound/auth_layer_ratio_p95"] == pytest.approx(1.0, rel=1e-4)
        assert common["bound/auth_layer_ms_ratio"] == pytest.approx(1.0, rel=1e-4)
        assert common["bound/lipschitz_estimate"] > 0
        # the same layer as "unauthorized": E||W' d||^2 = c^2 ||W' B||_F^2 is exact for k = 1
        row = per_model["tiny"]
        assert row["bound/unauth_layer_pred"] == pytest.approx(row["bound/unauth_layer_obs_patch"], rel=1e-3)
        assert row["bound/hw_lhs"] == 0.0


def test_hoffman_wielandt_holds_on_random_pairs():
    generator = torch.Generator().manual_seed(0)
    for m, d in ((4, 9), (16, 16), (32, 49), (64, 27)):
        for _ in range(5):
            a = torch.randn(m, d, generator=generator, dtype=torch.float64)
            b = a + torch.randn(m, d, generator=generator, dtype=torch.float64) * torch.rand(
                1, generator=generator, dtype=torch.float64
            )
            lhs, rhs, ratio = hoffman_wielandt(a, b)
            assert lhs <= rhs * (1 + 1e-12) and 0 <= ratio <= 1 + 1e-12


def test_hoffman_wielandt_holds_on_zoo_pairs(digits_zoo):
    from nonxfer_bench.loading import load_zoo

    specs = {spec.name: spec for spec in load_zoo(digits_zoo).models}
    a, b = (build_model(specs[name]).pixel_weight() for name in ("vit_a", "vit_b"))
    lhs, rhs, ratio = hoffman_wielandt(a, b)
    assert 0 < lhs <= rhs and ratio <= 1


@pytest.mark.parametrize("encoder", ["patch", "reference"])
def test_misalignment_is_zero_for_the_same_model_and_invariant_to_pixel_rescaling(encoder):
    torch.manual_seed(0)
    authorized = tiny_vit(patch=4, embed=6)  # 6 x 16: an exact 10-dimensional null space
    other = tiny_vit(patch=4, embed=6, seed=1)
    encoder = ENCODERS.create(encoder, {})
    basis = encoder_subspace(authorized, encoder)[0].pixel_basis
    assert misalignment(authorized.pixel_weight(), basis) < 1e-6
    before = misalignment(other.pixel_weight(), basis)
    assert before > 0.1
    # scale the unauthorized model's std and first layer together: the raw-pixel layer W / std is unchanged
    with torch.no_grad():
        other.std.mul_(3.0)
        other.first_conv.weight.mul_(3.0)
    assert misalignment(other.pixel_weight(), basis) == pytest.approx(before, rel=1e-9)
    # and the same for the authorized one: its pixel-space subspace does not move
    with torch.no_grad():
        authorized.std.mul_(0.5)
        authorized.first_conv.weight.mul_(0.5)
    rescaled = encoder_subspace(authorized, ENCODERS.create(encoder.name, {}))[
        0
    ].pixel_basis  # a fresh encoder: new weights
    assert misalignment(other.pixel_weight(), rescaled) == pytest.approx(before, rel=1e-6)


def test_the_runner_puts_bound_numbers_into_identity_cells(tmp_path, digits_zoo):
    from nonxfer_bench.cli import main

    path = digits_suite(
        tmp_path,
        digits_zoo,
        attacks=[{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
        encoders=[{"name": "patch", "strengths": [10.0]}],
        dataset={"name": "digits", "limit": 60},
    )
    assert main(["run", str(path)]) == 0
    cells = [
        Cell.from_record(json.loads(line))
        for line in (tmp_path / "runs" / "digits" / "cells.jsonl").read_text().splitlines()
    ]
    identity = {c.model: c for c in cells if c.baseline and c.encoder == "patch"}
    assert set(identity) == {"vit_a", "vit_b", "res"}
    assert all(not c.bounds for c in cells if not c.baseline)
    auth = identity["vit_a"]
    assert "bound/error" not in auth.bounds
    assert (
        auth.bounds["bound/exact_null"]
        and auth.bounds["bound/sigma_s"] == 0.0
        and auth.bounds["bound/auth_layer_ratio_median"] is None
    )
    assert auth.bounds["bound/auth_layer_rel_median"] < 1e-4  # exact null space: only float residue reaches the layer
    assert auth.bounds["bound/misalignment"] < 1e-5 and auth.bounds["bound/lipschitz_estimate"] > 0
    assert identity["vit_b"].bounds["bound/misalignment"] > 0.05 and identity["vit_b"].bounds["bound/hw_ratio"] <= 1
    assert identity["vit_b"].bounds["bound/unauth_layer_pred"] > 0
    assert identity["res"].bounds["bound/misalignment"] is None and "bound/misalignment_na" in identity["res"].bounds
    board = (tmp_path / "results" / "digits" / "leaderboard.md").read_text()
    assert "## Theory" in board
    assert (tmp_path / "results" / "digits" / "theory_misalignment_vs_drop.png").is_file()


def test_the_theory_table_marks_ratios_that_are_one_by_construction():
    from nonxfer_bench.rendering.theory import theory_markdown

    base = {
        "baseline": True,
        "authorized": "a",
        "model": "a",
        "encoder": "reference",
        "strength": 20.0,
        "role": "authorized",
    }
    exact = base | {"bound/k": 1, "bound/auth_layer_ratio_median": 1.0, "bound/auth_layer_ratio_p95": 1.0}
    straddling = base | {
        "encoder": "patch",
        "bound/k": 1,
        "bound/auth_layer_ratio_median": 6.68,
        "bound/auth_layer_ratio_p95": 7.67,
    }
    several = base | {
        "encoder": "operator",
        "bound/k": 4,
        "bound/auth_layer_ratio_median": 1.0,
        "bound/auth_layer_ratio_p95": 1.0,
    }
    rows = {
        line.split(" | ")[1]: line
        for line in theory_markdown([exact, straddling, several]).splitlines()
        if line.startswith("| a |")
    }
    assert "| 1 † | 1 † |" in rows["reference 20"]
    assert "†" not in rows["patch 20"] and "†" not in rows["operator 20"]


def test_rank_correlation_tests_each_predictor_of_the_drop_with_a_bootstrap_interval():
    from nonxfer_bench.analysis.theory import rank_correlation
    from nonxfer_bench.rendering.theory import predictors_markdown

    def baseline(model, encoder, accuracy, **bounds):
        role = "authorized" if model == "a" else "unauthorized"
        return {
            "baseline": True,
            "authorized": "a",
            "model": model,
            "encoder": encoder,
            "strength": 10.0 if encoder != "clean" else 0.0,
            "role": role,
            "accuracy": accuracy,
        } | {f"bound/{k}": v for k, v in bounds.items()}

    models = [f"m{i}" for i in range(6)]
    cells = [baseline(m, "clean", 0.9) for m in ["a", *models]]
    cells += [
        baseline(
            m, "patch", 0.9 - 0.1 * i, misalignment=0.1 * i + 0.05, hw_lhs=(1.0 if i % 2 else 2.0) if i < 4 else None
        )
        for i, m in enumerate(models)
    ]
    [misalignment] = rank_correlation(cells, "bound/misalignment")
    assert (misalignment["rho"], misalignment["n"]) == (1.0, 6) and misalignment["p"] < 0.01
    assert misalignment["interval"][0] <= 1.0 <= misalignment["interval"][1] + 1e-12
    [spectral] = rank_correlation(cells, "bound/hw_lhs")
    assert spectral["n"] == 4 and spectral["rho"] < 1.0  # only the models with a same-shape first layer
    table = predictors_markdown(cells)
    assert "| a | patch 10 | misalignment | 1 [" in table and "| a | patch 10 | hw_lhs |" in table
    assert rank_correlation(cells[:7] + cells[7:9], "bound/misalignment")[0]["rho"] is None  # two models: undefined
