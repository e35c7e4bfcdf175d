"""Image-quality metrics (MSE, PSNR, SSIM) shared by encoders, attacks and the runner."""

from __future__ import annotations

import torch


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image in a batch (B,)."""
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


def psnr_per_image(reference: torch.Tensor, image: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Standard PSNR in dB of each image against its reference, peak 1 for [0, 1] pixels."""
    mse = mse_per_image(reference, image)
    return torch.where(mse > 0, 10.0 * torch.log10(peak**2 / mse), torch.full_like(mse, float("inf")))


def noise_scale_for_psnr(noise: torch.Tensor, target_psnr: float, peak: float = 1.0) -> torch.Tensor:
    """Per-image factor that gives ``noise`` exactly the mean squared value of ``target_psnr``."""
    target_mse = peak**2 / 10.0 ** (target_psnr / 10.0)
    power = noise.double().pow(2).flatten(1).mean(1).clamp_min(1e-30)
    return (target_mse / power).sqrt().to(noise.dtype).view(-1, *([1] * (noise.dim() - 1)))


def ssim_per_image(reference: torch.Tensor, image: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of each image against its reference, both clipped to [0, 1] (kornia, Gaussian window)."""
    from kornia.metrics import (
        ssim,
    )  # heavy (~0.6 s): only SSIM needs kornia; encoders and attacks import this module for PSNR

    side = min(reference.shape[-2:])
    window = min(window, side if side % 2 else side - 1)
    return ssim(reference.clamp(0, 1).float(), image.clamp(0, 1).float(), window).flatten(1).mean(1)
