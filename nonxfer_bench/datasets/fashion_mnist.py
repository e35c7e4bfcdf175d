"""Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist``), or torchvision's downloader when online."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import DATASETS, Dataset, ImageSet

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class FashionParams(Strict):
    split: Literal["train", "test"] = "test"
    root: Path | None = Field(None, description="folder with the four IDX .gz files; default: Debian path")
    download: bool = Field(False, description="use torchvision's downloader when no local copy exists")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path}: truncated IDX file (expected {int(np.prod(shape))} values, found {body.size})")
    return body.reshape(shape)


@DATASETS.register("fashion_mnist")
class FashionMNIST(Dataset):
    """Fashion-MNIST, 28x28 grayscale, 10 classes, from local IDX files."""

    Params = FashionParams
    CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    def _root(self) -> Path:
        candidates = [self.params.root] if self.params.root else []
        if os.environ.get("FASHION_MNIST_ROOT"):
            candidates.append(Path(os.environ["FASHION_MNIST_ROOT"]))
        candidates.append(DEBIAN_FASHION_MNIST)
        for root in candidates:
            if (root / "t10k-images-idx3-ubyte.gz").is_file() or (root / "t10k-images-idx3-ubyte").is_file():
                return root
        if self.params.download:
            from torchvision.datasets import FashionMNIST as TorchvisionFashion

            target = Path(self.params.root or Path.home() / ".cache" / "nonxfer-bench")
            TorchvisionFashion(str(target), train=self.params.split == "train", download=True)
            return target / "FashionMNIST" / "raw"
        raise UserError(
            f"Fashion-MNIST IDX files not found in {', '.join(str(c) for c in candidates)}; install Debian's "
            "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist), set dataset.params.root or "
            "FASHION_MNIST_ROOT, or set dataset.params.download: true when online"
        )

    def check(self) -> None:
        if not self.params.download:
            self._root()

    def load(self) -> ImageSet:
        root = self._root()
        prefix = "train" if self.params.split == "train" else "t10k"

        def find(stem: str) -> Path:
            gz = root / f"{prefix}-{stem}-ubyte.gz"
            return gz if gz.is_file() else root / f"{prefix}-{stem}-ubyte"

        images = read_idx(find("images-idx3"))
        labels = read_idx(find("labels-idx1"))
        return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), self.CLASSES)
