"""The ``reference`` encoder: the published recipe, reproduced exactly (see shared NE-NOTES).

Quirks kept on purpose, because the benchmark measures the published method:
- the noise lives in the authorized model's *normalized* input space and its size is set by a
  *nominal* PSNR with peak 255 (so nominal 0 dB is noise far larger than the image);
- one noise vector n is drawn per image and added to every patch column;
- ``F.fold`` sums overlapping windows, so for stems with stride < kernel the released image is not an
  image whose patches are U + n (clean content is multiplied by the window count); the authorized
  model is then evaluated, as in the published code, on the unfolded tensor through its stem
  (``Encoding.authorized_patches``), and every other model on the folded image;
- no clipping and no rounding: the output is an unclipped float tensor.
The result is converted back to [0, 1] pixel units at the boundary (x * std + mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from nonxfer_bench.encoders.base import ENCODERS, Encoder, Encoding
from nonxfer_bench.metrics import psnr_per_image
from nonxfer_bench.subspace import ConvGeometry, flatten_weight, patch_subspace
from nonxfer_bench.zoo import ZooModel


class ReferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tau: float = Field(1e-5, gt=0, description="singular-value threshold when the stem has no exact null space")


def reference_noise_add(
    patches: torch.Tensor, basis: torch.Tensor, nominal_psnr: float, generator: torch.Generator
) -> torch.Tensor:
    """Steps 4-5 of the recipe on an unfolded batch U (B x D x L): returns U + n 1^T."""
    batch, k = patches.shape[0], basis.shape[1]
    target = 255.0**2 / 10.0 ** (nominal_psnr / 10.0)
    z1 = torch.randn(batch, k, 1, generator=generator, device=patches.device)
    n1 = basis @ z1
    mu2 = (patches + n1).pow(2).mean(dim=(1, 2), keepdim=True)
    c = torch.sqrt(target / mu2)
    z2 = torch.randn(batch, k, 1, generator=generator, device=patches.device)
    noise = basis @ (c * z2)
    return patches + noise


@ENCODERS.register("reference")
class ReferenceEncoder(Encoder):
    """Published recipe: one low-sensitivity noise vector per image, repeated over all patches, folded."""

    Params = ReferenceParams
    strength_unit = "nominal PSNR (dB, peak 255 in the model's normalized space)"

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        conv = model.first_conv
        geometry = ConvGeometry.of(conv)
        subspace = patch_subspace(flatten_weight(conv), self.params.tau)
        normalized = model.normalize(images)
        unfolded = F.unfold(normalized, **geometry.unfold_kwargs())
        encoded = reference_noise_add(unfolded, subspace.basis.to(unfolded), strength, generator)
        folded = F.fold(encoded, output_size=normalized.shape[-2:], **geometry.unfold_kwargs())
        released = model.denormalize(folded)
        reference_psnr = 20 * torch.log10(255.0 / (folded - normalized).pow(2).mean().sqrt())
        return Encoding(
            images=released,
            achieved_psnr=psnr_per_image(images, released),
            authorized_patches=encoded if geometry.overlapping else None,
            info={"k": subspace.k, "sigma_s": subspace.sigma_s, "reference_psnr": float(reference_psnr)},
        )
