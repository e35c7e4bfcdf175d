"""Encoder interface: clean [0, 1] images in, non-transferable examples (NEs) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

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


@dataclass
class Encoding:
    """An encoded batch in [0, 1] pixel units (possibly unclipped) and what the encoder achieved.

    ``flat_input`` is set only by the reference recipe for overlapping stems (:class:`FlatInput`).
    """

    images: torch.Tensor
    achieved_psnr: torch.Tensor
    flat_input: FlatInput | None = None
    info: dict[str, float] = field(default_factory=dict)


class Encoder(ABC):
    """A registered NE encoder. Strength is a PSNR in dB; ``strength_unit`` says which PSNR."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    strength_unit: ClassVar[str] = "standard PSNR (dB, peak 1 on [0, 1] pixels)"

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        """Encode images (B x C x H x W in [0, 1], at ``model``'s input size) for the authorized ``model``."""

    def check_model(self, model: ZooModel) -> str | None:
        """Why this encoder cannot protect ``model`` as the authorized model (one line), or None when it can.
        Called at suite load on the model's structure (built on the meta device: layers, no weight values)."""
        return None

    def authorized_view(self, model: ZooModel, generator: torch.Generator) -> ZooModel:
        """The authorized model as deployed for a release encoded with ``generator`` (a fresh generator with the
        release's seed: no draw from it shifts the release's draws). Keyed schemes transform the model with the
        release's key; the default is the model itself."""
        return model

    def noise_subspace(self, model: ZooModel) -> NoiseSubspace | None:
        """The patch-level subspace of ``model``'s first layer this encoder draws its noise from, for the
        bound numbers (``linalg.bounds``); None when its noise is not drawn per patch from one."""
        return None
