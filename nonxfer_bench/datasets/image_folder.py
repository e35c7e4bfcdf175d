"""An image folder in the ImageNet-val class-folder layout: ``root/<class>/<image>``.

Labels are the sorted folder names' indices, or, with ``classes`` (a list of class names, index = label), the index of
the class each folder names (:func:`class_labels`: the name itself, the name in any case with any run of characters
other than letters and digits written as one ``-`` (``T-shirt/top`` as ``t-shirt-top``), or the index as a number).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_serializer, model_validator

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import stable_hash
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
    size: int | None = Field(
        None, ge=8, le=4096, description="side of the square the images are decoded to; default: the model's"
    )
    crop_pct: float | None = Field(
        None, ge=MIN_CROP_PCT, le=1, description="resize shorter side to size/crop_pct, center crop"
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    channels: Literal[1, 3] = 3

    @model_validator(mode="after")
    def _bounded_resize(self) -> "FolderParams":
        check_resize(self)
        return self


ClassName = Annotated[str, Field(min_length=1, max_length=300)]
MAX_CLASSES = 100_000
SHOWN_CLASSES = 12  # class names an error line lists


class ClassFolderParams(FolderParams):
    classes: list[ClassName] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLASSES,
        description="class names in label order; folders are matched to them by name or index (default: sorted folder "
        "names)",
    )

    @model_validator(mode="after")
    def _distinct_classes(self) -> "ClassFolderParams":
        if self.classes is not None:
            class_table(self.classes)  # ValueError on a name listed twice
        return self

    @model_serializer(mode="wrap")
    def _unset_classes_left_out(self, handler: Callable[[Any], dict]) -> dict:
        """Without ``classes`` the dump is what it was before the key existed: suites keep their cell and cache keys."""
        data = handler(self)
        if self.classes is None:
            data.pop("classes", None)
        return data


def folded(name: str) -> str:
    """A class or folder name in any case, every run of characters other than letters and digits one ``-``."""
    return re.sub(r"[^0-9a-z]+", "-", name.casefold()).strip("-")


def class_table(classes: list[str]) -> dict[str, int]:
    """Folder name -> label for ``classes`` (index = label): each exact name, each :func:`folded` name that no two
    classes
    share, and each index as a number (a name wins over an index). ValueError on a name listed twice."""
    exact: dict[str, int] = {}
    for index, name in enumerate(classes):
        if name in exact:
            raise ValueError(f"class {excerpt(name)} is listed twice (labels {exact[name]} and {index})")
        exact[name] = index
    spelled: dict[str, list[int]] = {}
    for index, name in enumerate(classes):
        spelled.setdefault(folded(name), []).append(index)
    table = {str(index): index for index in range(len(classes))}
    table |= {name: indices[0] for name, indices in spelled.items() if len(indices) == 1 and name}
    return table | exact


def class_labels(folders: list[str], classes: list[str], where: str) -> list[int]:
    """The label of each class folder name, by :func:`class_table`; a folder that names no class is one line naming it
    and the valid names."""
    table = class_table(classes)
    for folder in folders:
        if folder not in table and folded(folder) not in table:
            shown = ", ".join(repr(folded(c) if "/" in c else c) for c in classes[:SHOWN_CLASSES])
            more = f" and {len(classes) - SHOWN_CLASSES:,} more" if len(classes) > SHOWN_CLASSES else ""
            raise UserError(
                f"{where}: class folder {excerpt(folder)} names no class; valid: {shown}{more} (any case, '-' for "
                f"other characters), or the class index 0..{len(classes) - 1}"
            )
    return [table[folder] if folder in table else table[folded(folder)] for folder in folders]


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """ImageNet-val layout: ``root/<class>/<image>``; labels are the sorted class-folder indices, or the named
    ``classes``."""

    Params = ClassFolderParams
    layout: ClassVar[str] = "a folder with one sub-folder of images per class"

    def root(self) -> Path:
        root = self.params.root or (
            Path(os.environ[self.params.root_env]) if os.environ.get(self.params.root_env) else None
        )
        if root is None:
            raise UserError(
                f"{self.name}: no dataset folder; set dataset.params.root or the environment variable "
                f"{self.params.root_env} to {self.layout}"
            )
        if not root.is_dir():
            raise UserError(
                f"{self.name}: dataset folder {root} "
                f"{'is a file, not a folder' if root.exists() else 'does not exist'}; point dataset.params.root or "
                f"{self.params.root_env} at {self.layout}"
            )
        return root

    def source(self) -> tuple[str, ...]:
        """The folder's resolved path (symbolic links followed), part by part: a folder inside another shares its
        images; without a folder yet, the environment variable that will name it."""
        root = self.params.root or (
            Path(os.environ[self.params.root_env]) if os.environ.get(self.params.root_env) else None
        )
        return (
            ("folder", *Path(os.path.realpath(root)).parts)
            if root is not None
            else ("folder", f"${self.params.root_env}")
        )

    def check(self) -> None:
        root = self.root()
        if not any(p.is_dir() for p in root.iterdir()):
            raise UserError(f"image_folder: {root} has no class sub-folders (expected root/<class>/<image>)")

    def class_names(self) -> list[str] | None:
        return self.params.classes

    def files(self) -> tuple[list[tuple[Path, int]], list[str]]:
        root = self.root()
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not folders:
            raise UserError(f"image_folder: {root} has no class sub-folders (expected root/<class>/<image>)")
        classes = self.params.classes or folders
        labels = (
            class_labels(folders, classes, f"image_folder {root}") if self.params.classes else list(range(len(folders)))
        )
        files = sorted(
            (label, file)
            for label, name in zip(labels, folders)
            for file in sorted((root / name).iterdir())
            if file.suffix.lower() in IMAGE_SUFFIXES
        )
        files = [(file, label) for label, file in files]
        if not files:
            raise UserError(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        return files, classes

    def data_files(self) -> dict[str, Path]:
        root = self.root()
        return {path.relative_to(root).as_posix(): path for path, _ in self.files()[0]}

    def fingerprint(self) -> dict:
        """Every file's name, size, modification and change time (cheap: one stat each). The change time is set by
        the system on any write and cannot be restored (``cp -p`` and ``rsync -a`` restore only the modification
        time), so an image edited in place, even to the same size, is decoded again, never read stale from the cache."""
        files, _ = self.files()
        root = self.root()
        stats = [(path.relative_to(root).as_posix(), path.stat()) for path, _ in files]
        return {
            "root": str(root),
            "files": len(files),
            "stats": stable_hash([(name, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for name, s in stats]),
        }

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
