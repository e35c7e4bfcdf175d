"""The dataset interface: uint8 image tensors (N x C x H x W) with labels, decoded once and cached.

One module per source in this package: ``fashion_mnist`` (local IDX files), ``digits`` (scikit-learn, for
tests), ``image_folder`` (ImageNet-val layout: one sub-folder of images per class, sorted names = labels),
``imagenet_val`` (the official flat ImageNet-val folder with the devkit's or LOC_val_solution's labels) and
``packaged`` (images shipped inside installed packages). Label -1 marks an unlabeled image (accuracy is then
not reported).

Datasets of natural images decode with ``size``, ``crop_pct`` and ``interpolation``; left unset in a
suite they come from the first authorized model's resolved timm data config, and :func:`decode_image`
resizes and crops exactly as timm's eval transform does.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.core.registry import Registry

log = logging.getLogger(__name__)
DATASETS: Registry["Dataset"] = Registry("dataset", "nonxfer_bench.datasets", "nonxfer_bench.datasets")

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Params fields that, left unset (None) in a suite, are filled from the first authorized model's timm config.
MODEL_PREPROCESSING_FIELDS = ("size", "crop_pct", "interpolation")
DEFAULT_DECODE = {"size": 224, "crop_pct": 0.875, "interpolation": "bicubic"}
ILSVRC2012_VAL = "ilsvrc2012_val"  # the source (Dataset.source) of ImageNet-val's images, in any copy or subset
MIN_CROP_PCT = 0.01  # as a zoo model's preprocess.crop_pct
MAX_RESIZE = 16_384  # the side an image is resized to before its center crop (size / crop_pct)


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
    labelled: ClassVar[bool] = True  # every image has a label (False: labels are -1, e.g. unlabeled photos)

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

    def class_names(self) -> list[str] | None:
        """The names of the labels in label order when the dataset fixes them (Fashion-MNIST's ten classes,
        ImageNet-1k's
        WordNet IDs), else None: what a data owner's class folders are matched against (``verify --labels``,
        ``attack``)."""
        return None

    def data_files(self) -> dict[str, Path] | None:
        """The files this dataset reads, each by a name that does not depend on where they lie (a file name, a path
        inside the dataset's folder or package): result bundles record their checksums. None when it does not name
        them."""
        return None

    def fingerprint(self) -> dict:
        """What identifies the source files beyond the parameters (a folder's contents); part of the cache key."""
        return {}

    def source(self) -> tuple[str, ...]:
        """Where the images come from, from the most general to the most specific part: two datasets may share
        images when one's source starts with the other's (``("digits",)``, all of it, holds ``("digits", "test")``).
        The default, the dataset's name alone, says that any two uses of this dataset may share images; a dataset
        with disjoint parts (splits, folders) names the part. The loader refuses attacker data that may share
        images with the evaluated ones."""
        return (self.name,)


def decode_settings(params: BaseModel) -> dict:
    """size, crop_pct and interpolation of a dataset's params, unset ones at timm's defaults."""
    return {key: getattr(params, key, None) or default for key, default in DEFAULT_DECODE.items()}


def check_resize(params: BaseModel) -> None:
    """Refuse decode settings that resize an image beyond :data:`MAX_RESIZE` pixels per side before the crop
    (a tiny crop_pct): gigabytes per image, for a crop no model input needs."""
    decode = decode_settings(params)
    side = decode["size"] / decode["crop_pct"]
    if side > MAX_RESIZE:
        raise ValueError(
            f"size {decode['size']} with crop_pct {decode['crop_pct']:g} resizes every image to {side:,.0f} pixels "
            f"per side before the crop; at most {MAX_RESIZE:,} (raise crop_pct)"
        )


def decode_image(path: Path, size: int, crop_pct: float, channels: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Decode one image file to uint8 (C x size x size) as timm's eval transform does (crop_mode center):
    shorter side resized to floor(size / crop_pct), longer side as torchvision's Resize computes it,
    then torchvision's CenterCrop. ``ToTensor`` of the result equals timm's tensor before normalization.
    Any PIL mode is converted: gray to RGB and back, alpha dropped, 16-bit gray scaled to 8 bits."""
    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: PIL's convert would clip at 255, not scale
                image = Image.fromarray(
                    (np.asarray(image, dtype=np.float64).clip(0, 65535) / 257.0).round().astype(np.uint8)
                )
            return center_crop_pil(image.convert("L" if channels == 1 else "RGB"), size, crop_pct, interpolation)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise UserError(f"{path}: cannot read image ({type(error).__name__}: {excerpt(str(error), 160)})") from None


def center_crop_pil(image, size: int, crop_pct: float, interpolation: str = "bicubic") -> torch.Tensor:
    """A PIL image to uint8 (C x size x size), exactly timm's ``Resize(floor(size/crop_pct)) + CenterCrop(size)``."""
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


def cache_damage(images: np.ndarray, meta: dict, params: BaseModel, limit: int | None) -> str | None:
    """What is wrong with a decoded subset read from the cache, or None: uint8 images (N x C x H x W, C 1 or 3, at
    most ``limit``, square at the params' ``size`` where they set one), one label per image in [-1, classes) and the
    class names as text. A damaged entry would otherwise be scored as it is, or crash a run."""
    if not isinstance(meta, dict):
        return "metadata that is not a mapping"
    size = getattr(params, "size", None)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or min(images.shape) < 1:
        return f"a {images.dtype} array of shape {images.shape}, not uint8 N x (1 or 3) x H x W"
    if (limit is not None and len(images) > limit) or (isinstance(size, int) and images.shape[2:] != (size, size)):
        return f"shape {images.shape} for limit {limit} and size {size}"
    labels, classes = meta.get("labels"), meta.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return "class names that are not a list of text"
    if not (isinstance(labels, list) and len(labels) == len(images)):
        return f"{len(labels) if isinstance(labels, list) else 'no'} labels for {len(images)} images"
    if not all(type(label) is int and -1 <= label < len(classes) for label in labels):
        return f"labels outside [-1, {len(classes)})"
    return None


def load_cached(name: str, params: dict, limit: int | None, seed: int) -> ImageSet:
    """The seeded subset of a dataset, decoded once and then read memory-mapped (uint8) from the cache.

    Keyed by the dataset's parameters (which fix the decoded resolution), the subset, the source
    fingerprint and the dataset class's ``version``; the first run decodes and writes, every run (that one included)
    reads the cached array.
    An entry that fails :func:`cache_damage` is logged (WARNING) and decoded again, which replaces it.
    """
    dataset = DATASETS.create(name, params)
    key = stable_hash(
        {
            "name": name,
            "params": dataset.params.model_dump(mode="json"),
            "limit": limit,
            "seed": seed,
            "source": dataset.fingerprint(),
            "code": type(dataset).version,
        }
    )
    cache = ArrayCache("datasets")
    hit = cache.get(key)
    if hit is not None and (damage := cache_damage(*hit, dataset.params, limit)) is not None:
        log.warning(
            f"decoded {name} images in the cache ({cache.folder / key}.npy) are damaged ({damage}); decoding them again"
        )
        hit = None
    if hit is None:

        def fill(allocate: Callable[[tuple[int, ...]], np.ndarray]) -> dict:
            _, labels, classes = dataset.decode_subset_into(limit, seed, allocate)
            return {"labels": labels.tolist(), "classes": classes, "dataset": name}

        hit = cache.put_filled(key, fill)  # mapped before it is renamed: another process's eviction cannot take it
    images, meta = hit
    return ImageSet(torch.from_numpy(images), torch.tensor(meta["labels"], dtype=torch.long), meta["classes"])
