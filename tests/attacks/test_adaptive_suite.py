"""Informed attacks through the runner: fitted once per encoding group on the suite's public images."""

from __future__ import annotations

import yaml

from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.rendering.leaderboard import write_leaderboard

PRE = {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]}
VIT = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 12, "depth": 1, "num_heads": 2, "num_classes": 10}


def test_fitted_attacks_run_in_a_suite_and_the_leaderboard_names_the_strongest(tmp_path):
    suite = {
        "name": "adaptive",
        "dataset": {"name": "digits", "limit": 60},
        "public": {"name": "digits", "params": {"split": "train"}, "limit": 80},
        "zoo": [
            {"name": name, "arch": "vit_tiny_patch16_224", "kwargs": VIT, "preprocess": PRE, "seed": seed}
            for name, seed in (("a", 0), ("b", 1))
        ],
        "authorized": ["a"],
        "encoders": [{"name": "reference", "strengths": [10.0]}],
        "attacks": [
            {"name": "identity"},
            {"name": "oracle_projection", "strengths": [1.0]},
            {"name": "surrogate_projection", "strengths": [1.0], "params": {"candidates": ["a", "b"]}},
            {"name": "patch_wiener", "strengths": [1.0]},
            {"name": "pgd", "strengths": [1.0]},
        ],
        "batch_size": 30,
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    loaded = load_suite(path)
    result = Runner(loaded).run()
    assert (
        len(result.cells) == (5 + 1) * 2
    )  # (reference x the 5 attack steps + clean x the no-attack step only) x models
    by = {(c.encoder, c.attack, c.model): c for c in result.cells}
    assert by[("reference", "surrogate_projection", "b")].attack_measured["chosen"] == "a"
    assert by[("reference", "oracle_projection", "b")].attack_param["k"] == 4
    # the oracle and the identified surrogate remove the reference noise: the attacked images are much closer to clean
    assert (
        by[("reference", "oracle_projection", "b")].attacked_psnr
        > by[("reference", "identity", "b")].attacked_psnr + 10
    )
    md = write_leaderboard(loaded.name, result.cells, ["a", "b"], loaded.results_dir())[0]
    assert "strongest attack" in md.read_text()
