"""Adaptation attacks: the unauthorized party adapts its own model to the release, the images pass unchanged.

The score stage asks :meth:`Attack.adapt` for an adapted copy of every evaluated model (the authorized one
too, for the table) and classifies the released images with it (``adapts_model``). Strength is the
fraction of the attacker's budget used, so strength 0 leaves every model as it is.

- ``bn_adapt``: test-time normalization adaptation. BatchNorm running statistics are recomputed on the
  first round(s x n) unlabelled released NEs of the group (train-mode forward of the BatchNorm layers only,
  ``momentum=None`` = cumulative average, no gradients). Models without BatchNorm are unchanged; the
  step's ``attack_param`` names them (``no_bn``).

In both, a BatchNorm layer that sees one value per channel (one image after global pooling: a budget of one
NE, a last training batch of one image) has no batch statistics to take: for that call it normalizes with its
running statistics, as in eval mode, and ``bn_adapt`` keeps that layer's statistics as they were.
- ``finetune``: fine-tuning on round(s x ``labelled``) labelled NEs. The labelled NEs are the suite's
  *public* images (a split disjoint from the evaluation images, with their labels) encoded by the group's
  encoder for the authorized model with draws keyed apart from the release: the owner's release of a
  labelled set. Accuracy is then measured on the whole evaluation release, none of whose images was
  trained on. ``scope: first_layer`` trains only the stem (BatchNorm kept frozen), ``embeddings`` the stem and a
  ViT's position embeddings (what a keyed block transform changes: W' and, for block scrambling, the permuted
  position embeddings), ``all`` the whole model.
- ``augment_finetune``: label-free fine-tuning on clean public images with self-made noise of the
  release's kind and PSNR (the group's encoder and strength, made for stems the attacker holds), towards the
  model's own clean predictions.

Reproducibility: shuffles and noise come from generators keyed by the attack, the model and the budget, the model's own
draws in training (dropout, drop path) from a stream seeded from them, so a group computed twice gives the same outcome
bits at the same torch thread count. The thread count itself changes them: the CPU kernels split their float sums by
thread, and training carries the last-bit differences into the weights. On 200 Fashion-MNIST images of one
quickstart-ladder
group, 1 and 2 threads gave other outcome bits in 8 of its 42 fine-tuning cells, by up to 3.5 accuracy points
(``bn_adapt``,
which trains nothing: none of 12). A bundle's replay computes with the suite's ``threads``: compute a bundle with them.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer
from torch import nn

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import Budget, ThreatModel, Tier
from nonxfer_bench.core.device import generator_on
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.core.params import MAX_IMAGES, MAX_ITERATIONS, MAX_LR, NoParams, Strict, ZooModelName
from nonxfer_bench.schema.suite import MAX_BATCH
from nonxfer_bench.zoo import ZooModel


def _not_fitted(name: str) -> RuntimeError:
    return RuntimeError(f"{name}: call fit() with an AttackContext before adapting models")


def _used(strength: float, available: int) -> int:
    """How many of ``available`` images a strength in [0, 1] spends (at least one when strength > 0)."""
    return 0 if strength == 0 or available == 0 else max(1, round(strength * available))


class _Adaptation(Attack):
    """Shared by the adaptation attacks: images unchanged, models adapted once per group and strength."""

    adapts_model = True

    def __init__(self, params: Strict) -> None:
        super().__init__(params)
        self.data: torch.Tensor | None = None  # what fit() gave the attacker to adapt on

    def used(self, strength: float) -> int:
        if self.data is None:
            raise _not_fitted(self.name)
        return _used(strength, len(self.data))

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.data is None:
            raise _not_fitted(self.name)
        return images.clone()


@ATTACKS.register("bn_adapt")
class BnAdapt(_Adaptation):
    """Recomputes every BatchNorm layer's running statistics on round(s x n) unlabelled released NEs.

    The BatchNorm layers alone run in training mode (dropout and the rest stay in eval), with
    ``momentum=None`` so the statistics are the plain average over the used images; no gradients, no labels.
    """

    Params = NoParams
    threat = ThreatModel(
        tier=Tier.NONE,
        text="knows nothing about the scheme; runs its own model in training mode on the unlabelled release "
        "(test-time BatchNorm adaptation)",
        released=True,
        queries="model",
    )

    def __init__(self, params: NoParams) -> None:
        super().__init__(params)
        self.bn_layers: dict[str, int] = {}

    def fit(self, context: AttackContext) -> None:
        self.data = context.released

    def budget(self, strength: float) -> Budget:
        return self.spent.model_copy(update={"released": _used(strength, self.spent.released)})

    def parameter(self, strength: float) -> dict:
        """``used`` NEs and, once models were adapted, ``no_bn``: the models it left unchanged (no BatchNorm)."""
        out: dict = {"used": _used(strength, 0 if self.data is None else len(self.data))}
        if self.bn_layers:  # one value for every cell of the step, so tables group the step's cells together
            out["no_bn"] = "+".join(sorted(name for name, count in self.bn_layers.items() if not count)) or "-"
        return out

    @torch.no_grad()
    def adapt(self, model: ZooModel, strength: float) -> ZooModel:
        used = self.used(strength)
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn_layers[model.name] = len(layers)
        if not layers or not used:
            return model
        adapted = copy.deepcopy(model)
        with _batch_statistics(adapted, recompute=True):
            adapted(self.data[:used])
        return adapted.eval()


class TrainParams(Strict):
    """How an adaptation attack trains a model copy (see :func:`_train`)."""

    scope: Literal["first_layer", "embeddings", "all"] = Field(
        "all",
        description="train the stem only; the stem and a ViT's position embeddings (learns a keyed block transform); "
        "or the whole model",
    )
    epochs: int = Field(5, ge=1, le=MAX_ITERATIONS, description="passes over the training images")
    lr: float = Field(1e-3, gt=0, le=MAX_LR, description="Adam learning rate")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)


class FinetuneParams(TrainParams):
    labelled: int = Field(
        128, ge=1, le=MAX_IMAGES, description="labelled NEs at strength 1 (the first of the public split, encoded)"
    )


@ATTACKS.register("finetune")
class Finetune(_Adaptation):
    """Fine-tunes each model on round(s x ``labelled``) labelled NEs (cross-entropy, Adam, seeded shuffles).

    The labelled NEs come from :attr:`AttackContext.encode` on the public images and their labels (see the
    module docstring); a suite without a labelled ``public`` dataset is refused. ``scope: first_layer``
    trains only the first convolution in eval mode; ``all`` trains every parameter in training mode.
    """

    Params = FinetuneParams
    threat = ThreatModel(
        tier=Tier.LABELLED_NES,
        text="holds labelled NEs of the same release (made for the authorized model) and fine-tunes its own "
        "model on them",
        labelled=True,
        queries="gradient",
        requires=frozenset({"public", "public_labels"}),
    )

    def __init__(self, params: FinetuneParams) -> None:
        super().__init__(params)
        self.labels: torch.Tensor | None = None

    def fit(self, context: AttackContext) -> None:
        labels = context.public_labels
        if context.encode is None or labels is None or not len(context.public_images) or bool((labels < 0).any()):
            raise ValueError(
                "finetune: needs a labelled 'public' dataset in the suite (its images are encoded as the labelled NEs)"
            )
        count = min(self.params.labelled, len(context.public_images))
        self.data = context.encode(context.public_images[:count], context.authorized)
        self.labels = labels[:count].to(self.data.device)

    def budget(self, strength: float) -> Budget:
        return self.spent.model_copy(update={"labelled": _used(strength, 0 if self.data is None else len(self.data))})

    def parameter(self, strength: float) -> dict:
        return {"labelled": self.budget(strength).labelled, "scope": self.params.scope}

    def adapt(self, model: ZooModel, strength: float) -> ZooModel:
        used = self.used(strength)
        if not used:
            return model
        return _train(
            model, self.data[:used], self.labels[:used], self.params, keyed_generator(self.name, model.name, used)
        )


class AugmentFinetuneParams(TrainParams):
    images: int = Field(
        256, ge=1, le=MAX_IMAGES, description="clean public images at strength 1 (the first of the public split)"
    )
    noise_models: list[ZooModelName] = Field(
        [],
        max_length=1000,
        description="zoo models (public) whose stems make the noise (those of the release's input size; never the "
        "authorized one); empty: the adapted model's own",
    )
    isotropic: bool = Field(
        False,
        description="also train on white Gaussian noise of the self-made noise's energy (a stem-free augmentation)",
    )

    @model_serializer(mode="wrap")
    def _keys_without_isotropic(self, handler: Any) -> dict[str, Any]:
        """``isotropic: false`` is left out of the dump (the cell keys), so suites written before it keep their keys."""
        data = handler(self)
        if data.get("isotropic") is False:
            data.pop("isotropic")
        return data


@ATTACKS.register("augment_finetune")
class AugmentFinetune(_Adaptation):
    """Label-free fine-tuning on round(s x ``images``) clean public images with self-made NE noise.

    The method and the release's PSNR are public: the attacker encodes the public images with the group's
    encoder at the group's strength, but for a stem it holds: each of ``noise_models`` (never the
    authorized model) or, by default, the adapted model itself. Targets are the model's own predictions on
    the clean images (no labels), so the model learns to ignore noise of the release's kind and size.
    """

    Params = AugmentFinetuneParams
    threat = ThreatModel(
        tier=Tier.PUBLIC_WEIGHTS,
        text="knows the method and the release's PSNR, holds clean public images (and, with noise_models, public "
        "models); makes NE-like noise with stems it holds and trains its model to ignore it",
        public=True,
        queries="gradient",
        requires=frozenset({"public"}),
    )
    OWN_STEM = ThreatModel(
        tier=Tier.METHOD,
        text="knows the method and the release's PSNR, holds clean public images; makes NE-like noise with its own "
        "model's stem and trains the model to ignore it",
        public=True,
        queries="gradient",
        requires=frozenset({"public"}),
    )

    def __init__(self, params: AugmentFinetuneParams) -> None:
        super().__init__(params)
        self.context: AttackContext | None = None
        self.stems: list[str] = []  # the noise models that fit the release (after fit)
        if not params.noise_models:  # no public model: the attacker's own stem, the method tier
            self.threat = self.OWN_STEM

    def fit(self, context: AttackContext) -> None:
        if context.encode is None or not len(context.public_images):
            raise ValueError("augment_finetune: needs a 'public' dataset in the suite (clean images to add noise to)")
        if context.authorized.name in self.params.noise_models:
            raise ValueError(
                f"augment_finetune: noise_models may not hold the authorized model {context.authorized.name!r} (that "
                "is the white box)"
            )
        size = tuple(context.public_images.shape[1:])
        self.stems = [name for name in self.params.noise_models if tuple(context.model(name).input_size) == size]
        if self.params.noise_models and not self.stems:
            raise ValueError(
                f"augment_finetune: no noise model takes the release's {size} inputs (noise_models: "
                f"{', '.join(self.params.noise_models)})"
            )
        self.data = context.public_images[: self.params.images]
        self.context = context

    def budget(self, strength: float) -> Budget:
        return self.spent.model_copy(update={"public": _used(strength, 0 if self.data is None else len(self.data))})

    def parameter(self, strength: float) -> dict:
        return {"public": self.budget(strength).public, "scope": self.params.scope}

    def measured(self, strength: float) -> dict:
        """The noise models that fit the release (those of another input size are left out)."""
        return {"stems": "+".join(self.stems)} if self.params.noise_models else {}

    def adapt(self, model: ZooModel, strength: float) -> ZooModel:
        used = self.used(strength)
        if not used:
            return model
        clean = self.data[:used]
        stems = [self.context.model(name) for name in self.stems] or [model]
        noisy = [self.context.encode(clean, stem) for stem in stems]
        generator = keyed_generator(self.name, model.name, used)
        if self.params.isotropic:  # white noise of the same per-image energy as the first stem's NE noise
            energy = (noisy[0] - clean).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            white = torch.randn(clean.shape, generator=generator_on(generator, clean.device), device=clean.device)
            noisy.append(clean + white * energy / white.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        with torch.no_grad():
            targets = model(clean).argmax(1).repeat(len(noisy))
        return _train(model, torch.cat(noisy), targets, self.params, generator)


@contextlib.contextmanager
def _batch_statistics(model: nn.Module, recompute: bool) -> Iterator[None]:
    """BatchNorm layers take batch statistics only where a batch has them (module docstring): a call that gives a
    layer one value per channel runs it in eval mode. ``recompute``: every layer takes batch statistics
    (``bn_adapt``), its running statistics reset to a plain average on its first call with more than one value;
    else each layer keeps the mode it had (training only in training mode)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    wanted = {layer: recompute or layer.training for layer in layers}
    reset: set[nn.Module] = set()

    def before(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        values = inputs[0].numel() // max(1, inputs[0].shape[1])  # per channel: batch x spatial positions
        layer.train(wanted[layer] and values > 1)
        if recompute and layer.training and layer not in reset:
            layer.reset_running_stats()
            layer.momentum = None
            reset.add(layer)

    hooks = [layer.register_forward_pre_hook(before) for layer in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers:
            layer.train(wanted[layer])


def _train(
    model: ZooModel, images: torch.Tensor, labels: torch.Tensor, params: TrainParams, generator: torch.Generator
) -> ZooModel:
    """A copy of ``model`` trained on (images, labels): cross-entropy, Adam, seeded shuffles; the stem only
    (in eval mode, BatchNorm frozen) for ``scope: first_layer``, with a ViT's position embeddings for ``embeddings``,
    every parameter in training mode for ``all``. The model's own draws in training mode (dropout, drop path) come
    from the global generators seeded from ``generator``'s seed, forked so that they are left as they were."""
    adapted = copy.deepcopy(model)
    trained = list(adapted.parameters()) if params.scope == "all" else list(adapted.first_conv.parameters())
    position = getattr(adapted.net, "pos_embed", None)
    if params.scope == "embeddings" and isinstance(position, nn.Parameter):
        trained.append(position)
    for parameter in adapted.parameters():
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    adapted.train(params.scope == "all")
    optimizer = torch.optim.Adam(trained, lr=params.lr)
    with (
        _batch_statistics(adapted, recompute=False),
        torch.random.fork_rng(devices=[images.device] if images.is_cuda else []),
    ):
        torch.manual_seed(generator.initial_seed() + 1)  # dropout and drop path: a keyed stream beside the shuffles'
        for _ in range(params.epochs):
            order = torch.randperm(len(images), generator=generator, device=generator.device).to(images.device)
            for start in range(0, len(images), params.batch_size):
                index = order[start : start + params.batch_size]
                optimizer.zero_grad()
                F.cross_entropy(adapted(images[index]), labels[index]).backward()
                optimizer.step()
    for parameter in adapted.parameters():
        parameter.requires_grad_(False)
    return adapted.eval()
