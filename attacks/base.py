"""The attack interface: a released batch in, an attacked batch out, one common strength axis.

A contributor writes one class: declare ``Params`` (pydantic), map the common strength in [0, 1]
to the attack's own parameter in ``parameter``, and transform images in ``forward``. Strength 0 is
the mildest setting, 1 the harshest. Images are float [0, 1]-unit batches (B x C x H x W) that may be
unclipped (the reference encoder releases unclipped floats); the attack decides what it does with
out-of-range values and says so in its docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from nonxfer_bench.registry import NoParams, Registry

ATTACKS: Registry["Attack"] = Registry(
    "attack",
    (
        "nonxfer_bench.attacks.identity",
        "nonxfer_bench.attacks.compression",
        "nonxfer_bench.attacks.resampling",
        "nonxfer_bench.attacks.filtering",
        "nonxfer_bench.attacks.occlusion",
    ),
    "nonxfer_bench.attacks",
)


class Attack(ABC):
    """A registered attack; ``threat_model`` states what the attacker knows and uses."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    threat_model: ClassVar[str] = "no knowledge: a fixed transformation of the released images"

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def parameter(self, strength: float) -> dict[str, Any]:
        """The attack's own parameter(s) at a common strength, for logs and tables."""
        return {}

    @abstractmethod
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        """Attack a batch; must keep its shape and dtype."""

    def __call__(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"{self.name}: strength {strength} outside [0, 1]")
        return self.forward(images, strength, generator)


def to_unit_range(images: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map images into [0, 1] for 8-bit codecs: 'clip' clamps; 'minmax' rescales each image (reference).

    Returns the mapped images and the per-image (low, scale) to undo the mapping.
    """
    if mode == "clip":
        low = torch.zeros(len(images), 1, 1, 1, dtype=images.dtype, device=images.device)
        return images.clamp(0, 1), low, torch.ones_like(low)
    flat = images.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    scale = (flat.max(1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-12)
    return (images - low) / scale, low, scale
