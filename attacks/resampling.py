"""``resize``: bilinear downscale and back up, the reference's resizing attack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from nonxfer_bench.attacks.base import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict


class ResizeParams(Strict):
    min_scale: float = Field(0.25, gt=0, lt=1, description="scale factor at strength 1 (strength 0 is 1.0)")
    antialias: bool = Field(False, description="antialias the downscale (the reference does not)")


@ATTACKS.register("resize")
class Resize(Attack):
    """Bilinear resize to ``scale`` x the size and back; scale goes 1 -> ``min_scale`` with strength."""

    Params = ResizeParams
    threat = ThreatModel(tier=Tier.NONE, text="no knowledge: the release is resized (thumbnails, re-uploads)")

    def scale(self, strength: float) -> float:
        return 1.0 + (self.params.min_scale - 1.0) * strength

    def parameter(self, strength: float) -> dict:
        return {"scale": round(self.scale(strength), 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        height, width = images.shape[-2:]
        small = (max(1, round(height * self.scale(strength))), max(1, round(width * self.scale(strength))))
        if small == (height, width):
            return images.clone()
        down = F.interpolate(images, size=small, mode="bilinear", align_corners=False, antialias=self.params.antialias)
        return F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False)
