# my_protections/uniform.py
import torch
from pydantic import Field

from nonxfer_bench.core.device import generator_on
from nonxfer_bench.core.params import Strict
from nonxfer_bench.encoders.base import Encoder, Encoding
from nonxfer_bench.metrics.image_quality import noise_scale_for_psnr, psnr_per_image
from nonxfer_bench.zoo import ZooModel


class UniformParams(Strict):
    shared: bool = Field(False, description="one noise image for all channels (colour-free noise)")


class UniformEncoder(Encoder):
    """Adds uniform noise scaled per image to the target standard PSNR; ignores the model."""

    Params = UniformParams
    secret = "Only the noise draws: noise blind to the model, a control for image damage at a matched standard PSNR."

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        shape = (len(images), 1, *images.shape[2:]) if self.params.shared else images.shape
        noise = torch.rand(shape, generator=generator_on(generator, images.device), device=images.device) - 0.5
        released = images + noise.expand_as(images) * noise_scale_for_psnr(noise, strength)
        return Encoding(images=released, achieved_psnr=psnr_per_image(images, released))
