"""A fitted attack sees exactly its ``released`` budget of the group's first NEs, whatever the batch size (#15)."""

from __future__ import annotations

import pytest
import torch

from nonxfer_bench.attacks.subspace_estimation import SubspaceImage
from nonxfer_bench.execution.runner import Runner
from tests.execution.small import small_suite


def fitted_run(folder, monkeypatch, released: int, batch_size: int) -> tuple[list[torch.Tensor], dict]:
    """Run a clean-release suite with ``subspace_image`` at a ``released`` budget; returns what each fit saw and the
    attack's cells by model."""
    seen: list[torch.Tensor] = []
    fit = SubspaceImage.fit

    def spy(self, context):
        seen.append(context.released.clone())
        fit(self, context)

    monkeypatch.setattr(SubspaceImage, "fit", spy)
    attacks = [
        {"name": "identity"},
        {"name": "subspace_image", "strengths": [1.0], "params": {"released": released, "max_dims": 8}},
    ]
    cells = Runner(small_suite(folder, attacks=attacks, batch_size=batch_size)).run().cells
    return seen, {cell.model: cell for cell in cells if cell.attack == "subspace_image"}


def test_a_budget_above_the_batch_size_is_fitted_on_that_many_released_nes(tmp_path, monkeypatch):
    seen, cells = fitted_run(tmp_path / "small-batches", monkeypatch, released=25, batch_size=10)
    assert [len(images) for images in seen] == [25]
    assert {cell.budget_released for cell in cells.values()} == {25}


def test_the_fit_and_the_cells_do_not_depend_on_the_batch_size(tmp_path, monkeypatch):
    small, small_cells = fitted_run(tmp_path / "small-batches", monkeypatch, released=25, batch_size=10)
    large, large_cells = fitted_run(tmp_path / "one-batch", monkeypatch, released=25, batch_size=40)
    assert torch.equal(small[0], large[0])  # the clean release does not depend on the batching
    for model, cell in small_cells.items():
        assert (cell.accuracy, cell.outcomes, cell.budget_released) == (
            large_cells[model].accuracy,
            large_cells[model].outcomes,
            25,
        )


@pytest.mark.parametrize("batch_size", [10, 40])
def test_a_budget_above_the_group_is_clamped_to_its_images_and_the_cells_say_so(tmp_path, monkeypatch, batch_size):
    seen, cells = fitted_run(tmp_path, monkeypatch, released=100, batch_size=batch_size)
    assert [len(images) for images in seen] == [40]
    assert {cell.budget_released for cell in cells.values()} == {40}
    assert (
        "subspace_image asks for 100 released NEs, the group has 40: it fits on 40"
        in (tmp_path / "runs" / "small" / "run.log").read_text()
    )


def test_an_attack_without_a_budget_still_fits_on_the_first_batch(tmp_path, monkeypatch):
    """What committed suites did: unbudgeted attacks keep their sample even when another attack's budget spans
    batches."""
    seen: list[int] = []
    fit = SubspaceImage.fit
    monkeypatch.setattr(
        SubspaceImage, "fit", lambda self, context: (seen.append(len(context.released)), fit(self, context))
    )
    attacks = [
        {"name": "identity"},
        {"name": "subspace_image", "strengths": [1.0], "params": {"max_dims": 8}},
        {"name": "subspace_image", "strengths": [1.0], "params": {"released": 25, "max_dims": 8}},
    ]
    Runner(small_suite(tmp_path, attacks=attacks, batch_size=10)).run()
    assert sorted(seen) == [10, 25]
