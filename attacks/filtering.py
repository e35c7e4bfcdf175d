"""``blur``: Gaussian low-pass filtering (kornia)."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from nonxfer_bench.attacks.base import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict


class BlurParams(Strict):
    max_sigma: float = Field(2.0, gt=0, le=100, description="Gaussian sigma in pixels at strength 1")


@ATTACKS.register("blur")
class Blur(Attack):
    """Gaussian blur with sigma = strength x ``max_sigma`` (kernel 2*ceil(3 sigma)+1, reflect borders)."""

    Params = BlurParams
    threat = ThreatModel(tier=Tier.NONE, text="no knowledge: low-pass filtering removes high-frequency noise")

    def sigma(self, strength: float) -> float:
        return strength * self.params.max_sigma

    def parameter(self, strength: float) -> dict:
        return {"sigma": round(self.sigma(strength), 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        # heavy (~0.7 s): kornia only when the attack runs; every run and `list attacks` import all attack modules
        from kornia.filters import gaussian_blur2d

        sigma = self.sigma(strength)
        if sigma < 1e-3:
            return images.clone()
        size = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur2d(images, (size, size), (sigma, sigma), border_type="reflect")
