"""The ``reference`` encoder: the published recipe, reproduced exactly (see shared NE-NOTES).

Quirks kept on purpose, because the benchmark measures the published method:
- the noise lives in the authorized model's *normalized* input space and its size is set by a
  *nominal* PSNR with peak 255 (so nominal 0 dB is noise far larger than the image);
- one noise vector n is drawn per image and added to every patch column;
- ``F.fold`` sums overlapping windows, so for stems with stride < kernel the released image is not an
  image whose patches are U + n (clean content is multiplied by the window count); the authorized
  model is then evaluated, as in the published code, on the unfolded tensor through its stem
  (``Encoding.flat_input``), and every other model on the folded image;
- no clipping and no rounding: the output is an unclipped float tensor.
The result is converted back to [0, 1] pixel units at the boundary (x * std + mean).

:func:`encode_unfolded` is the literal recipe, kept as the specification that tests and benchmarks compare
against. The encoder itself never materializes the unfolded tensor: stems whose windows tile the image
(ViT/ConvNeXt patchify stems) take :func:`encode_tiled` (one broadcast add), every other stem
:func:`encode_strided` (one strided add per kernel offset); both make the same draws in the same order and
equal the literal recipe up to float rounding (about 1e-6 relative).
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from nonxfer_bench.core.params import Strict
from nonxfer_bench.encoders.base import ENCODERS, MAX_TAU, Encoder, Encoding
from nonxfer_bench.linalg.flat_input import FlatInput
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.subspace import DEFAULT_TAU, NoiseSubspace, PatchSubspace, flatten_weight, patch_subspace
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.zoo import ZooModel


class ReferenceParams(Strict):
    tau: float = Field(
        DEFAULT_TAU, gt=0, le=MAX_TAU, description="singular-value threshold when the stem has no exact null space"
    )


def reference_noise(
    basis: torch.Tensor,
    mean_square: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    nominal_psnr: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Step 4 of the recipe: the noise vector n (B x D x 1) that is added to every patch column.

    ``mean_square(n1)`` is mu2, the per-image mean of (U + n1 1^T)^2 (B x 1 x 1), computed by the caller
    in whatever layout it holds U. z1 and z2 are drawn in the published order from the keyed generator
    (on its device, one call each per batch) and moved to the basis's device.
    """
    k = basis.shape[1]
    target = 255.0**2 / 10.0 ** (nominal_psnr / 10.0)
    z1 = torch.randn(batch, k, 1, generator=generator, device=generator.device).to(basis.device)
    mu2 = mean_square(basis @ z1)
    c = torch.sqrt(target / mu2)
    z2 = torch.randn(batch, k, 1, generator=generator, device=generator.device).to(basis.device)
    return basis @ (c * z2)


def encode_unfolded(
    normalized: torch.Tensor,
    geometry: ConvGeometry,
    basis: torch.Tensor,
    nominal_psnr: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward recipe (unfold, add, fold): returns the folded image and U + n 1^T."""
    unfolded = F.unfold(normalized, **geometry.unfold_kwargs())
    noise = reference_noise(
        basis,
        lambda n1: (unfolded + n1).pow(2).mean(dim=(1, 2), keepdim=True),
        len(normalized),
        nominal_psnr,
        generator,
    )
    encoded = unfolded + noise
    return F.fold(encoded, output_size=normalized.shape[-2:], **geometry.unfold_kwargs()), encoded


def tiles_exactly(geometry: ConvGeometry, size: tuple[int, int]) -> bool:
    """True when the stem's windows tile the image: stride == kernel, no padding or dilation, sizes divisible."""
    return (
        geometry.stride == geometry.kernel_size
        and geometry.padding == (0, 0)
        and geometry.dilation == (1, 1)
        and all(n % k == 0 for n, k in zip(size, geometry.kernel_size))
    )


def window_views(
    padded: torch.Tensor, geometry: ConvGeometry, rows: int, cols: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """For each kernel offset (i, j), the strided view of ``padded`` holding that offset's pixel of every window."""
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel_size, geometry.stride, geometry.dilation
    for i in range(kh):
        for j in range(kw):
            yield (
                i,
                j,
                padded[..., dh * i : dh * i + sh * (rows - 1) + 1 : sh, dw * j : dw * j + sw * (cols - 1) + 1 : sw],
            )


def encode_strided(
    normalized: torch.Tensor,
    geometry: ConvGeometry,
    basis: torch.Tensor,
    nominal_psnr: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same recipe for any stem without materializing the unfolded tensor; returns the folded image and n.

    fold(U + n 1^T) = x * m + fold(n 1^T), with m the number of windows covering each pixel; fold(n 1^T)
    adds n's entry for offset (i, j) at that offset's pixel of every window: one strided add per kernel
    offset. mu2 comes from sum_l ||u_l||^2 = sum x^2 m and the patch sum s (one strided sum per offset).
    Same draws in the same order as :func:`encode_unfolded`; sums differ from it by float rounding.
    """
    batch, channels, height, width = normalized.shape
    (kh, kw), (ph, pw) = geometry.kernel_size, geometry.padding
    rows, cols = geometry.windows(height, width)
    padded = F.pad(normalized, (pw, pw, ph, ph))
    coverage = torch.zeros(padded.shape[-2:], dtype=normalized.dtype, device=normalized.device)
    patch_sum = normalized.new_empty(batch, channels, kh, kw)
    for i, j, view in window_views(padded, geometry, rows, cols):
        patch_sum[:, :, i, j] = view.sum((-2, -1))
    for _, _, view in window_views(coverage, geometry, rows, cols):
        view += 1
    square = (padded.pow(2) * coverage).sum((1, 2, 3)).view(batch, 1, 1)
    count, size = rows * cols, channels * kh * kw
    patch_sum = patch_sum.view(batch, 1, size)

    def mean_square(n1: torch.Tensor) -> torch.Tensor:
        return (square + 2 * torch.bmm(patch_sum, n1) + count * n1.pow(2).sum(1, keepdim=True)) / (size * count)

    noise = reference_noise(basis, mean_square, batch, nominal_psnr, generator)
    tile = noise.view(batch, channels, kh, kw, 1, 1)
    out = padded * coverage
    for i, j, view in window_views(out, geometry, rows, cols):
        view += tile[:, :, i, j]
    return out[..., ph : ph + height, pw : pw + width], noise


def encode_tiled(
    normalized: torch.Tensor,
    geometry: ConvGeometry,
    basis: torch.Tensor,
    nominal_psnr: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The same recipe for a stem whose windows tile the image, with no unfold, fold or patch copy.

    Adding n 1^T to every patch is adding one (C, kh, kw) tile everywhere: the image viewed as bands of
    kh rows (B, C, H/kh, kh, W) plus the tile repeated along a band's width (B, C, 1, kh, W), broadcast.
    mu2 comes from two sufficient statistics read once, ||x||^2 and the patch sum s = sum_l u_l:
    sum_l ||u_l + n1||^2 = ||x||^2 + 2 s.n1 + L ||n1||^2. Same draws in the same order as
    :func:`encode_unfolded`; the sums differ from it by float rounding.
    """
    normalized = normalized.contiguous()
    batch, channels, height, width = normalized.shape
    kh, kw = geometry.kernel_size
    count = (height // kh) * (width // kw)
    flat = normalized.view(batch, 1, -1)
    square = torch.bmm(flat, flat.transpose(1, 2))  # B x 1 x 1
    bands = normalized.view(batch * channels, height // kh, kh * width)
    patch_sum = bands.sum(1).view(batch, channels, kh, width // kw, kw).sum(3).reshape(batch, 1, -1)  # B x 1 x D

    def mean_square(n1: torch.Tensor) -> torch.Tensor:
        return (square + 2 * torch.bmm(patch_sum, n1) + count * n1.pow(2).sum(1, keepdim=True)) / flat.shape[-1]

    noise = reference_noise(basis, mean_square, batch, nominal_psnr, generator)
    band = (
        noise.view(batch, channels, kh, 1, kw)
        .expand(-1, -1, -1, width // kw, -1)
        .reshape(batch, channels, 1, kh, width)
    )
    return (normalized.view(batch, channels, height // kh, kh, width) + band).view(batch, channels, height, width)


@ENCODERS.register("reference")
class ReferenceEncoder(Encoder):
    """Published recipe: one low-sensitivity noise vector per image, repeated over all patches, folded."""

    Params = ReferenceParams
    strength_unit = "nominal PSNR (dB, peak 255 in the model's normalized space)"
    storage_formats = ("float32",)  # its unclipped values lie far outside [0, 1]: every image format clips them away
    secret = (
        "The authorized model's first layer: one vector of its patch null space per image, repeated over every patch; "
        "the release assumes attackers hold neither that layer nor a model whose first layer shares the null space."
    )

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        # per first layer: one SVD per group, not per batch; keyed by the layer itself (weakly), never by an id a
        # freed layer's successor could reuse
        self._subspaces: weakref.WeakKeyDictionary[nn.Module, PatchSubspace] = weakref.WeakKeyDictionary()

    def subspace(self, model: ZooModel) -> PatchSubspace:
        """The low-sensitivity subspace of the model's (normalized-space) W, one SVD per first layer."""
        conv = model.first_conv
        if conv not in self._subspaces:
            self._subspaces[conv] = patch_subspace(flatten_weight(conv), self.params.tau)
        return self._subspaces[conv]

    def noise_subspace(self, model: ZooModel) -> NoiseSubspace:
        return NoiseSubspace.normalized(model, self.subspace(model), folded=True)

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        geometry = model.geometry
        basis = self.subspace(model)
        normalized = model.normalize(images)
        flat_input = None
        if tiles_exactly(geometry, normalized.shape[-2:]):
            folded = encode_tiled(normalized, geometry, basis.basis.to(normalized), strength, generator)
        else:
            folded, noise = encode_strided(normalized, geometry, basis.basis.to(normalized), strength, generator)
            flat_input = FlatInput(normalized, noise, geometry)
        released = model.denormalize(folded)
        reference_psnr = 20 * torch.log10(255.0 / (folded - normalized).pow(2).mean().sqrt())
        return Encoding(
            images=released,
            achieved_psnr=psnr_per_image(images, released),
            flat_input=flat_input if geometry.overlapping else None,
            info={"k": basis.k, "sigma_s": basis.sigma_s, "reference_psnr": float(reference_psnr)},
        )
