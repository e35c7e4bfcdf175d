"""Metrics: image quality (PSNR, SSIM), classification outcomes and their statistics."""
