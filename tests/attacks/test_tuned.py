"""``tuned``: a search over another attack's settings on the verdict's tuning images, through the runner on the digits
zoo.

The suite runs, beside the tuned steps, ``blur`` at every point of a grid of ``max_sigma``: the verdict's own split of
those cells' per-image outcomes (``_Images``) is the brute force the search must match, trial by trial.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from nonxfer_bench.analysis.frame import STEP, results_frame, unauthorized_models
from nonxfer_bench.analysis.verdict import _Images, verdicts
from nonxfer_bench.attacks.testing import make
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.schema.protocol import VerdictSpec
from tests.helpers import digits_suite

GRID = [0.25, 0.5, 1.0, 1.5, 2.5]
SPEC = VerdictSpec(tuning=0.3, seed=7)  # not the defaults: the runner must hand the attack the protocol's split
CHOICES = {"attack": "blur", "space": {"max_sigma": GRID}, "trials": 8}  # the grid, enumerated once
RANGE = {"attack": "blur", "space": {"max_sigma": {"low": 0.2, "high": 3.0, "log": True}}, "trials": 12, "seed": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_zoo):
    """The suite's cells and the verdict's view of its release: 100 digits, the patch encoder at 10 dB (blur helps
    most near sigma 0.75 there), a protocol whose verdict tunes on a seeded 30%."""
    folder = tmp_path_factory.mktemp("tuned")
    protocol = folder / "protocol.yaml"
    tiers = {"none": [{"name": "identity"}]}
    protocol.write_text(
        yaml.safe_dump({"name": "p-tuned", "version": 1, "full": tiers, "fast": tiers, "verdict": SPEC.model_dump()})
    )
    attacks = [{"name": "identity"}, *({"name": "blur", "strengths": [1.0], "params": {"max_sigma": s}} for s in GRID)]
    attacks += [{"name": "tuned", "strengths": [1.0], "params": params} for params in (CHOICES, RANGE)]
    suite = load_suite(
        digits_suite(
            folder,
            digits_zoo,
            dataset={"name": "digits", "limit": 100},
            encoders=[{"name": "patch", "strengths": [10.0]}],
            attacks=attacks,
            protocol={"file": str(protocol), "ensemble": "fast"},
            bounds=False,
        )
    )
    cells = Runner(suite).run().cells
    frame = results_frame(cells)
    release = frame[frame.encoder != "clean"]
    images = _Images(release[release.model.isin(["vit_a", *unauthorized_models(release)])], "accuracy", SPEC)
    return suite, cells, release, images


def tuning_accuracy(release, images, text: str) -> float:
    """The mean unauthorized accuracy of the step with settings ``text`` on the verdict's tuning images."""
    step = next(s for s in release[STEP] if s.text == text)
    return float(np.mean([images.flags(step, model)[images.tuning].mean() for model in unauthorized_models(release)]))


def blur(sigma: float) -> str:
    return f"sigma={sigma}"


def tuned_cell(cells, params: dict):
    """The released images' cell of the unauthorized model ``vit_b`` for the tuned entry with ``params``."""
    return next(
        c
        for c in cells
        if c.attack == "tuned"
        and c.encoder != "clean"
        and c.attack_config["trials"] == params["trials"]
        and c.model == "vit_b"
    )


def trace(cell) -> list[tuple[float, float]]:
    """(max_sigma, tuning accuracy) of every trial, from the cell."""
    return [
        (float(setting.split("=")[1]), float(value))
        for setting, value in (item.rsplit(":", 1) for item in cell.attack_measured["trace"].split("; "))
    ]


def test_the_search_scores_each_trial_as_the_verdict_scores_that_setting_on_its_tuning_images(run):
    """Each listed value is tried once, and the accuracy the search found for it is the one the verdict's own tuning
    images give the blur cells of that value: the attack tuned on exactly the verdict's tuning images (the protocol's
    share and seed, the same images in the same order); a drift in either split breaks the equality."""
    _, cells, release, images = run
    grid = {sigma: tuning_accuracy(release, images, blur(sigma)) for sigma in GRID}
    assert len(set(grid.values())) > 2, grid  # the grid's points differ: a search has something to choose
    cell = tuned_cell(cells, CHOICES)
    found = dict(trace(cell))
    assert len(trace(cell)) == len(found) == len(GRID)  # each value once
    assert found == pytest.approx(grid, abs=1e-4)  # the trace keeps 4 decimals; a step of one image is 1/60 here
    assert cell.attack_measured["tuning_accuracy"] == pytest.approx(max(grid.values()), abs=1e-4)
    assert cell.attack_measured["tuned"] == f"max_sigma={min(s for s in GRID if grid[s] == max(grid.values())):.4g}"
    assert cell.attack_measured["tuning_images"] == len(images.tuning) == round(SPEC.tuning * 100)


def test_a_range_search_is_at_least_as_strong_on_the_tuning_images_as_every_grid_point(run):
    _, cells, release, images = run
    grid = [tuning_accuracy(release, images, blur(sigma)) for sigma in GRID]
    cell = tuned_cell(cells, RANGE)
    found = trace(cell)
    assert len(found) == RANGE["trials"] and all(0.2 <= sigma <= 3.0 for sigma, _ in found)
    best = cell.attack_measured["tuning_accuracy"]
    assert best == pytest.approx(max(value for _, value in found), abs=1e-4)
    assert best >= max(grid) - 1e-4
    # the step's cells score the chosen setting on the tuning images as the search did
    assert tuning_accuracy(release, images, "search=blur:max_sigma trials=12") == pytest.approx(
        cell.attack_measured["tuning_accuracy"], abs=1e-4
    )


def test_the_verdict_reports_the_tuned_step_on_the_report_images_only(run, tmp_path):
    suite, cells, release, images = run
    without_grid = [
        c for c in cells if c.attack != "blur" and c.model != "res"
    ]  # vit_b: the unauthorized model that blur helps
    [verdict] = verdicts(results_frame(without_grid), SPEC)
    tier = verdict.headline
    assert tier.step.attack == "tuned" and verdict.n == len(images.report) and verdict.tuning == len(images.tuning)
    flags = images.flags(tier.step, tier.model)
    assert tier.best.estimate == pytest.approx(flags[images.report].mean())
    assert flags[images.report].mean() != pytest.approx(flags.mean())  # on every image it would read otherwise
    # the trace is in the cells the leaderboard reads, and the leaderboard takes it
    board = write_leaderboard(suite.name, cells, [m.name for m in suite.models], tmp_path)[0].read_text()
    assert "search=blur:max_sigma trials=8" in board
    assert "trace=max_sigma=" in (tmp_path / "cells.csv").read_text()


def test_a_seed_gives_one_search_and_another_seed_another():
    first, again, other = (make("tuned", {**RANGE, "trials": 6, "seed": seed}) for seed in (3, 3, 4))
    found = [attack.measured(1.0)["trace"] for attack in (first, again, other)]
    assert found[0] == found[1] != found[2]
