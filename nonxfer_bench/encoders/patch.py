"""The ``patch`` encoder: pixel-domain noise in the first layer's low-sensitivity subspace, per patch.

The image is tiled into non-overlapping kernel-sized tiles that sit exactly where the first layer's
windows sit for a non-overlapping stem (stride == kernel, same padding offset). Each tile of each
image gets its own draw V_N z (z ~ N(0, I_k), from the keyed generator), where V_N is the
low-sensitivity basis of W_eff = W diag(1/std) (the first layer seen from [0, 1] pixels). The noise
is then scaled per image so that the standard PSNR (peak 1) equals the target exactly.

For non-overlapping stems every window of the authorized layer sees only V_N noise, so the first
layer changes by at most sigma_S per unit of noise. For overlapping stems (stride < kernel) only the
windows aligned with the tiling see pure V_N noise; the others straddle tiles and see mixtures that
are not in the subspace, so the authorized model is *not* protected from the noise. That is a
property of the per-patch construction, measured as such; the operator-level encoder is the answer for
those stems. Pixels outside the tiling (the remainder rows/columns) receive no noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from nonxfer_bench.core.device import generator_on
from nonxfer_bench.core.params import Strict
from nonxfer_bench.encoders.base import ENCODERS, MAX_TAU, Encoder, Encoding
from nonxfer_bench.linalg.subspace import DEFAULT_TAU, NoiseSubspace, PatchSubspace, patch_subspace
from nonxfer_bench.metrics.image_quality import noise_scale_for_psnr, psnr_per_image
from nonxfer_bench.zoo import ZooModel


class PatchParams(Strict):
    tau: float = Field(
        DEFAULT_TAU, gt=0, le=MAX_TAU, description="singular-value threshold when the stem has no exact null space"
    )


@ENCODERS.register("patch")
class PatchEncoder(Encoder):
    """Independent low-sensitivity noise per patch tile, exact standard PSNR per image."""

    Params = PatchParams
    secret = (
        "The authorized model's first layer: the noise lies in its low-sensitivity patch subspace; the release "
        "assumes attackers hold neither that layer nor a model whose first layer shares the subspace."
    )
    storage_formats = (
        "float32",
        "png16",
        "png8",
    )  # clipping costs the authorized model at low PSNR: encode reports what it kept
    CACHED = (
        8  # subspaces kept (one per first layer an encoder instance meets: the authorized model, an attacker's stems)
    )

    def __init__(self, params: PatchParams) -> None:
        super().__init__(params)
        self._subspaces: list[
            tuple[torch.Tensor, PatchSubspace, dict[tuple, torch.Tensor]]
        ] = []  # (W_eff, subspace, bases)

    def subspace(self, model: ZooModel, images: torch.Tensor) -> tuple[PatchSubspace, torch.Tensor]:
        """:func:`~nonxfer_bench.linalg.subspace.pixel_space_subspace` of the model and its basis in the images' device
        and dtype, the SVD made
        once per first layer (keyed by W_eff's values, so a changed or another layer gets its own) and the basis
        converted once per device."""
        weight = model.pixel_weight(torch.float32)
        entry = next(
            (
                e
                for e in self._subspaces
                if e[0].shape == weight.shape and e[0].device == weight.device and torch.equal(e[0], weight)
            ),
            None,
        )
        if entry is None:
            entry = (weight, patch_subspace(weight, self.params.tau), {})
            self._subspaces = [entry, *self._subspaces[: self.CACHED - 1]]
        _, subspace, bases = entry
        key = (images.device, images.dtype)
        if key not in bases:
            bases[key] = subspace.basis.to(images)
        return subspace, bases[key]

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        subspace, basis = self.subspace(model, images)
        tiles = model.geometry.tiling().unfold_kwargs()
        count = F.unfold(images[:1], **tiles).shape[-1]
        z = torch.randn(
            len(images), subspace.k, count, generator=generator_on(generator, images.device), device=images.device
        )
        noise = F.fold(basis @ z, output_size=images.shape[-2:], **tiles)
        released = images + noise * noise_scale_for_psnr(noise, strength)
        return Encoding(
            images=released,
            achieved_psnr=psnr_per_image(images, released),
            info={"k": subspace.k, "sigma_s": subspace.sigma_s},
        )

    def noise_subspace(self, model: ZooModel) -> NoiseSubspace:
        """W_eff's subspace. The bounds build W_eff in float64 and round it once to float32 (the encoder rounds
        each float32 product): the same directions to float32 precision, kept so committed numbers reproduce."""
        return NoiseSubspace.pixel(model, self.params.tau)
