"""Datasets as uint8 image tensors (N x C x H x W) with labels, decoded once per run.

Registered datasets: ``fashion_mnist`` (local IDX files), ``digits`` (scikit-learn, for tests) and
``image_folder`` (ImageNet-val layout: one sub-folder of images per class, sorted names = labels);
``foolbox_imagenet`` and ``skimage_photos`` (images shipped inside installed packages) live in
:mod:`nonxfer_bench.packaged_data`. Label -1 marks an unlabeled image (accuracy is then not reported).

Datasets of natural images decode with ``size``, ``crop_pct`` and ``interpolation``; left unset in a
suite they come from the first authorized model's resolved timm data config, and :func:`decode_image`
resizes and crops exactly as timm's eval transform does.
"""

from __future__ import annotations

import gzip
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from nonxfer_bench.errors import UserError
from nonxfer_bench.registry import Registry

DATASETS: Registry["Dataset"] = Registry(
    "dataset", ("nonxfer_bench.data", "nonxfer_bench.packaged_data"), "nonxfer_bench.datasets"
)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Params fields that, left unset (None) in a suite, are filled from the first authorized model's timm config.
MODEL_PREPROCESSING_FIELDS = ("size", "crop_pct", "interpolation")
DEFAULT_DECODE = {"size": 224, "crop_pct": 0.875, "interpolation": "bicubic"}


def subset_index(count: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """Indices of the seeded random subset of ``limit`` out of ``count`` items, in dataset order; None for all."""
    if limit is None or limit >= count:
        return None
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@dataclass
class ImageSet:
    """Decoded images (uint8, N x C x H x W), integer labels and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None, seed: int) -> "ImageSet":
        """A deterministic seeded random subset (kept in dataset order); all images if limit is None."""
        index = subset_index(len(self), limit, seed)
        return self if index is None else ImageSet(self.images[index], self.labels[index], self.classes)

    def as_float(self) -> torch.Tensor:
        """Images in [0, 1], float32: the pixel-space contract."""
        return self.images.float() / 255.0


class Dataset(ABC):
    """Base class: a registered dataset declares ``Params`` and implements ``load``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    version: ClassVar[str] = "1"  # bump when decoding changes: part of the decoded-dataset cache key

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def load(self) -> ImageSet:
        """Decode the whole dataset."""

    def load_subset(self, limit: int | None, seed: int) -> ImageSet:
        """The seeded subset of :meth:`load` (:meth:`ImageSet.subset`), decoded into memory."""
        images, labels, classes = self.decode_subset_into(limit, seed, lambda shape: np.empty(shape, dtype=np.uint8))
        return ImageSet(torch.from_numpy(images), labels, classes)

    def decode_subset_into(
        self, limit: int | None, seed: int, allocate: Callable[[tuple[int, ...]], np.ndarray]
    ) -> tuple[np.ndarray, torch.Tensor, list[str]]:
        """Write the seeded subset's uint8 images into ``allocate(shape)`` (e.g. a memory-mapped cache file);
        returns that array, the labels and the class names. Datasets of separate files override it to
        decode only the chosen files, one at a time, so memory does not grow with the dataset."""
        data = self.load().subset(limit, seed)
        images = allocate(tuple(data.images.shape))
        images[:] = data.images.numpy()
        return images, data.labels, data.classes

    def check(self) -> None:
        """Raise a :class:`UserError` saying what to provide if the data is not there (cheap; before any work)."""

    def fingerprint(self) -> dict:
        """What identifies the source files beyond the parameters (a folder's contents); part of the cache key."""
        return {}


class FashionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


class DigitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["train", "test", "all"] = "test"
    size: int = Field(16, ge=8, description="upsampled side length (nearest), so stems have room")


@DATASETS.register("digits")
class Digits(Dataset):
    """scikit-learn's 1,797 8x8 handwritten digits; a fixed 70/30 split; always installed, for tests."""

    Params = DigitsParams

    def load(self) -> ImageSet:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
        images = torch.nn.functional.interpolate(images.float(), size=self.params.size, mode="nearest").to(torch.uint8)
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        cut = int(0.7 * len(labels))
        index = {"train": order[:cut], "test": order[cut:], "all": order}[self.params.split].sort().values
        return ImageSet(images[index], labels[index], [str(i) for i in range(10)])


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: Path | None = Field(None, description="folder of class sub-folders; or set env var named by root_env")
    root_env: str = "IMAGENET_VAL"
    size: int | None = Field(None, ge=8, description="side of the square the images are decoded to; default: the model's")
    crop_pct: float | None = Field(None, gt=0, le=1, description="resize shorter side to size/crop_pct, center crop")
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    channels: Literal[1, 3] = 3


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """ImageNet-val layout: ``root/<class>/<image>``; labels are the sorted class-folder indices."""

    Params = FolderParams

    def root(self) -> Path:
        root = self.params.root or (Path(os.environ[self.params.root_env]) if os.environ.get(self.params.root_env) else None)
        if root is None:
            raise UserError(
                f"image_folder: no dataset folder; set dataset.params.root or the environment variable "
                f"{self.params.root_env} to a folder with one sub-folder of images per class"
            )
        if not root.is_dir():
            raise UserError(
                f"image_folder: dataset folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}; point dataset.params.root or "
                f"{self.params.root_env} at a folder with one sub-folder of images per class"
            )
        return root

    def check(self) -> None:
        root = self.root()
        if not any(p.is_dir() for p in root.iterdir()):
            raise UserError(f"image_folder: {root} has no class sub-folders (expected root/<class>/<image>)")

    def files(self) -> tuple[list[tuple[Path, int]], list[str]]:
        root = self.root()
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"image_folder: {root} has no class sub-folders (expected root/<class>/<image>)")
        files = [
            (file, label)
            for label, name in enumerate(classes)
            for file in sorted((root / name).iterdir())
            if file.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not files:
            raise UserError(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        return files, classes

    def fingerprint(self) -> dict:
        files, _ = self.files()
        stats = [path.stat() for path, _ in files]
        return {"root": str(self.root()), "files": len(files), "bytes": sum(s.st_size for s in stats), "mtime": max(s.st_mtime for s in stats)}

    def load(self) -> ImageSet:
        return self.load_subset(None, 0)

    def decode_subset_into(
        self, limit: int | None, seed: int, allocate: Callable[[tuple[int, ...]], np.ndarray]
    ) -> tuple[np.ndarray, torch.Tensor, list[str]]:
        """Decodes only the chosen files, one at a time, into the given array (``--limit 5000`` of
        ImageNet-val decodes 5,000 images, not 50,000; into the cache file, nothing is held in memory)."""
        files, classes = self.files()
        index = subset_index(len(files), limit, seed)
        chosen = files if index is None else [files[i] for i in index.tolist()]
        decode = decode_settings(self.params)
        images = allocate((len(chosen), self.params.channels, decode["size"], decode["size"]))
        for i, (path, _) in enumerate(chosen):
            images[i] = decode_image(path, channels=self.params.channels, **decode).numpy()
        return images, torch.tensor([label for _, label in chosen]), classes


def decode_settings(params: BaseModel) -> dict:
    """size, crop_pct and interpolation of a dataset's params, unset ones at timm's defaults."""
    return {key: getattr(params, key, None) or default for key, default in DEFAULT_DECODE.items()}


def decode_image(path: Path, size: int, crop_pct: float, channels: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Decode one image file to uint8 (C x size x size) as timm's eval transform does (crop_mode center):
    shorter side resized to floor(size / crop_pct), longer side as torchvision's Resize computes it,
    then torchvision's CenterCrop. ``ToTensor`` of the result equals timm's tensor before normalization.
    Any PIL mode is converted: gray to RGB and back, alpha dropped, 16-bit gray scaled to 8 bits."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: PIL's convert would clip at 255, not scale
                image = Image.fromarray((np.asarray(image, dtype=np.float64).clip(0, 65535) / 257.0).round().astype(np.uint8))
            return center_crop_pil(image.convert("L" if channels == 1 else "RGB"), size, crop_pct, interpolation)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path}: cannot read image ({error})") from None


def center_crop_pil(image, size: int, crop_pct: float, interpolation: str = "bicubic") -> torch.Tensor:
    """A PIL image to uint8 (C x size x size), exactly timm's ``Resize(floor(size/crop_pct)) + CenterCrop(size)``."""
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    short = max(size, math.floor(size / crop_pct))
    width, height = image.size
    new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    resized = image if new == (width, height) else image.resize(new, resample)
    top = int(round((resized.height - size) / 2.0))
    left = int(round((resized.width - size) / 2.0))
    array = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def load_dataset(name: str, params: dict) -> ImageSet:
    return DATASETS.create(name, params).load()


def load_cached(name: str, params: dict, limit: int | None, seed: int) -> ImageSet:
    """The seeded subset of a dataset, decoded once and then read memory-mapped (uint8) from the cache.

    Keyed by the dataset's parameters (which fix the decoded resolution), the subset, the source
    fingerprint and the dataset class's ``version``; the first run decodes and writes, every run (that one included) reads the cached array.
    """
    from nonxfer_bench.cache import ArrayCache
    from nonxfer_bench.suite import stable_hash

    dataset = DATASETS.create(name, params)
    key = stable_hash({"name": name, "params": dataset.params.model_dump(mode="json"), "limit": limit, "seed": seed,
                       "source": dataset.fingerprint(), "code": type(dataset).version})
    cache = ArrayCache("datasets")
    if (hit := cache.get(key)) is None:

        def fill(allocate: Callable[[tuple[int, ...]], np.ndarray]) -> dict:
            _, labels, classes = dataset.decode_subset_into(limit, seed, allocate)
            return {"labels": labels.tolist(), "classes": classes, "dataset": name}

        cache.put_filled(key, fill)
        hit = cache.get(key)
    images, meta = hit
    return ImageSet(torch.from_numpy(images), torch.tensor(meta["labels"], dtype=torch.long), meta["classes"])
