"""The ``clean`` encoder: the identity, the baseline every other row is compared with."""

from __future__ import annotations

import torch

from nonxfer_bench.encoders.base import ENCODERS, IGNORED, Encoder, Encoding
from nonxfer_bench.zoo import ZooModel


@ENCODERS.register("clean")
class CleanEncoder(Encoder):
    """Releases the images unchanged (achieved PSNR is +inf); strength is ignored."""

    strength_unit = IGNORED
    secret = "Nothing: the images are released as they are, the control every protection is compared with."
    keyed = False
    in_unit_range = True
    storage_formats = ("float32", "png16", "png8", "jpeg")

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        return Encoding(images=images.clone(), achieved_psnr=torch.full((len(images),), float("inf")))
