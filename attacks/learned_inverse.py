"""Learned inverse: train a small network on (clean, NE) pairs and apply it to the release.

The NE method is public and needs no training, so an attacker who can obtain or make pairs of clean images and
their NEs trains an inverse network (NE in, clean image out) and runs it on the release. Where the pairs come
from (``pairs``) sets what the attacker must know, so this attack's knowledge tier is the source's, recorded per
cell (the class's ``threat`` states the most it may take; an instance carries its source's :data:`THREATS` entry):

- ``leaked`` (labelled_nes): m released NEs of the authorized model whose clean originals leaked (the owner's
  release of images that are also public: :attr:`AttackContext.encode` of the first m public images for the
  authorized model). A known-plaintext attack; pairs are more than labels, and like labelled NEs they come from
  the owner's own release, so it sits on the labelled-NE tier and spends ``labelled`` = m;
- ``surrogate`` (public_weights): pairs the attacker makes with the group's encoder for a public zoo model
  (``model``), on m public images;
- ``architecture`` (architecture): the same for a fresh random-weight copy of the authorized architecture
  (seeded by ``seed``): the attacker knows the architecture, not the weights;
- ``identified`` (public_weights): the same for the model that ``identify``'s ranking of ``candidates`` names
  from the release (:func:`~nonxfer_bench.attacks.surrogate.rank_candidates`; spends the released NEs too);
- ``own_key`` (white_box): pairs for the authorized model under the attacker's own key (``encode(..., key=)``).
  Meant for schemes whose transform is public and whose key is secret; the NE encoders read the authorized
  model's weights and have no key beside their draws, so there it is a white-box attacker whose pairs are
  distributed like ``leaked`` ones.

Network: it reads features of the release, each standardized per channel by its statistics on the training NEs: the
release itself or, when the pairs' noise (NE - clean) is periodic, the release less its per-image periodic mean and
that mean. The period is found in the pairs (:func:`noise_period`): the reference recipe adds one vector to every
stem tile (period = the stem's stride), the patch encoder draws every tile apart (no period); without this feature
the reference 15 release of vit_a stayed at chance at every m. Its estimate is the first feature rescaled to the
clean images' per-channel mean and std plus a correction from ``depth`` 3x3 convolutions (``width`` channels, ReLU)
of all features, whose last layer starts at zero. Standardizing instead of clipping lets it read unclipped releases
(the ``reference`` encoder's floats far outside [0, 1]) as they are. It trains for ``steps`` Adam steps of
``batch_size`` pairs (mean square error, shuffled epochs; the same number of steps at every m) from a generator
keyed by the attack, source, model, m and ``seed``: fitting is deterministic at a given torch thread count (another
count may round its float sums otherwise, as for :mod:`~nonxfer_bench.attacks.adaptation`) and leaves the global random
state alone. Its output is clamped to [0, 1] (it estimates clean images).

Strength s blends the release x with the inverse's output: (1 - s) x + s inverse(x); strength 0 returns the
release, 1 the inverse's estimate.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.surrogate import rank_candidates
from nonxfer_bench.attacks.threat import Budget, BudgetParams, ThreatModel, Tier
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.core.params import ZooModelName
from nonxfer_bench.schema.suite import WeightSource
from nonxfer_bench.zoo import ZooModel, build_model

Source = Literal["leaked", "surrogate", "architecture", "identified", "own_key"]

THREATS: dict[str, ThreatModel] = {
    "leaked": ThreatModel(
        tier=Tier.LABELLED_NES,
        text="holds m released NEs of the authorized model with their leaked clean originals (known plaintext) "
        "and trains an inverse network on them",
        labelled=True,
    ),
    "surrogate": ThreatModel(
        tier=Tier.PUBLIC_WEIGHTS,
        text="knows the method and the release's PSNR, holds a public model and clean public images; makes (clean, "
        "NE) pairs for that model and trains an inverse",
        public=True,
    ),
    "architecture": ThreatModel(
        tier=Tier.ARCHITECTURE,
        text="knows the method, the release's PSNR and the authorized architecture; makes pairs for a "
        "random-weight copy of it and trains an inverse",
        public=True,
    ),
    "identified": ThreatModel(
        tier=Tier.PUBLIC_WEIGHTS,
        text="holds public candidate models, clean public images and the release; makes pairs for the candidate "
        "the release identifies and trains an inverse",
        released=True,
        public=True,
    ),
    "own_key": ThreatModel(
        tier=Tier.WHITE_BOX,
        text="holds the authorized model and the public method but not the owner's key; makes pairs under its "
        "own key and trains an inverse",
        public=True,
    ),
}

CHUNK = 64  # images per inference forward (bounded activation memory at any batch size and resolution)
PERIOD_PAIRS = 64  # pairs the noise period is estimated on


class LearnedInverseParams(BudgetParams):
    pairs: Source = Field(description="where the (clean, NE) pairs come from (see the module docstring)")
    m: int = Field(
        256,
        ge=1,
        le=100_000,
        description="pairs the inverse trains on (the first m public images; fewer if the suite holds fewer)",
    )
    model: ZooModelName | None = Field(
        None, description="pairs: surrogate: the public zoo model the pairs are made for"
    )
    candidates: list[ZooModelName] = Field(
        [], max_length=1000, description="pairs: identified: the public zoo models identify ranks"
    )
    tau: float = Field(
        1e-5, gt=0, le=1, description="pairs: identified: singular-value threshold of each candidate's V_N"
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="the attacker's seed: network initialization, shuffles, own key, random architecture copy",
    )
    width: int = Field(16, ge=1, le=512, description="channels of the hidden convolutions")
    depth: int = Field(3, ge=1, le=32, description="hidden 3x3 convolutions")
    steps: int = Field(300, ge=1, le=1_000_000, description="Adam steps (the same at every m)")
    lr: float = Field(2e-3, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(32, ge=1, le=4096, description="pairs per step")
    max_period: int = Field(
        32,
        ge=0,
        le=4096,
        description="longest noise period looked for in the pairs (0: the network sees no periodic mean)",
    )

    @model_validator(mode="after")
    def _source_needs(self) -> "LearnedInverseParams":
        if (self.pairs == "surrogate") != (self.model is not None):
            raise ValueError("'model' names the public zoo model of pairs: surrogate (and is given only for it)")
        if (self.pairs == "identified") != bool(self.candidates):
            raise ValueError("'candidates' lists the zoo models of pairs: identified (and is given only for it)")
        return self


def periodic_mean(images: torch.Tensor, period: int) -> torch.Tensor:
    """Each image's mean period x period tile (over the whole tiles that fit), repeated over the image."""
    height, width = images.shape[-2] // period * period, images.shape[-1] // period * period
    tiles = images[..., :height, :width].unflatten(-1, (-1, period)).unflatten(-3, (-1, period)).mean((-4, -2))
    repeats = (-(-images.shape[-2] // period), -(-images.shape[-1] // period))
    return tiles.repeat(1, 1, *repeats)[..., : images.shape[-2], : images.shape[-1]]


def noise_period(noise: torch.Tensor, max_period: int, share: float = 0.5) -> int:
    """The smallest period p <= ``max_period`` (and at most half the image, so at least four tiles are averaged)
    whose per-image periodic mean holds ``share`` of the noise's energy; 0 when none does (noise drawn per tile,
    independently, is not periodic, and no noise has no period)."""
    for period in range(2, min(max_period, min(noise.shape[-2:]) // 2) + 1):
        height, width = noise.shape[-2] // period * period, noise.shape[-1] // period * period
        covered = noise[..., :height, :width]
        energy = float(covered.pow(2).sum())
        if energy > 0 and float(periodic_mean(covered, period).pow(2).sum()) >= share * energy:
            return period
    return 0


class InverseNet(nn.Module):
    """A clean-image estimate from the release's features (the release, or with a noise ``period`` the release less
    its periodic mean and that mean), each standardized by its training statistics: the first feature
    moment-matched to the clean images plus a correction from ``depth`` 3x3 convolutions of all of them."""

    def __init__(self, channels: int, width: int, depth: int, period: int) -> None:
        super().__init__()
        self.period = period
        inputs = 2 * channels if period else channels
        layers: list[nn.Module] = []
        for index in range(depth):
            layers += [nn.Conv2d(inputs if index == 0 else width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        for name, count in (
            ("feature_mean", inputs),
            ("feature_std", inputs),
            ("clean_mean", channels),
            ("clean_std", channels),
        ):
            self.register_buffer(name, torch.zeros(1, count, 1, 1))

    def features(self, released: torch.Tensor) -> torch.Tensor:
        if not self.period:
            return released
        periodic = periodic_mean(released, self.period)
        return torch.cat([released - periodic, periodic], 1)

    def standardize_on(self, noisy: torch.Tensor, clean: torch.Tensor) -> None:
        """Per-channel statistics of the training NEs' features and of the clean images."""
        for prefix, images in (("feature", self.features(noisy)), ("clean", clean)):
            getattr(self, f"{prefix}_mean").copy_(images.mean((0, 2, 3), keepdim=True))
            getattr(self, f"{prefix}_std").copy_(images.std((0, 2, 3), keepdim=True).clamp_min(1e-6))

    def forward(self, released: torch.Tensor) -> torch.Tensor:
        features = (self.features(released) - self.feature_mean) / self.feature_std
        return features[:, : self.clean_std.shape[1]] * self.clean_std + self.clean_mean + self.body(features)


@ATTACKS.register("learned_inverse")
class LearnedInverse(Attack):
    """Trains a small conv inverse on m (clean, NE) pairs from ``pairs`` and blends the release towards its output.

    See the module docstring for the sources and their tiers, the network and the strength (the blend weight).
    ``parameter()`` names the source, the pairs used and, as ``chosen``, the model the pairs were made for.
    """

    Params = LearnedInverseParams
    threat = ThreatModel(
        tier=Tier.LABELLED_NES,
        text=(
            "trains an inverse network on (clean, NE) pairs; its tier is its pairs source's: leaked NEs with their "
            "originals (labelled_nes), pairs made for a public model or the identified candidate (public_weights), "
            "for a random copy of the authorized architecture (architecture), for the authorized model under the "
            "attacker's own key (white_box)"
        ),
        released=True,
        public=True,
        labelled=True,
    )
    cache_outputs = True

    def __init__(self, params: LearnedInverseParams) -> None:
        super().__init__(params)
        self.threat = THREATS[params.pairs]  # this instance's tier: the source's
        self.net: InverseNet | None = None
        self.chosen = ""
        self.used = 0

    def pair_model(self, context: AttackContext) -> ZooModel:
        """The model the pairs are made for, by source."""
        source = self.params.pairs
        if source in ("leaked", "own_key"):
            return context.authorized
        if source == "surrogate":
            try:
                model = context.model(self.params.model)
            except Exception:
                raise UserError(
                    f"{self.name}: params.model {self.params.model!r} is not a model of the suite's zoo"
                ) from None
            if model.name == context.authorized.name:
                raise UserError(
                    f"{self.name}: params.model {model.name!r} is the authorized model; pairs made for it are pairs: "
                    "leaked or own_key"
                )
            return model
        if source == "identified":
            try:
                scored, _ = rank_candidates(
                    self.name, self.params.candidates, context, self.params.tau, exclude_authorized=False
                )
            except ValueError as error:  # a candidate outside the zoo, or none of the release's input size
                raise UserError(f"{error} (params.candidates)") from None
            return context.model(scored[0][2])
        return random_copy(context.authorized, self.params.seed)

    def fit(self, context: AttackContext) -> None:
        if context.encode is None or not len(context.public_images):
            raise UserError(f"{self.name}: needs a 'public' dataset in the suite (the clean images of the pairs)")
        model = self.pair_model(context)
        clean = context.public_images[: self.params.m]
        if tuple(model.input_size) != tuple(clean.shape[1:]):
            raise UserError(
                f"{self.name}: model {model.name!r} takes {tuple(model.input_size)} inputs, the release "
                f"{tuple(clean.shape[1:])}"
            )
        key = f"{self.name}/own_key/{self.params.seed}" if self.params.pairs == "own_key" else None
        noisy = context.encode(clean, model, key=key)
        self.chosen, self.used = model.name, len(clean)
        generator = keyed_generator(self.name, self.params.pairs, model.name, self.used, self.params.seed)
        self.net = train_inverse(noisy, clean, self.params, generator)

    def budget(self, strength: float) -> Budget:
        if self.params.pairs == "leaked":
            return Budget(labelled=self.used)
        if self.params.pairs == "identified":  # ranks on the released NEs and all public images
            return self.spent
        return Budget(public=self.used)

    def parameter(self, strength: float) -> dict:
        return {"pairs": self.params.pairs, "m": self.used or self.params.m, "blend": round(strength, 4)}

    def measured(self, strength: float) -> dict:
        """The model the pairs were made for and the noise period found in them."""
        return {} if self.net is None else {"chosen": self.chosen, "period": self.net.period}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() with an AttackContext before attacking")
        if strength == 0:
            return images.clone()
        net = self.net.to(images.device)
        inverse = torch.cat([net(images[i : i + CHUNK].float()).clamp(0, 1) for i in range(0, len(images), CHUNK)]).to(
            images.dtype
        )
        return torch.lerp(images, inverse, strength)


def random_copy(model: ZooModel, seed: int) -> ZooModel:
    """The model's architecture with random weights (seeded; the global random state is left as it was), on its
    device."""
    spec = model.spec.model_copy(update={"name": f"{model.name}-random{seed}", "weights": WeightSource(), "seed": seed})
    with torch.random.fork_rng(devices=[]):
        copy = build_model(spec)
    return copy.to_device(model.device) if model.device.type != "cpu" else copy


def train_inverse(
    noisy: torch.Tensor, clean: torch.Tensor, params: LearnedInverseParams, generator: torch.Generator
) -> InverseNet:
    """An :class:`InverseNet` trained on (noisy, clean) pairs: Adam, mean square error, shuffled epochs from
    ``generator``."""
    noisy, clean = noisy.float(), clean.float().to(noisy.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        net = InverseNet(
            noisy.shape[1],
            params.width,
            params.depth,
            noise_period(noisy[:PERIOD_PAIRS] - clean[:PERIOD_PAIRS], params.max_period),
        )
    net = net.to(noisy.device)
    net.standardize_on(noisy, clean)
    optimizer = torch.optim.Adam(net.parameters(), lr=params.lr)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(params.steps):
        if len(order) < min(params.batch_size, len(noisy)):
            order = torch.randperm(len(noisy), generator=generator)
        index, order = order[: params.batch_size], order[params.batch_size :]
        index = index.to(noisy.device)
        optimizer.zero_grad()
        F.mse_loss(net(noisy[index]), clean[index]).backward()
        optimizer.step()
    return net.eval().requires_grad_(False)
