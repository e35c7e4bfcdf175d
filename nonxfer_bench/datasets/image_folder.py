"""An image folder in the ImageNet-val class-folder layout: ``root/<class>/<image>``, sorted folder names = labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import (
    DATASETS,
    IMAGE_SUFFIXES,
    MIN_CROP_PCT,
    Dataset,
    ImageSet,
    check_resize,
    decode_image,
    decode_settings,
    subset_index,
)


class FolderParams(Strict):
    root: Path | None = Field(None, description="folder of class sub-folders; or set env var named by root_env")
    root_env: str = "IMAGENET_VAL"
    size: int | None = Field(None, ge=8, le=4096, description="side of the square the images are decoded to; default: the model's")
    crop_pct: float | None = Field(None, ge=MIN_CROP_PCT, le=1, description="resize shorter side to size/crop_pct, center crop")
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    channels: Literal[1, 3] = 3

    @model_validator(mode="after")
    def _bounded_resize(self) -> "FolderParams":
        check_resize(self)
        return self


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """ImageNet-val layout: ``root/<class>/<image>``; labels are the sorted class-folder indices."""

    Params = FolderParams
    layout: ClassVar[str] = "a folder with one sub-folder of images per class"

    def root(self) -> Path:
        root = self.params.root or (Path(os.environ[self.params.root_env]) if os.environ.get(self.params.root_env) else None)
        if root is None:
            raise UserError(
                f"{self.name}: no dataset folder; set dataset.params.root or the environment variable "
                f"{self.params.root_env} to {self.layout}"
            )
        if not root.is_dir():
            raise UserError(
                f"{self.name}: dataset folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}; point dataset.params.root or "
                f"{self.params.root_env} at {self.layout}"
            )
        return root

    def source(self) -> tuple[str, ...]:
        """The folder's resolved path (symbolic links followed), part by part: a folder inside another shares its
        images; without a folder yet, the environment variable that will name it."""
        root = self.params.root or (Path(os.environ[self.params.root_env]) if os.environ.get(self.params.root_env) else None)
        return ("folder", *Path(os.path.realpath(root)).parts) if root is not None else ("folder", f"${self.params.root_env}")

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

    def data_files(self) -> dict[str, Path]:
        root = self.root()
        return {path.relative_to(root).as_posix(): path for path, _ in self.files()[0]}

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
