"""Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist``), or torchvision's downloader when online."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import DATASETS, Dataset, ImageSet

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class FashionParams(Strict):
    split: Literal["train", "test"] = "test"
    root: Path | None = Field(None, description="folder with the four IDX .gz files; default: Debian path")
    download: bool = Field(False, description="use torchvision's downloader when no local copy exists")


MAX_IDX_VALUES = 1 << 31  # Fashion-MNIST's training images are 47 million values


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by (Fashion-)MNIST. Reads exactly what the header
    declares (bounded), so a damaged header or a decompression bomb is one line, not a memory blow-up."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(4)
            if len(header) < 4 or header[:3] != b"\x00\x00\x08" or not 1 <= header[3] <= 4:
                raise UserError(f"{path}: not an unsigned-byte IDX file")
            dims = handle.read(4 * header[3])
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(header[3]))
            expected = math.prod(shape)
            if len(dims) < 4 * header[3] or expected > MAX_IDX_VALUES:
                raise UserError(
                    f"{path}: IDX header declares shape {shape}; at most {MAX_IDX_VALUES:,} values are read"
                )
            body = handle.read(expected + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: unreadable IDX file ({excerpt(str(error))})") from None
    if len(body) != expected:
        state = "truncated IDX file" if len(body) < expected else "IDX file longer than its header says"
        raise UserError(f"{path}: {state} (header declares {expected:,} values)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


@DATASETS.register("fashion_mnist")
class FashionMNIST(Dataset):
    """Fashion-MNIST, 28x28 grayscale, 10 classes, from local IDX files."""

    Params = FashionParams
    CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    def _root(self) -> Path:
        """The folder named by ``params.root``, else by ``FASHION_MNIST_ROOT``, else Debian's: only that one,
        so a mistyped root is an error instead of a silent switch to another copy."""
        if self.params.root:
            root, named = self.params.root, "dataset.params.root"
        elif os.environ.get("FASHION_MNIST_ROOT"):
            root, named = Path(os.environ["FASHION_MNIST_ROOT"]), "FASHION_MNIST_ROOT"
        else:
            root, named = DEBIAN_FASHION_MNIST, "the Debian path"
        if (root / "t10k-images-idx3-ubyte.gz").is_file() or (root / "t10k-images-idx3-ubyte").is_file():
            return root
        if self.params.download:
            from torchvision.datasets import (
                FashionMNIST as TorchvisionFashion,
            )  # heavy (seconds): only the online download needs it

            target = Path(self.params.root or Path.home() / ".cache" / "nonxfer-bench")
            TorchvisionFashion(str(target), train=self.params.split == "train", download=True)
            return target / "FashionMNIST" / "raw"
        raise UserError(
            f"Fashion-MNIST IDX files not found in {root} ({named}; it "
            f"{'exists' if root.is_dir() else 'does not exist'}); install Debian's 'dataset-fashion-mnist' (apt-get "
            "install dataset-fashion-mnist), point dataset.params.root or FASHION_MNIST_ROOT at the folder, or set "
            "dataset.params.download: true when online"
        )

    def class_names(self) -> list[str]:
        return list(self.CLASSES)

    def source(self) -> tuple[str, ...]:
        """The split (Fashion-MNIST's train and test sets are disjoint), wherever its files are: every copy holds the
        same images."""
        return ("fashion_mnist", self.params.split)

    def check(self) -> None:
        if not self.params.download:
            self._root()

    def _idx_file(self, root: Path, stem: str) -> Path:
        """The split's IDX file ``stem`` (``images-idx3``, ``labels-idx1``): gzipped, else plain."""
        prefix = "train" if self.params.split == "train" else "t10k"
        gz = root / f"{prefix}-{stem}-ubyte.gz"
        return gz if gz.is_file() else root / f"{prefix}-{stem}-ubyte"

    def data_files(self) -> dict[str, Path]:
        root = self._root()
        return {path.name: path for path in (self._idx_file(root, "images-idx3"), self._idx_file(root, "labels-idx1"))}

    def load(self) -> ImageSet:
        root = self._root()
        images = read_idx(self._idx_file(root, "images-idx3"))
        labels = read_idx(self._idx_file(root, "labels-idx1"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{root}: IDX files of shapes {images.shape} and {labels.shape} are not N images with N labels"
            )
        return ImageSet(
            torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), self.CLASSES
        )
