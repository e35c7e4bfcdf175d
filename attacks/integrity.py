"""Integrity attacks through torchattacks: adversarial examples against the authorized model.

Here the attacker does not want to *use* the data; it wants the authorized model to fail on it.
The same attack on the ``clean`` encoder row is the baseline, so the tables answer: are NEs more or
less fragile for the authorized model than clean images, and does an attack crafted on the
authorized model transfer to the others?

One adapter, ``torchattacks``, runs any torchattacks class by ``name`` with ``kwargs``; the kwargs
listed in ``scaled`` are multiplied by the strength (eps for L-inf attacks, c for CW, ...). ``pgd``,
``fgsm`` and ``cw`` are the same adapter with the class fixed and Fashion/ImageNet-sane defaults.

Range handling: torchattacks clamps to [0, 1], and NEs may be unclipped. Each batch is mapped by one
affine map u = (x - low) / (high - low) with low = min(0, batch min), high = max(1, batch max), so
u is in [0, 1], the clamp is harmless and in-range batches are untouched (low = 0, high = 1). The model
sees x = u (high - low) + low; kwargs named in ``pixel_units`` (eps, alpha) are divided by
(high - low), so budgets stay in [0, 1] pixel units whatever the release's range, and those in
``pixel_penalties`` (CW's c, which weighs the loss against a squared L2 distance) by (high - low)^2, so
the objective is the same as in pixel units. Random starts are drawn from the keyed generator (the global
RNG is forked), so results are deterministic.

What is *not* the same on an unclipped release: the [0, 1] box. On clean images torchattacks clamps
x + delta to [0, 1], so pixels at 0 or 1 (Fashion-MNIST's background) cannot move outward; on a release
far outside [0, 1] the box [low, high] never binds, so the same eps perturbs every pixel fully. Compare
NE rows with the clean row with that in mind (on the quickstart zoo the authorized ViT's accuracy under
FGSM/PGD on NEs equals its accuracy under *unclamped* FGSM/PGD on clean images: the NE itself changes
nothing, the missing box does).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from nonxfer_bench.attacks._subspace_tools import not_fitted
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.errors import excerpt
from nonxfer_bench.core.params import MAX_ITERATIONS, Strict, ZooModelName


def torchattacks_class(name: str) -> type:
    # heavy (~1 s): only the torchattacks wrapper needs it; every run and `list attacks` import this module
    import torchattacks

    cls = getattr(torchattacks, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torchattacks.attack.Attack)):
        raise ValueError(f"torchattacks has no attack class {name!r}")
    return cls


MAX_ARGUMENT = MAX_ITERATIONS  # any number among a torchattacks class's arguments (steps, eps, c, lr, ...)
Scaled = Annotated[float, Field(ge=0, le=MAX_ARGUMENT)]


class TorchattacksParams(Strict):
    name: str = Field("PGD", description="torchattacks class name, e.g. PGD, FGSM, CW, APGD, DeepFool")
    kwargs: dict[str, Any] = Field(
        {},
        description=f"fixed keyword arguments of the class (steps, ...); numbers finite, at most {MAX_ARGUMENT:,} in "
        "size",
    )
    scaled: dict[str, Scaled] = Field(
        {"eps": 8 / 255, "alpha": 2 / 255}, description="keyword arguments set to strength x value"
    )
    pixel_units: list[str] = Field(
        ["eps", "alpha"], description="keyword arguments that are distances in [0, 1] pixel units"
    )
    pixel_penalties: list[str] = Field(
        ["c"], description="keyword arguments that weigh a loss against squared pixel distances (CW's c)"
    )
    model: ZooModelName | None = Field(None, description="zoo model to attack; default: the authorized model")
    labels: Literal["true", "predicted"] = Field(
        "true", description="attack the true labels, or the model's own predictions"
    )

    @model_validator(mode="after")
    def _known_arguments(self) -> "TorchattacksParams":
        cls = torchattacks_class(self.name)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        unknown = sorted((set(self.kwargs) | set(self.scaled)) - accepted)
        if unknown:
            raise ValueError(f"{self.name} takes no argument(s) {unknown}; it takes {sorted(accepted)}")
        return self

    @field_validator("kwargs")
    @classmethod
    def _bounded_numbers(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        for key, value in kwargs.items():
            if (
                isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_ARGUMENT
            ):  # NaN fails too
                raise ValueError(f"{key} = {excerpt(value)} is not a finite number of size at most {MAX_ARGUMENT:,}")
        return kwargs


class _Rescaled(nn.Module):
    """The attacked model seen from u in [0, 1]: x = u * scale + low."""

    def __init__(self, model: nn.Module, low: float, scale: float) -> None:
        super().__init__()
        self.model, self.low, self.scale = model, low, scale

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(u * self.scale + self.low)


@ATTACKS.register("torchattacks")
class Torchattacks(Attack):
    """Any torchattacks attack on the authorized model (or ``model``); kwargs in ``scaled`` = strength x value.

    Labels: ``context.batch_labels`` (``labels: true``) or, without them or with ``labels: predicted``,
    the attacked model's own predictions. Unclipped images are attacked in a rescaled [0, 1] space with
    pixel-unit budgets (module docstring); the output keeps the release's range. Needs :meth:`fit`.
    """

    Params = TorchattacksParams
    version = "2"  # 1 left the attacked model in training mode (cells of such runs are wrong)
    threat = ThreatModel(
        tier=Tier.WHITE_BOX,
        text=(
            "integrity, white box: gradients of the authorized model and the true labels; compare with the same "
            "attack on the clean encoder row"
        ),
        queries="gradient",
    )
    cache_outputs = True

    def __init__(self, params: TorchattacksParams) -> None:
        super().__init__(params)
        self.context: AttackContext | None = None
        self.target: nn.Module | None = None

    def fit(self, context: AttackContext) -> None:
        self.context = context
        self.target = context.model(self.params.model) if self.params.model else context.authorized

    def parameter(self, strength: float) -> dict:
        return {"attack": self.params.name} | {k: round(v * strength, 6) for k, v in sorted(self.params.scaled.items())}

    def labels_for(self, images: torch.Tensor) -> torch.Tensor:
        labels = self.context.batch_labels
        if self.params.labels == "true" and labels is not None and len(labels) == len(images):
            return labels.to(images.device).long()
        with torch.no_grad():
            return self.target(images).argmax(1)

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.target is None:
            raise not_fitted(self.name)
        low = min(0.0, float(images.min()))
        scale = max(1.0, float(images.max())) - low
        kwargs = dict(self.params.kwargs) | {k: v * strength for k, v in self.params.scaled.items()}
        kwargs = {k: v / scale if k in self.params.pixel_units else v for k, v in kwargs.items()}
        kwargs = {k: v / scale**2 if k in self.params.pixel_penalties else v for k, v in kwargs.items()}
        labels = self.labels_for(images)
        # torchattacks restores the wrapper's training flag afterwards (train() if it was training), so the
        # wrapper must be in eval mode, or the zoo model would be left in training mode (BatchNorm on batch
        # statistics, running statistics overwritten) for every later evaluation.
        attack = torchattacks_class(self.params.name)(_Rescaled(self.target, low, scale).eval(), **kwargs)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        frozen = [p for p in self.target.parameters() if p.requires_grad]  # gradients w.r.t. inputs only
        try:
            for p in frozen:
                p.requires_grad_(False)
            # manual_seed seeds the CPU and every CUDA device: the forked states (the images' device's too) come
            # back afterwards, so the attack's random start leaves the global generators as it found them
            with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []), torch.enable_grad():
                torch.manual_seed(seed)
                adversarial = attack((images - low) / scale, labels)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return (adversarial.detach() * scale + low).to(images.dtype)


class PgdParams(TorchattacksParams):
    name: Literal["PGD"] = "PGD"
    kwargs: dict[str, Any] = {"steps": 10}
    scaled: dict[str, Scaled] = {"eps": 8 / 255, "alpha": 2 / 255}


class FgsmParams(TorchattacksParams):
    name: Literal["FGSM"] = "FGSM"
    scaled: dict[str, Scaled] = {"eps": 8 / 255}


class CwParams(TorchattacksParams):
    name: Literal["CW"] = "CW"
    kwargs: dict[str, Any] = {"steps": 50, "lr": 0.01}
    scaled: dict[str, Scaled] = {"c": 1.0}
    pixel_units: list[str] = ["lr"]  # Adam steps in tanh space move u by ~lr: kept in pixel units


@ATTACKS.register("pgd")
class Pgd(Torchattacks):
    """PGD (L-inf, torchattacks) on the authorized model: eps = s x 8/255, alpha = s x 2/255, 10 steps by default."""

    Params = PgdParams


@ATTACKS.register("fgsm")
class Fgsm(Torchattacks):
    """FGSM (torchattacks) on the authorized model: eps = s x 8/255 by default."""

    Params = FgsmParams


@ATTACKS.register("cw")
class Cw(Torchattacks):
    """Carlini-Wagner L2 (torchattacks) on the authorized model: c = s x 1, 50 Adam steps by default.

    On rescaled (unclipped) releases c is divided by (high - low)^2 and the Adam learning rate by
    (high - low), so the objective and the step sizes stay in pixel units."""

    Params = CwParams
