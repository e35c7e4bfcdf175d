"""The ``gaussian`` encoder: i.i.d. pixel noise at an exact standard PSNR, the untargeted baseline."""

from __future__ import annotations

import torch

from nonxfer_bench.core.device import generator_on
from nonxfer_bench.encoders.base import ENCODERS, Encoder, Encoding
from nonxfer_bench.metrics.image_quality import noise_scale_for_psnr, psnr_per_image
from nonxfer_bench.zoo import ZooModel


@ENCODERS.register("gaussian")
class GaussianEncoder(Encoder):
    """Adds white Gaussian noise scaled per image to the target standard PSNR; ignores the model."""

    secret = (
        "Only the noise draws: white noise blind to the model, the control for image damage at a matched standard PSNR."
    )
    storage_formats = ("float32", "png16", "png8")

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        noise = torch.randn(images.shape, generator=generator_on(generator, images.device), device=images.device)
        released = images + noise * noise_scale_for_psnr(noise, strength)
        return Encoding(images=released, achieved_psnr=psnr_per_image(images, released))
