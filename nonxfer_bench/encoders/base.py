"""Encoder interface: clean [0, 1] images in, non-transferable examples (NEs) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from nonxfer_bench.registry import NoParams, Registry
from nonxfer_bench.subspace import ConvGeometry
from nonxfer_bench.zoo import ZooModel

ENCODERS: Registry["Encoder"] = Registry(
    "encoder",
    ("nonxfer_bench.encoders.clean", "nonxfer_bench.encoders.reference", "nonxfer_bench.encoders.gaussian", "nonxfer_bench.encoders.patch", "nonxfer_bench.encoders.operator"),
    "nonxfer_bench.encoders",
)


@dataclass
class FlatInput:
    """What the published code feeds an overlapping authorized stem directly: U + n 1^T, the unfolded clean
    windows (normalized space) plus the noise vector n in every window. Held as the clean normalized
    images and n, so nothing is unfolded unless :meth:`patches` is asked for."""

    normalized: torch.Tensor  # B x C x H x W
    noise: torch.Tensor  # B x D x 1
    geometry: ConvGeometry

    def patches(self) -> torch.Tensor:
        """U + n 1^T itself (B x D x L)."""
        return F.unfold(self.normalized, **self.geometry.unfold_kwargs()) + self.noise

    def first_layer(self, weight: torch.Tensor) -> torch.Tensor:
        """W (U + n 1^T) without unfolding: the convolution of the clean images plus W n (B x O x L, no bias)."""
        geometry = self.geometry
        conv = F.conv2d(self.normalized, weight, None, geometry.stride, geometry.padding, geometry.dilation)
        return conv.flatten(2) + weight.flatten(1) @ self.noise


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
