"""Defect class 'unchecked component errors': whatever an encoder or an attack raises mid-run is one line naming its
suite entry (``suite.yaml: attacks[1] (raising): ValueError: ...``) with exit code 2, and every group finished before it
stays in the store, so a rerun resumes. Also the BatchNorm case that raised it on real attacks: an adaptation on one
image (``bn_adapt`` with a budget of one NE, ``finetune`` whose last batch holds one image)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.encoders import ENCODERS, Encoder, Encoding
from tests.helpers import write_yaml
from tests.hostile.conftest import error_line, run_cli
from tests.hostile.test_component_params import TINY_MODEL

# plan order: the clean group (first), then gaussian@20 and gaussian@30. The clean images face only the no-attack step,
# so an
# attack sees the two releases: one that fails in the second group it sees fails at gaussian@30, and leaves the clean
# group's and gaussian@20's cells behind
SUITE = {
    "name": "faulty",
    "dataset": {"name": "digits", "limit": 12},
    "zoo": [{"name": "a", **TINY_MODEL}, {"name": "b", **TINY_MODEL, "seed": 1}],
    "authorized": ["a"],
    "encoders": [{"name": "gaussian", "strengths": [20.0, 30.0]}],
    "attacks": [{"name": "identity"}, {"name": "raising", "strengths": [0.5]}],
    "batch_size": 6,
    "bounds": False,
    "tracking": {"enabled": False},
}
CELLS_PER_GROUP = 2 * 2  # a release: (identity, raising) x models (a, b)
CLEAN_CELLS = 1 * 2  # the clean images: identity x models
ERRORS = (
    ValueError,
    RuntimeError,
    TypeError,
    KeyError,
    IndexError,
    ZeroDivisionError,
    AssertionError,
    NotImplementedError,
    OSError,
)


class Raising(Attack):
    """Returns the images; raises ``error`` from ``where`` (fit, forward, parameter) from its ``after``-th group on."""

    threat = ThreatModel(tier=Tier.NONE, text="test only: raises")
    error: ClassVar[BaseException | None] = None
    where: ClassVar[str] = "fit"
    after: ClassVar[int] = 2

    def __init__(self, params) -> None:
        super().__init__(params)
        self.groups = 0

    def _maybe(self, where: str) -> None:
        if self.error is not None and where == self.where and self.groups >= self.after:
            raise self.error

    def fit(self, context) -> None:
        self.groups += 1
        self._maybe("fit")

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        self._maybe("forward")
        return images.clone()

    def parameter(self, strength: float) -> dict:
        self._maybe("parameter")
        return {}


class RaisingEncoder(Encoder):
    """White noise; raises ``error`` when encoding at strength ``at``."""

    error: ClassVar[BaseException | None] = None
    at: ClassVar[float] = 30.0

    def encode(self, images: torch.Tensor, model, strength: float, generator: torch.Generator) -> Encoding:
        if self.error is not None and strength == self.at:
            raise self.error
        noisy = images + 0.01 * torch.randn(images.shape, generator=generator)
        return Encoding(images=noisy, achieved_psnr=torch.full((len(images),), 40.0))


@pytest.fixture
def registered(monkeypatch):
    """The test-only attack 'raising' and encoder 'raising_encoder', registered for this test only."""
    for registry, name, cls in ((ATTACKS, "raising", Raising), (ENCODERS, "raising_encoder", RaisingEncoder)):
        registry.names()  # built-ins and plugins loaded before the copy
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))
        registry.register(name)(cls)
    monkeypatch.setattr(Raising, "error", None)
    monkeypatch.setattr(RaisingEncoder, "error", None)


def stored(folder: Path) -> int:
    store = folder / "runs" / "faulty" / "cells.jsonl"
    return len(CellStore(store, writable=False).cells) if store.exists() else 0


def run_faulty(folder: Path, suite: dict) -> tuple[object, Path]:
    path = write_yaml(
        folder / "suite.yaml", {**suite, "output": {"dir": str(folder / "runs"), "results": str(folder / "results")}}
    )
    return run_cli("run", path, cwd=folder / "cwd"), path


messages = st.text(max_size=200) | st.sampled_from(
    ["", "\n", "line one\nline two\r\n", "\x1b[2J\x1b[31mred\x1b[0m", "a\u2028b\x85c\x0bd", "\x00\x07"]
)
FAULTS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FAULTS
@given(kind=st.sampled_from(ERRORS), message=messages, where=st.sampled_from(["fit", "forward", "parameter", "encode"]))
def test_a_component_error_mid_run_is_one_line_naming_the_entry_and_keeps_finished_groups(
    registered, tmp_path_factory, kind, message, where
):
    assume("Traceback" not in message)
    folder = tmp_path_factory.mktemp("faulty")
    suite = copy.deepcopy(SUITE)
    if where == "encode":
        suite["encoders"] = [{"name": "raising_encoder", "strengths": [20.0, 30.0]}]
        suite["attacks"] = [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}]
        RaisingEncoder.error, entry = kind(message), "encoders[0] (raising_encoder)"
    else:
        Raising.error, Raising.where, entry = kind(message), where, "attacks[1] (raising)"
    outcome, path = run_faulty(folder, suite)
    line = error_line(outcome, f"{path}: {entry}: {kind.__name__}", "run the same command again to resume")
    assert "\x1b" not in line and "\x00" not in line
    assert (
        stored(folder) == CLEAN_CELLS + CELLS_PER_GROUP
    )  # the groups before the failing one (at strength 30): clean and strength 20


def test_a_rerun_after_a_component_error_resumes_at_the_failed_group(registered, tmp_path):
    Raising.error, Raising.where = ValueError("boom"), "forward"
    outcome, path = run_faulty(tmp_path, SUITE)
    error_line(outcome, f"{path}: attacks[1] (raising): ValueError: boom")
    Raising.error = None
    again, _ = run_faulty(tmp_path, SUITE)
    assert again.code == 0, again.err
    assert "1 encodings computed, 2 reused" in again.out and stored(tmp_path) == CLEAN_CELLS + 2 * CELLS_PER_GROUP


def test_an_attack_that_returns_another_shape_is_one_line(registered, tmp_path, monkeypatch):
    monkeypatch.setattr(Raising, "forward", lambda self, images, strength, generator: images[:, :, :4])
    error_line(
        run_faulty(tmp_path, SUITE)[0],
        "attacks[1] (raising): ValueError: returned (6, 1, 4, 8) for a batch of shape (6, 1, 8, 8)",
    )


# BatchNorm on one image: a layer after global pooling sees one value per channel


def test_bn_adapt_on_a_single_released_ne_keeps_the_layers_that_see_one_value():
    from nonxfer_bench.attacks.testing import context

    ctx = context(1)
    attack = ATTACKS.create("bn_adapt")
    attack.prepare(replace(ctx, released=ctx.released[:1]))
    res = ctx.model("res")
    adapted = attack.adapt(res, 1.0)  # raised "Expected more than 1 value per channel when training"
    assert attack.budget(1.0).released == 1 and not adapted.training
    pairs = [(a, b) for a, b in zip(adapted.modules(), res.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    seen: dict[torch.nn.Module, int] = {}
    hooks = [
        b.register_forward_pre_hook(lambda m, x: seen.__setitem__(m, x[0].numel() // x[0].shape[1])) for _, b in pairs
    ]
    res(ctx.released[:1])
    for hook in hooks:
        hook.remove()
    single = [a for a, b in pairs if seen[b] == 1]
    several = [a for a, b in pairs if seen[b] > 1]
    assert single and several  # the tiny ResNet has both kinds at this input size
    for a, b in pairs:
        same = torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
        assert same == (a in single), "one value per channel: statistics kept; more: recomputed from the one image"
    assert torch.isfinite(adapted(ctx.released)).all()


def test_finetune_whose_last_batch_holds_one_image_trains():
    from nonxfer_bench.attacks.testing import context

    ctx = context(1)
    attack = ATTACKS.create("finetune", {"labelled": 5, "batch_size": 4, "epochs": 2, "scope": "all"})
    attack.prepare(ctx)
    assert attack.budget(1.0).labelled == 5  # batches of 4 and 1
    res = ctx.model("res")
    tuned = attack.adapt(res, 1.0)  # raised "Expected more than 1 value per channel when training"
    assert not tuned.training and not res.training
    changed = [not torch.equal(a, b) for a, b in zip(tuned.parameters(), res.parameters())]
    assert any(changed) and torch.isfinite(tuned(ctx.released)).all()


@pytest.mark.slow  # spawns a worker process, which imports torch
def test_a_component_error_in_a_worker_process_is_the_same_one_line(tmp_path):
    """Through the process pool: a built-in attack's own error (noise made with the authorized stem is the white box,
    which only the fitted attack sees) comes back from the worker as the driver's one line."""
    suite = {
        **SUITE,
        "public": {"name": "digits", "params": {"split": "train"}, "limit": 12},
        "attacks": [
            {"name": "identity"},
            {"name": "augment_finetune", "params": {"noise_models": ["a"], "images": 4, "epochs": 1}},
        ],
    }
    path = write_yaml(
        tmp_path / "suite.yaml",
        {**suite, "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")}},
    )
    outcome = run_cli("run", path, "--executor", "process", "--workers", "1", cwd=tmp_path / "cwd")
    error_line(
        outcome,
        f"{path}: attacks[1] (augment_finetune): ValueError: augment_finetune: noise_models may not hold the "
        "authorized model 'a'",
    )
