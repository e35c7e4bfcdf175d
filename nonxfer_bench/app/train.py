"""``train zoo`` and ``train diffusion``: the zoo's file-weight models, or a DDPM that purification attacks use."""

from __future__ import annotations

from pathlib import Path

from nonxfer_bench.app.compute import resolved_settings, set_threads
from nonxfer_bench.generative.diffusion import load_diffusion_spec, train_and_publish
from nonxfer_bench.training import train_zoo


def zoo(zoo_file: Path, fresh: bool, only: list[str] | None, threads: int | None) -> int:
    """``train zoo``: the models of ``zoo_file`` whose weights are missing (all with ``fresh``, or ``only`` these)."""
    set_threads(threads)
    cards = train_zoo(zoo_file, fresh=fresh, only=only)
    print(f"trained {len(cards)} model(s)" if cards else "all weights present (use --fresh to retrain)")
    return 0


def diffusion(
    config: Path, steps: int | None, device: str | None, max_seconds: float | None, threads: int | None
) -> int:
    """``train diffusion``: the DDPM of ``config`` trained and published, with its purification PSNR."""
    spec = load_diffusion_spec(config, train_steps=steps)  # everything validated before any write
    settings = resolved_settings(device, None, threads)  # a device this machine lacks: one line before any write
    card, quality = train_and_publish(spec, device=settings.device, max_seconds=max_seconds)
    print(f"wrote {card}; purification PSNR by t*/T: {quality}")
    return 0
