"""Classical denoisers: median (kornia), total variation (kornia's TV by gradient steps), non-local means
(scikit-image). No knowledge of the method or the models: what a careful user would try first.

Unclipped releases are denoised as they are (no clipping). TV and NL-means are scale-equivariant
here: their smoothing weights are relative to each image's own scale (its standard deviation for TV,
its estimated noise level for NL-means), so the same strength means the same thing on a clean image and
on a release hundreds of times larger than it.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from skimage.restoration import denoise_nl_means

from nonxfer_bench.attacks.base import ATTACKS, Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import MAX_ITERATIONS, MAX_LR, Strict


class MedianParams(Strict):
    max_kernel: int = Field(7, ge=3, le=31, description="odd window side at strength 1 (strength 0 is 1: identity)")


@ATTACKS.register("denoise_median")
class DenoiseMedian(Attack):
    """Median filter (kornia ``median_blur``, reflect borders); window side 1 -> ``max_kernel`` (odd) with strength."""

    Params = MedianParams
    threat = ThreatModel(
        tier=Tier.NONE, text="no knowledge: a median filter removes impulsive and high-frequency noise"
    )

    def kernel(self, strength: float) -> int:
        return 1 + 2 * round(strength * (self.params.max_kernel - 1) / 2)

    def parameter(self, strength: float) -> dict:
        return {"kernel": self.kernel(strength)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        # heavy (~0.7 s): kornia only when the attack runs; every run and `list attacks` import all attack modules
        from kornia.filters import median_blur

        size = self.kernel(strength)
        if size == 1:
            return images.clone()
        return median_blur(images, (size, size), border_type="reflect")


class TvParams(Strict):
    max_weight: float = Field(
        0.5, gt=0, le=1e3, description="TV weight at strength 1, relative to each image's standard deviation"
    )
    steps: int = Field(100, ge=1, le=MAX_ITERATIONS, description="Adam steps")
    lr: float = Field(
        0.02, gt=0, le=MAX_LR, description="Adam learning rate, in units of each image's standard deviation"
    )


@ATTACKS.register("denoise_tv")
class DenoiseTv(Attack):
    """Total-variation denoising (kornia ``total_variation``, Adam steps), weight s x ``max_weight`` x image std.

    Minimizes 0.5 ||u - y||^2 + w TV(u) per image (anisotropic TV) by ``steps`` Adam steps from u = y, with
    w = s x ``max_weight`` in units of the image's standard deviation (images are standardized per image,
    denoised, and mapped back)."""

    Params = TvParams
    threat = ThreatModel(
        tier=Tier.NONE, text="no knowledge: total-variation smoothing keeps edges and removes texture-like noise"
    )

    def parameter(self, strength: float) -> dict:
        return {"weight": round(strength * self.params.max_weight, 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        from kornia.losses import total_variation  # heavy (~0.7 s), as in DenoiseMedian.forward

        weight = strength * self.params.max_weight
        if weight == 0:
            return images.clone()
        center = images.mean(dim=(1, 2, 3), keepdim=True)
        scale = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        target = ((images - center) / scale).detach()
        with torch.enable_grad():
            u = target.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([u], lr=self.params.lr)
            for _ in range(self.params.steps):
                optimizer.zero_grad()
                loss = 0.5 * (u - target).pow(2).sum() + weight * total_variation(u).sum()
                loss.backward()
                optimizer.step()
        return (u.detach() * scale + center).to(images.dtype)


class NlmParams(Strict):
    max_h: float = Field(
        1.5, gt=0, le=1e3, description="filter strength h at strength 1, in units of the estimated noise sigma"
    )
    patch_size: int = Field(5, ge=1, le=64)
    patch_distance: int = Field(6, ge=1, le=64)


def noise_sigma(image: np.ndarray) -> float:
    """Robust noise level of an (H, W[, C]) image: 1.4826 x median |Haar HH| over 2x2 blocks (Donoho's MAD)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    x = image[:h, :w]
    hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
    return float(1.4826 * np.median(np.abs(hh)))


@ATTACKS.register("denoise_nlm")
class DenoiseNlm(Attack):
    """Non-local means (scikit-image), h = s x ``max_h`` x each image's estimated noise sigma.

    ``denoise_nl_means`` in fast mode; sigma is each image's MAD noise estimate (also passed as ``sigma``);
    per image on the CPU."""

    Params = NlmParams
    threat = ThreatModel(
        tier=Tier.NONE,
        text="no knowledge: non-local means averages similar patches (repeated noise patterns are similar too)",
    )
    cpu_only = True

    def parameter(self, strength: float) -> dict:
        return {"h_over_sigma": round(strength * self.params.max_h, 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        factor = strength * self.params.max_h
        if factor == 0:
            return images.clone()
        arrays = images.detach().double().permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arrays)
        for i, array in enumerate(arrays):
            single = array[..., 0] if array.shape[-1] == 1 else array
            sigma = noise_sigma(single)
            scale = float(np.std(single)) or 1.0
            sigma = sigma if sigma > 1e-6 * scale else 1e-3 * scale
            denoised = denoise_nl_means(
                single,
                h=factor * sigma,
                sigma=sigma,
                patch_size=self.params.patch_size,
                patch_distance=self.params.patch_distance,
                fast_mode=True,
                channel_axis=None if array.shape[-1] == 1 else -1,
            )
            out[i] = denoised.reshape(array.shape)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(images)
