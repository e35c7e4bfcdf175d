"""``cutout``: a random square of each image set to zero (the reference's cutout)."""

from __future__ import annotations

import torch
from pydantic import Field

from nonxfer_bench.attacks.base import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict


class CutoutParams(Strict):
    max_fraction: float = Field(0.5, gt=0, le=1, description="square side / shorter image side at strength 1")


@ATTACKS.register("cutout")
class Cutout(Attack):
    """Zeroes one square per image at a position drawn from the seeded generator; side grows with strength."""

    Params = CutoutParams
    threat = ThreatModel(tier=Tier.NONE, text="no knowledge: occlusion (crops, overlays, watermarks)")

    def side(self, strength: float, height: int, width: int) -> int:
        return round(strength * self.params.max_fraction * min(height, width))

    def parameter(self, strength: float) -> dict:
        return {"fraction": round(strength * self.params.max_fraction, 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        height, width = images.shape[-2:]
        side = self.side(strength, height, width)
        out = images.clone()
        if side == 0:
            return out
        tops = torch.randint(0, height - side + 1, (len(images),), generator=generator, device=generator.device)
        lefts = torch.randint(0, width - side + 1, (len(images),), generator=generator, device=generator.device)
        for image, top, left in zip(out, tops.tolist(), lefts.tolist()):
            image[:, top : top + side, left : left + side] = 0
        return out
