"""Lossy storage: JPEG through libjpeg (PIL) and through kornia's differentiable codec; bit-depth cuts."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from nonxfer_bench.attacks.base import ATTACKS, Attack, to_unit_range
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict


class JpegParams(Strict):
    max_quality: int = Field(95, ge=1, le=100, description="quality at strength 0")
    min_quality: int = Field(5, ge=1, le=100, description="quality at strength 1")
    range: Literal["minmax", "clip"] = Field("minmax", description="how unclipped images enter 8 bits")


def jpeg_quality(params: JpegParams, strength: float) -> int:
    return round(params.max_quality + (params.min_quality - params.max_quality) * strength)


@ATTACKS.register("jpeg_pil")
class JpegPil(Attack):
    """JPEG with libjpeg via PIL. As in the reference: each image min-max rescaled to 0..255, uint8,
    encoded and decoded, mapped back (``range: clip`` clamps to [0, 1] instead). Quality goes from
    ``max_quality`` (strength 0) to ``min_quality`` (strength 1)."""

    Params = JpegParams
    threat = ThreatModel(
        tier=Tier.NONE, text="no knowledge: the release is re-encoded as JPEG (a platform upload, a careless copy)"
    )
    cpu_only = True

    def parameter(self, strength: float) -> dict:
        return {"quality": jpeg_quality(self.params, strength)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        quality = jpeg_quality(self.params, strength)
        unit, low, scale = to_unit_range(images, self.params.range)
        pixels = (unit * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = []
        for pixel in pixels:
            buffer = io.BytesIO()
            Image.fromarray(pixel.squeeze(-1) if pixel.shape[-1] == 1 else pixel).save(
                buffer, format="JPEG", quality=quality
            )
            array = np.asarray(Image.open(buffer))
            decoded.append(array.reshape(pixel.shape))
        out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images) / 255.0
        return out * scale + low


@ATTACKS.register("jpeg_kornia")
class JpegKornia(Attack):
    """JPEG through kornia's differentiable codec (same quality mapping and range handling as
    ``jpeg_pil``); grayscale is coded as equal RGB channels and averaged back."""

    Params = JpegParams
    threat = ThreatModel(
        tier=Tier.NONE, text="no knowledge: differentiable JPEG, the codec an adaptive attacker would backprop through"
    )

    def parameter(self, strength: float) -> dict:
        return {"quality": jpeg_quality(self.params, strength)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        # heavy (~0.7 s): kornia only when the attack runs; every run and `list attacks` import all attack modules
        from kornia.enhance import jpeg_codec_differentiable

        unit, low, scale = to_unit_range(images, self.params.range)
        channels = unit.shape[1]
        rgb = unit.expand(-1, 3, -1, -1) if channels == 1 else unit
        quality = torch.tensor([float(jpeg_quality(self.params, strength))], device=images.device)
        coded = jpeg_codec_differentiable(rgb.contiguous(), quality).clamp(0, 1)
        out = coded.mean(1, keepdim=True) if channels == 1 else coded
        return out * scale + low


class QuantizeParams(Strict):
    max_bits: int = Field(8, ge=1, le=16, description="bit depth at strength 0")
    min_bits: int = Field(1, ge=1, le=16, description="bit depth at strength 1")
    range: Literal["minmax", "clip"] = Field("clip", description="'clip' is what an integer image file stores")


@ATTACKS.register("quantize")
class Quantize(Attack):
    """Uniform quantization to a bit depth: 8 bits (an 8-bit PNG) at strength 0 down to ``min_bits``
    at strength 1. By default values are clipped to [0, 1] first, as storing an integer image does."""

    Params = QuantizeParams
    threat = ThreatModel(tier=Tier.NONE, text="no knowledge: the release is stored as an integer image")

    def bits(self, strength: float) -> int:
        return round(self.params.max_bits + (self.params.min_bits - self.params.max_bits) * strength)

    def parameter(self, strength: float) -> dict:
        return {"bits": self.bits(strength)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        levels = 2 ** self.bits(strength) - 1
        unit, low, scale = to_unit_range(images, self.params.range)
        return (unit * levels).round() / levels * scale + low
