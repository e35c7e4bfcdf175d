"""``identity``: no attack; the row that shows what the NE itself does."""

from __future__ import annotations

import torch

from nonxfer_bench.attacks.base import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier


@ATTACKS.register("identity")
class Identity(Attack):
    """Returns the released images unchanged."""

    threat = ThreatModel(tier=Tier.NONE, text="none: the released images as they are")
    baseline = True

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        return images.clone()
