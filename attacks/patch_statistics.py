"""Patch statistics: attacks on the reference recipe's one-vector-per-image structure.

The reference encoder adds the *same* noise vector n to every patch column of the stem's ``F.unfold``
and folds the result: in the authorized model's normalized space the release is
``r = count * x + F n``, where ``count`` is the number of windows covering each pixel (1 everywhere for
a non-overlapping stem) and ``F n = fold(n 1^T)`` is a pattern periodic with the stem's stride.
Two attacks use only that structure (no weights, no subspace):

- ``patch_mean``: least-squares estimate of n against a clean prior, then subtraction (and, for
  overlapping stems, division by the window count).
- ``lattice_notch``: a Fourier notch at the patch-lattice frequencies (no prior, no normalization).

Both run against any encoder; against the per-patch ``patch`` encoder (independent noise per tile, no
repetition) they should fail, and the benchmark measures that they do.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nonxfer_bench.attacks._subspace_tools import Lattice, LatticeParams, Ridge, covariance, not_fitted
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import BudgetParams, ThreatModel, Tier
from nonxfer_bench.core.params import MAX_KERNEL


class PatchMeanParams(LatticeParams, BudgetParams):
    prior: Literal["public", "released"] = Field(
        "public",
        description="clean prior mean from public images, or from the released images (noise averages out over images)",
    )
    estimator: Literal["mean", "wiener"] = Field(
        "mean", description="plain least squares, or Wiener-shrunk with the noise and clean covariances"
    )
    fold_gain: Literal["assume", "detect"] = Field(
        "assume",
        description=(
            "assume the reference's fold gain (window count) on the image, or detect it from the release's mean"
        ),
    )
    ridge: Ridge = Field(1e-6, description="relative ridge in the Wiener solve")


@ATTACKS.register("patch_mean")
class PatchMean(Attack):
    """Estimates the repeated noise vector from each image's patch mean and removes it.

    Model (the reference recipe, in the lattice model's normalized space): ``r = count * x + F n`` with
    ``F n = fold(n 1^T)`` over the lattice (kernel, stride, padding). The estimate is the least-squares
    ``n_hat = (F^T F)^-1 F^T (r - count * mu)``, with mu the clean prior's mean image (from
    ``public_images``; from the released images themselves with ``prior: released``, where the zero-mean
    noise averages out). For a non-overlapping lattice without padding this is exactly
    *patch mean of the image minus the prior mean patch*. The clean estimate is ``(r - F n_hat) / count``
    (pixels no window covers are kept), and the output is ``(1 - s) r + s x_hat`` in pixel units: strength
    s is the fraction of the estimated structure removed (0: identity, 1: full inversion).

    ``estimator: wiener`` (registered as ``patch_wiener``) shrinks the least-squares estimate
    n_ls = n + e by its second-order statistics: the clean error e's covariance S_e from the public images,
    the noise covariance S_n = cov(n_ls over the released sample) - S_e (negative eigenvalues clipped), and
    n_hat = S_n (S_n + S_e)^-1 n_ls. Where the release carries no repeated noise it leaves the image alone;
    where the noise lives in a subspace (the reference's V_N) it removes it there only.

    ``fold_gain: detect`` (``patch_wiener``'s default) decides whether the release carries the fold's
    window-count gain on the image (overlapping stems) by comparing the release's mean image with the prior
    mean with and without it; without the gain nothing is divided. ``assume`` always divides (the reference
    recipe). ``measured()`` reports the decision as ``fold_gain``.

    Lattice: explicit ``kernel``/``stride``/``padding`` (normalization then taken as identity, which is exact
    for non-overlapping lattices), or the stem geometry and normalization of ``geometry_model``, or by
    default of the authorized model's architecture. Unclipped inputs are used as they are; the output is
    unclipped. Needs :meth:`fit` (it raises otherwise).
    """

    Params = PatchMeanParams
    threat = ThreatModel(
        tier=Tier.ARCHITECTURE,
        text=(
            "knows the method and the authorized architecture's stem geometry and normalization (not its weights); "
            "holds clean public images for a prior mean"
        ),
        released=True,
        public=True,
    )

    def __init__(self, params: PatchMeanParams) -> None:
        super().__init__(params)
        self.lattice: Lattice | None = None
        self.prior: torch.Tensor | None = None
        self.shrink: torch.Tensor | None = None
        self.gain = True
        self._operators: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # by (image shape, device)

    def fit(self, context: AttackContext) -> None:
        self.lattice = Lattice.resolve(self.params, context)
        source = (
            context.public_images if self.params.prior == "public" and len(context.public_images) else context.released
        )
        self.prior = self._normalize(source.double()).mean(0, keepdim=True)
        self._operators = {}
        self.shrink = None
        self.gain = True
        if self.params.fold_gain == "detect":
            count, _ = self.operators(tuple(context.released.shape[1:]), context.released.device)
            released_mean = self._normalize(context.released.double()).mean(0, keepdim=True)
            with_gain = (released_mean - count * self.prior).pow(2).sum()
            without_gain = (released_mean - self.prior).pow(2).sum()
            self.gain = bool(with_gain < without_gain)
        if self.params.estimator == "wiener":
            noisy = covariance(self.least_squares(context.released))[1]
            clean = (
                covariance(self.least_squares(context.public_images))[1]
                if len(context.public_images) > 1
                else torch.zeros_like(noisy)
            )
            values, vectors = torch.linalg.eigh(noisy - clean)
            signal = (vectors * values.clamp_min(0)) @ vectors.T
            total = signal + clean
            total = total + self.params.ridge * float(torch.diagonal(total).mean() or 1.0) * torch.eye(
                len(total), dtype=total.dtype, device=total.device
            )
            self.shrink = torch.linalg.solve(total, signal)  # n_hat (row) = n_ls (row) @ (S_n + S_e)^-1 S_n

    def parameter(self, strength: float) -> dict:
        return {"removed": round(strength, 4)}

    def measured(self, strength: float) -> dict:
        """With ``fold_gain: detect``, the fold gain the fit detected on the release."""
        return {"fold_gain": self.gain} if self.params.fold_gain == "detect" and self.lattice is not None else {}

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        lattice = self.lattice
        if lattice.mean is None:
            return images
        return (images - lattice.mean.double().to(images.device)) / lattice.std.double().to(images.device)

    def _denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        lattice = self.lattice
        if lattice.mean is None:
            return tensor
        return tensor * lattice.std.double().to(tensor.device) + lattice.mean.double().to(tensor.device)

    def operators(self, shape: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain on the image 1 x C x H x W, F^T F as D x D) for an image shape, on ``device``, cached: the gain is
        the window count (the fold's), or ones where the release is not taken to carry it."""
        if (shape, device) not in self._operators:
            kwargs = self.lattice.geometry.unfold_kwargs()
            channels, height, width = shape
            ones = torch.ones(1, *shape, dtype=torch.float64, device=device)
            unfolded = F.unfold(ones, **kwargs)
            count = F.fold(unfolded, output_size=(height, width), **kwargs)
            d, windows = unfolded.shape[1:]
            basis = torch.eye(d, dtype=torch.float64, device=device).unsqueeze(-1).expand(d, d, windows)
            gram = F.unfold(F.fold(basis, output_size=(height, width), **kwargs), **kwargs).sum(-1)
            self._operators[(shape, device)] = (count, gram)
        count, gram = self._operators[(shape, device)]
        return (count if self.gain else (count > 0).to(count)), gram

    def least_squares(self, images: torch.Tensor) -> torch.Tensor:
        """n_ls = (F^T F)^-1 F^T (r - count * mu) per image (B x D), r the normalized images."""
        kwargs = self.lattice.geometry.unfold_kwargs()
        released = self._normalize(images.double())
        count, gram = self.operators(tuple(images.shape[1:]), images.device)
        prior = (
            self.prior.to(images.device)
            if self.prior.shape[1:] == released.shape[1:]
            else released.mean(0, keepdim=True)
        )
        residual = released - count * prior
        return torch.linalg.lstsq(gram, F.unfold(residual, **kwargs).sum(-1).T).solution.T

    def estimate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_hat per image, B x D; the clean estimate in normalized units)."""
        if self.lattice is None:
            raise not_fitted(self.name)
        kwargs = self.lattice.geometry.unfold_kwargs()
        released = self._normalize(images.double())
        count, _ = self.operators(tuple(images.shape[1:]), images.device)
        noise = self.least_squares(images)
        if self.shrink is not None:
            noise = noise @ self.shrink.to(noise.device)
        windows = F.unfold(count, **kwargs).shape[-1]
        pattern = F.fold(noise.unsqueeze(-1).expand(-1, -1, windows), output_size=images.shape[-2:], **kwargs)
        covered = count > 0
        clean = torch.where(covered, (released - pattern) / count.clamp_min(1), released)
        return noise, clean

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        _, clean = self.estimate(images)
        released = self._normalize(images.double())
        mixed = (1 - strength) * released + strength * clean
        return self._denormalize(mixed).to(images.dtype)


class PatchWienerParams(PatchMeanParams):
    estimator: Literal["mean", "wiener"] = "wiener"
    fold_gain: Literal["assume", "detect"] = "detect"


@ATTACKS.register("patch_wiener")
class PatchWiener(PatchMean):
    """``patch_mean`` with the Wiener-shrunk estimate and a detected fold gain (see ``patch_mean``)."""

    Params = PatchWienerParams
    threat = ThreatModel(
        tier=Tier.ARCHITECTURE,
        text=(
            "knows the method and the authorized architecture's stem geometry and normalization (not its weights); "
            "holds clean public images and the release for first and second moments"
        ),
        released=True,
        public=True,
    )


class NotchParams(LatticeParams, BudgetParams):
    width: int = Field(0, ge=0, le=MAX_KERNEL, description="notch half-width in DFT bins around each lattice frequency")
    dc: Literal["keep", "prior"] = Field(
        "prior", description="keep each image's mean, or move it toward the public images' mean (needs fit)"
    )


@ATTACKS.register("lattice_notch")
class LatticeNotch(Attack):
    """Fourier notch filter at the patch-lattice frequencies.

    A pattern periodic with the lattice stride (ph, pw) has its spectrum on the frequencies
    (a / ph, b / pw) cycles per pixel; the notch multiplies the 2-D DFT of every channel by (1 - s) at the
    bins nearest those frequencies (within ``width`` bins), except the DC bin, and inverts. At s = 1 and a
    lattice that divides the image, this removes exactly the image's periodic component (its tiled mean
    patch minus its mean). The repeated vector also shifts each image's mean (DC), which a notch cannot
    see: with ``dc: prior`` (after :meth:`fit`) the DC moves by s toward the public images' mean per
    channel (the release's mean without public images: the noise averages out over images); ``dc: keep``
    or no fit keeps it. No normalization: works in [0, 1] pixel units on unclipped values. Lattice as in
    ``patch_mean`` (explicit, ``geometry_model``, or the authorized architecture); needs :meth:`fit` unless
    ``kernel`` is given.
    """

    Params = NotchParams
    threat = ThreatModel(
        tier=Tier.ARCHITECTURE,
        text="knows the method and the authorized architecture's stem stride (the noise period); nothing else",
        released=True,
        public=True,
    )

    def __init__(self, params: NotchParams) -> None:
        super().__init__(params)
        self.lattice: Lattice | None = Lattice.resolve(params, None)
        self.prior_dc: torch.Tensor | None = None

    def fit(self, context: AttackContext) -> None:
        self.lattice = Lattice.resolve(self.params, context)
        source = context.public_images if len(context.public_images) else context.released
        self.prior_dc = source.double().mean(dim=(0, 2, 3)) if self.params.dc == "prior" and len(source) else None

    def parameter(self, strength: float) -> dict:
        return {"attenuation": round(strength, 4)}

    def mask(self, height: int, width: int) -> torch.Tensor:
        def axis(size: int, period: int) -> torch.Tensor:
            bins = torch.arange(size, dtype=torch.float64)
            step = size / period
            nearest = torch.round(bins / step) * step
            distance = (bins - nearest).abs()
            return distance <= self.params.width + 0.5 - 1e-9 if self.params.width else distance < 0.5

        mask = (
            axis(height, self.lattice.geometry.stride[0])[:, None]
            & axis(width, self.lattice.geometry.stride[1])[None, :]
        )
        mask[0, 0] = False
        return mask

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.lattice is None:
            raise not_fitted(self.name)
        spectrum = torch.fft.fft2(images.double())
        gain = torch.ones(images.shape[-2:], dtype=torch.float64)
        gain[self.mask(*images.shape[-2:])] = 1 - strength
        out = torch.fft.ifft2(spectrum * gain.to(images.device)).real
        if self.prior_dc is not None and len(self.prior_dc) == images.shape[1]:
            mean = images.double().mean(dim=(2, 3), keepdim=True)
            out = out + strength * (self.prior_dc.to(images.device).view(1, -1, 1, 1) - mean)
        return out.to(images.dtype)
