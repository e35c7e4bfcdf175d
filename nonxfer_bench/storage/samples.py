"""Sample grids: clean vs NE vs attacked images, one labelled row each, for eyes rather than tables."""

from __future__ import annotations

from pathlib import Path

import torch

from nonxfer_bench.core.atomic import atomic_path


def for_display(images: torch.Tensor) -> torch.Tensor:
    """Map possibly unclipped images into [0, 1]: clamp if they are nearly in range, else min-max per image."""
    low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
    in_range = (low > -0.25) & (high < 1.25)
    rescaled = (images - low) / (high - low).clamp_min(1e-12)
    return torch.where(in_range, images.clamp(0, 1), rescaled)


def sample_file(run_dir: Path, label: str) -> Path:
    """Where an encoding group's sample grid lives: ``<run dir>/samples/<label with / as __>.png``."""
    return run_dir / "samples" / f"{label.replace('/', '__')}.png"


def save_sample_grid(rows: dict[str, torch.Tensor], path: Path, count: int) -> Path:
    """Save one row of ``count`` images per named batch (rows labelled on the left) as a PNG."""
    # heavy (~0.8 s): matplotlib only when a grid is drawn, and Agg is chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, *(len(batch) for batch in rows.values()))
    figure, axes = plt.subplots(len(rows), count, figsize=(1.1 * count + 1.2, 1.1 * len(rows)), squeeze=False)
    for row, (label, batch) in enumerate(rows.items()):
        shown = for_display(batch[:count].float().cpu())
        for col in range(count):
            axis = axes[row][col]
            image = shown[col].permute(1, 2, 0).numpy()
            axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:  # a unique temporary name: concurrent writers never collide
            figure.savefig(temporary, dpi=80, format="png")
    finally:
        plt.close(figure)
    return path
