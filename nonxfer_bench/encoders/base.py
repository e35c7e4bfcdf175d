"""Encoder interface: clean [0, 1] images in, a protected release for one authorized model out.

The contract every encoder meets, built-in or plugin, is :mod:`nonxfer_bench.encoders.testing` (importable checks);
the class attributes below are what an encoder declares about itself, and the specification checks each
declaration against what the encoder does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from nonxfer_bench.core.params import NoParams
from nonxfer_bench.core.registry import Registry
from nonxfer_bench.linalg.flat_input import FlatInput
from nonxfer_bench.linalg.subspace import NoiseSubspace
from nonxfer_bench.zoo import ZooModel

ENCODERS: Registry["Encoder"] = Registry("encoder", "nonxfer_bench.encoders", "nonxfer_bench.encoders")
MAX_INPUT_DIMENSION = 16 * 4096 * 4096  # C x H x W of the largest model input a zoo may declare
MAX_TAU = 1e6  # a singular-value threshold of a first layer as seen from [0, 1] pixels
STANDARD_PSNR = (
    "standard PSNR (dB, peak 1 on [0, 1] pixels)"  # a strength_unit: the strength is the PSNR the release hits
)
IGNORED = "ignored"  # a strength_unit: the strength changes nothing (list one)


@dataclass
class Encoding:
    """An encoded batch in [0, 1] pixel units (possibly unclipped) and what the encoder achieved.

    ``achieved_psnr`` (B,) is the standard PSNR (peak 1) of each released image against its clean image, whatever
    the encoder's strength unit: cells record it as ``encoded_psnr``, so every scheme is compared on one scale.
    ``flat_input`` is set only by the reference recipe for overlapping stems (:class:`FlatInput`).
    """

    images: torch.Tensor
    achieved_psnr: torch.Tensor
    flat_input: FlatInput | None = None
    info: dict[str, float] = field(default_factory=dict)


class Encoder(ABC):
    """A registered protection (encoder). What it declares:

    - ``strength_unit``: what a suite's strengths mean. :data:`STANDARD_PSNR` (the default) promises that the
      release hits the strength as its standard PSNR, so schemes can be compared at matched image quality;
      :data:`IGNORED` says the strength changes nothing; any other text names the encoder's own unit (the
      ``reference`` recipe's nominal PSNR), and the achieved standard PSNR is then whatever it is.
    - ``secret``: one sentence, what the owner keeps secret and what the release assumes (``list encoders``).
    - ``keyed``: the release depends on the generator's seed (the owner's key); False when every key gives the
      same release (``clean``).
    - ``in_unit_range``: every release lies in [0, 1]; False (the default) means unclipped: values may leave
      [0, 1] (still [0, 1] pixel units), kept bit for bit by ``float32`` storage and clipped by image formats.
    - ``version``: part of every cell key; bump it when the output changes (a plugin's cell keys also hash its
      source files: ``nonxfer_bench.execution.plan``).
    - ``storage_formats``: the storage formats (``nonxfer_bench.storage.formats`` names) its releases survive: stored
      and read back, the authorized model keeps its predictions (the specification checks each). ``encode`` refuses
      any other format without ``--force``. The default is ``float32`` alone, which keeps every release bit for bit.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    strength_unit: ClassVar[str] = STANDARD_PSNR
    secret: ClassVar[str] = ""
    keyed: ClassVar[bool] = True
    in_unit_range: ClassVar[bool] = False
    storage_formats: ClassVar[tuple[str, ...]] = ("float32",)

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        """Encode images (B x C x H x W float in [0, 1], at ``model``'s input size) for the authorized ``model``:
        a release of the same shape, dtype and device, every random number drawn from ``generator`` (never the
        global one), neither the images nor the model changed."""

    @classmethod
    def draw_identity(cls, base: dict[str, Any]) -> dict[str, Any]:
        """What of an encoding group's identity (``base`` in :func:`nonxfer_bench.execution.plan.plan_suite`: dataset,
        encoder identity, authorized model, strength, seed, ...) seeds the draws of its encoder and attacks: ``base``
        itself. An encoder whose params say where files lie, when their content is pinned otherwise, leaves those
        paths out, so that moving the files keeps the draws (:class:`~nonxfer_bench.encoders.stored_release.
        StoredRelease`). Cell keys hold the whole ``base`` either way."""
        return base

    def check_model(self, model: ZooModel) -> str | None:
        """Why this encoder cannot protect ``model`` as the authorized model, or None when it can: one line (no
        line break) naming what the model has and what would be valid; the suite loader prefixes the suite key.
        Called at suite load on the model's structure (built on the meta device: layers, no weight values), so
        the answer may depend on the layers only, never on weights."""
        return None

    def authorized_view(self, model: ZooModel, generator: torch.Generator) -> ZooModel:
        """The authorized model as deployed for a release encoded with ``generator`` (a fresh generator with the
        release's seed: no draw from it shifts the release's draws). Keyed schemes transform the model with the
        release's key (a new model; ``model`` is left as it is); the default is the model itself."""
        return model

    def noise_subspace(self, model: ZooModel) -> NoiseSubspace | None:
        """The patch-level subspace of ``model``'s first layer this encoder draws its noise from, for the
        bound numbers (``linalg.bounds``); None when its noise is not drawn per patch from one. Where the stem's
        windows tile the image, every window of the noise (release - images) lies in its span."""
        return None
