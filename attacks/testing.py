"""The specification every attack meets, importable by plugin authors (``nonxfer_bench.attacks.testing``).

``tests/attacks/test_registry.py`` runs it over every registered attack; a plugin's own tests run it
over theirs, with the parameters the attack needs::

    import pytest
    from nonxfer_bench.attacks.testing import CHECKS

    @pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
    def test_sharpen_meets_the_attack_specification(check):
        check("sharpen", {"max_amount": 2.0})

Every check takes a ``device`` (default the CPU): ``check("sharpen", {"max_amount": 2.0}, device="cuda")`` runs it
with the batch, the context's models and its images on that device (made on the CPU and moved, so every device sees
the same inputs) and also asks that the output stays on the batch's device.

Attacks that override ``fit`` (informed attackers) are prepared first on a small :class:`AttackContext` built
from random-weight zoo models at the batch's resolution: ``authorized`` (a ViT with an exact patch null
space), the candidates ``twin`` (same architecture, other seed) and ``res`` (a ResNet stem), labelled public
images, a released sample encoded by the ``patch`` encoder and that encoder as ``encode``, and that sample labelled
0..9 in turn as the tuning images scored on the candidates. Attacks that leave
the images alone by design (the baseline, model adaptation, identification) skip ``harsher_at_strength_one``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from typing import Any, Callable

import torch

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext, TuningImages
from nonxfer_bench.attacks.threat import TIERS, ThreatModel
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.core.params import unbounded
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import ZooModel, build_model

CHANNELS = (1, 3)
STRENGTHS = (0.0, 0.5, 1.0)


Device = torch.device | str


def batch(channels: int, device: Device = "cpu") -> torch.Tensor:
    """Three seeded random 20x24 images with ``channels`` channels (drawn on the CPU, then moved to ``device``)."""
    return torch.rand(3, channels, 20, 24, generator=torch.Generator().manual_seed(0)).to(device)


def fitting_context(
    models: dict[str, ZooModel],
    authorized: str,
    public: torch.Tensor,
    clean: torch.Tensor,
    generator: torch.Generator,
    device: Device = "cpu",
) -> AttackContext:
    """An attack context from CPU models and [0, 1] images, on ``device``: ``public`` labelled 0..9 in turn, the
    release the ``patch`` encoder's NEs of ``clean`` for ``authorized`` at 15 dB (drawn from ``generator``, a CPU
    generator), ``encode`` that encoder (a ``key`` keys its draws) and the release, labelled 0..9 in turn, as the
    tuning images scored on the other models.

    Everything is made on the CPU and then moved, so every device sees the same models and images; the models move
    with :meth:`ZooModel.to_device` (on the CPU they stay as built)."""
    device = torch.device(device)
    encoder = ENCODERS.create("patch")
    released = encoder.encode(clean, models[authorized], 15.0, generator).images
    labels = torch.arange(len(public)) % 10
    if device.type != "cpu":
        for model in models.values():
            model.to_device(device)
    context = AttackContext(models[authorized], models.__getitem__, public, released, public_labels=labels)

    def encode(images: torch.Tensor, model: ZooModel, key: str | None = None) -> torch.Tensor:
        generator = (
            torch.Generator().manual_seed(4) if key is None else keyed_generator("attacker key", key, model.name)
        )
        return encoder.encode(images, model, 15.0, generator).images

    def predict(model: ZooModel, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # as the runner's inference_mode, but a tensor subclass (tests' pretend CUDA) can pass it
            return model(images).argmax(1).cpu()

    others = tuple(name for name in models if name != authorized)
    tuning = TuningImages(
        lambda n: (released[:n], torch.arange(len(released[:n])) % 10), others, predict, 4, lambda text: None
    )
    return replace(
        context,
        public_images=public.to(device),
        released=released.to(device),
        public_labels=labels.to(device),
        encode=encode,
        tuning=tuning,
    )


def context(channels: int, device: Device = "cpu") -> AttackContext:
    """A fitted-attack context at 20x24 with ``channels`` channels, random weights (seeded), on ``device`` (one per
    channel count and device, made once)."""
    return _context(channels, str(torch.device(device)))


@functools.cache
def _context(channels: int, device: str) -> AttackContext:
    preprocess = {"input_size": [channels, 20, 24], "mean": [0.5] * channels, "std": [0.25] * channels}
    vit = {
        "img_size": [20, 24],
        "patch_size": 4,
        "in_chans": channels,
        "embed_dim": 12,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 10,
    }
    res = {"in_chans": channels, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10}
    specs = {
        "authorized": ("vit_tiny_patch16_224", vit, 0),
        "twin": ("vit_tiny_patch16_224", vit, 1),
        "res": ("resnet18", res, 2),
    }
    models = {
        name: build_model(ModelSpec(name=name, arch=arch, kwargs=kwargs, preprocess=preprocess, seed=seed))
        for name, (arch, kwargs, seed) in specs.items()
    }
    generator = torch.Generator().manual_seed(3)
    public = torch.rand(24, channels, 20, 24, generator=generator)
    clean = torch.rand(8, channels, 20, 24, generator=generator)
    return fitting_context(models, "authorized", public, clean, generator, device)


def make(name: str, params: dict[str, Any] | None = None, channels: int = 3, device: Device = "cpu") -> Attack:
    """The registered attack with ``params``, prepared on ``context(channels, device)`` if it is an informed attack."""
    attack = ATTACKS.create(name, params)
    if type(attack).fit is not Attack.fit:
        attack.prepare(context(channels, device))
    return attack


def check_shape_dtype_and_determinism(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """Same shape, dtype and device out as in, finite, and equal for equal generator seeds, at every strength."""
    for channels in CHANNELS:
        attack, x = make(name, params, channels, device), batch(channels, device)
        for strength in STRENGTHS:
            first = attack(x, strength, torch.Generator().manual_seed(1))
            again = attack(x, strength, torch.Generator().manual_seed(1))
            where = f"{name} at strength {strength} on {channels} channel(s)"
            assert first.shape == x.shape and first.dtype == x.dtype, f"{where}: {tuple(first.shape)} {first.dtype}"
            assert first.device == x.device, f"{where}: returned on {first.device}, the batch is on {x.device}"
            assert torch.equal(first, again), f"{where}: not deterministic for one generator seed"
            assert torch.isfinite(first).all(), f"{where}: non-finite values"


def check_typed_parameters(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """A docstring and a ``Params`` model that refuses unknown keys and bounds every number from both sides
    (``Field(2.0, gt=0, le=10)``: an absurd value in a suite is then one line at load, not hours of work)."""
    cls = ATTACKS.get(name)
    assert cls.__doc__, f"{name}: needs a docstring"
    assert not unbounded(cls.Params), (
        f"{name}: numeric parameters without a lower or an upper bound: {', '.join(unbounded(cls.Params))}"
    )
    try:
        cls.Params(not_a_parameter=1)
    except Exception:
        return
    raise AssertionError(f"{name}: Params accepts an unknown key (use extra='forbid')")


def check_threat_model(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """A :class:`ThreatModel` declared on the attack's own class, and a budget spent only where it grants one."""
    cls = ATTACKS.get(name)
    declared = next(k for k in cls.__mro__ if "threat" in vars(k))
    assert declared is not Attack, f"{name} inherits the base class's threat model instead of declaring one"
    threat = ThreatModel.model_validate(cls.threat.model_dump())
    assert threat.tier in TIERS and len(threat.text) > 10, f"{name}: threat model {threat}"
    attack = make(name, params, device=device)
    budget = attack.budget(1.0)
    assert budget.released == 0 or threat.released, f"{name}: spends released NEs its threat model does not grant"
    assert budget.public == 0 or threat.public, f"{name}: spends public images its threat model does not grant"
    assert budget.labelled == 0 or threat.labelled, f"{name}: spends labelled NEs its threat model does not grant"
    if threat.released and not attack.adapts_model and type(attack).fit is not Attack.fit:
        assert budget.released == len(context(3, device).released), (
            f"{name}: reports {budget.released} released NEs used"
        )


def check_rejects_strengths_outside_the_unit_interval(
    name: str, params: dict[str, Any] | None = None, device: Device = "cpu"
) -> None:
    """Strength 1.5 is a ValueError."""
    try:
        make(name, params, 1, device)(batch(1, device), 1.5, torch.Generator())
    except ValueError:
        return
    raise AssertionError(f"{name}: strength 1.5 did not raise ValueError")


def check_harsher_at_strength_one(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """Strength 1 changes the images more than strength 0 (every attack but the identity)."""
    attack, x = make(name, params, device=device), batch(3, device)
    mild = (attack(x, 0.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    harsh = (attack(x, 1.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    assert harsh > mild, f"{name}: mean square change {harsh:.3g} at strength 1, {mild:.3g} at strength 0"


def check_refuses_to_run_unfitted(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """An informed attack (one that overrides ``fit``) called before ``fit`` raises a RuntimeError naming fit."""
    if ATTACKS.get(name).fit is Attack.fit:
        return  # nothing to fit
    try:
        ATTACKS.create(name, params)(batch(1, device), 0.5, torch.Generator())
    except RuntimeError as error:
        assert "fit" in str(error), f"{name}: the error does not say to call fit: {error}"
        return
    raise AssertionError(f"{name}: ran without fit")


def check_parameter_is_json(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """``parameter(strength)`` is a dict that JSON can write (it is logged and stored in every cell)."""
    attack = make(name, params, device=device)
    for strength in STRENGTHS:
        value = attack.parameter(strength)
        assert isinstance(value, dict), f"{name}: parameter({strength}) is {type(value).__name__}, not a dict"
        json.dumps(value)


CHECKS: dict[str, Callable[..., None]] = {  # each: (name, params=None, device="cpu")
    "shape_dtype_and_determinism": check_shape_dtype_and_determinism,
    "typed_parameters": check_typed_parameters,
    "threat_model": check_threat_model,
    "rejects_strengths_outside_the_unit_interval": check_rejects_strengths_outside_the_unit_interval,
    "harsher_at_strength_one": check_harsher_at_strength_one,
    "refuses_to_run_unfitted": check_refuses_to_run_unfitted,
    "parameter_is_json": check_parameter_is_json,
}
