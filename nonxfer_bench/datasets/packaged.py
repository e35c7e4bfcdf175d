"""Real images that ship inside installed Python packages, read straight from the package folders.

- ``foolbox_imagenet``: the 20 ImageNet validation images in foolbox's wheel (MIT), files
  ``foolbox/data/imagenet_<index>_<label>.jpg`` (512 x 512 RGB JPEGs); the label is the ImageNet-1k
  class index in the file name. foolbox itself is never imported (only its folder is located).
- ``skimage_photos``: the real RGB photographs bundled with scikit-image (``skimage/data``), unlabeled
  (label -1): accuracy is not reported for them, agreement with the clean prediction is.

Both decode with ``size``, ``crop_pct`` and ``interpolation`` like ``image_folder`` (unset in a suite:
from the first authorized model's timm data config). Install them with ``pip install '.[imagenet]'``.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import (
    DATASETS,
    ILSVRC2012_VAL,
    MIN_CROP_PCT,
    Dataset,
    ImageSet,
    check_resize,
    decode_image,
    decode_settings,
)
from nonxfer_bench.datasets.imagenet_val import timm_classes
from nonxfer_bench.schema.suite import package_folder

UNLABELED = -1


class PackagedParams(Strict):
    size: int | None = Field(
        None, ge=8, le=4096, description="side of the square the images are decoded to; default: the model's"
    )
    crop_pct: float | None = Field(
        None, ge=MIN_CROP_PCT, le=1, description="resize shorter side to size/crop_pct, center crop"
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None

    @model_validator(mode="after")
    def _bounded_resize(self) -> "PackagedParams":
        check_resize(self)
        return self


class PackagedImages(Dataset):
    """Images in a data folder of an installed package; subclasses name the package and the files."""

    Params = PackagedParams
    package: ClassVar[str]
    pip_name: ClassVar[str]
    subfolder: ClassVar[str]

    def folder(self) -> Path:
        root = package_folder(self.package)
        if root is None:
            raise UserError(
                f"{self.name}: the Python package {self.package!r} is not installed; "
                f"pip install '.[imagenet]' (or pip install {self.pip_name})"
            )
        folder = root / self.subfolder
        if not folder.is_dir():
            raise UserError(
                f"{self.name}: {folder} not found in the installed {self.package!r}; reinstall {self.pip_name}"
            )
        return folder

    @abstractmethod
    def files(self) -> list[tuple[Path, int]]:
        """The image files of this dataset with their labels (-1 when unlabeled)."""

    def data_files(self) -> dict[str, Path]:
        return {path.name: path for path, _ in self.files()}

    def check(self) -> None:
        if not self.files():
            raise UserError(f"{self.name}: no images found in {self.folder()}; reinstall {self.pip_name}")

    def classes(self) -> list[str]:
        return []

    def load(self) -> ImageSet:
        files = self.files()
        self.check()
        decode = decode_settings(self.params)
        images = torch.stack([decode_image(path, channels=3, **decode) for path, _ in files])
        return ImageSet(images, torch.tensor([label for _, label in files], dtype=torch.int64), self.classes())


@DATASETS.register("foolbox_imagenet")
class FoolboxImageNet(PackagedImages):
    """The 20 real ImageNet-val images shipped in foolbox's wheel (MIT); labels from the file names."""

    package = "foolbox"
    pip_name = "foolbox"
    subfolder = "data"
    PATTERN = re.compile(r"imagenet_(\d+)_(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)

    def files(self) -> list[tuple[Path, int]]:
        found = []
        for path in self.folder().iterdir():
            match = self.PATTERN.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path, int(match.group(2))))
        return [(path, label) for _, path, label in sorted(found)]

    def source(self) -> tuple[str, ...]:
        """Twenty of ImageNet-val's images: they overlap the dataset ``imagenet_val``."""
        return (ILSVRC2012_VAL, "foolbox")

    def class_names(self) -> list[str]:
        """ImageNet-1k's WordNet IDs in timm's order (the labels in the file names index them)."""
        return timm_classes()

    def classes(self) -> list[str]:
        from timm.data import (
            ImageNetInfo,
        )  # heavy (timm pulls torchvision: seconds): only ImageNet's class names need it

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]


@DATASETS.register("skimage_photos")
class SkimagePhotos(PackagedImages):
    """scikit-image's bundled real RGB photographs (9 images, unlabeled: label -1, agreement only)."""

    package = "skimage"
    pip_name = "scikit-image"
    labelled = False
    subfolder = "data"
    # The real RGB photographs in the wheel; synthetic RGB images (chessboard_RGB, color, phantom,
    # logo, horse) and grayscale ones (camera, moon, coins, ...) are left out.
    PHOTOS = (
        "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
        "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
    )  # fmt: skip

    def files(self) -> list[tuple[Path, int]]:
        folder = self.folder()
        return [(folder / name, UNLABELED) for name in self.PHOTOS if (folder / name).is_file()]
