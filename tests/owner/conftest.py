"""A data owner's folder: Fashion-MNIST test images exported as PNG files into class folders, and the committed zoo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from nonxfer_bench.datasets.base import DATASETS

ROOT = Path(__file__).resolve().parents[2]
FASHION_ZOO = ROOT / "suites" / "zoo" / "fashion.yaml"
NE_V1 = ROOT / "suites" / "protocols" / "ne-v1.yaml"


def export(
    folder: Path, count: int, name=lambda classes, label: classes[label].replace("/", "-"), seed: int = 0
) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """``count`` seeded Fashion-MNIST test images as 28 px PNGs in ``folder/<name(classes, label)>/<index>.png``;
    returns the folder, the images (uint8, in the sorted order of their paths) and their true labels."""
    data = DATASETS.create("fashion_mnist", {"split": "test"}).load().subset(count, seed=seed)
    rows = []
    for index, (image, label) in enumerate(zip(data.images, data.labels)):
        target = folder / name(data.classes, int(label)) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(target)
        rows.append((target.relative_to(folder).as_posix(), image, int(label)))
    rows.sort(key=lambda row: row[0])
    return folder, torch.stack([image for _, image, _ in rows]), torch.tensor([label for _, _, label in rows])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """24 Fashion-MNIST test images in folders named by their class names ('T-shirt/top' as 'T-shirt-top')."""
    return export(tmp_path_factory.mktemp("owner") / "photos", 24)
