"""What the data owner's commands read: the source images, the zoo's models and the class names labels come from."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.datasets.base import IMAGE_SUFFIXES, decode_image
from nonxfer_bench.datasets.image_folder import class_labels, class_table
from nonxfer_bench.loading import load_suite, load_zoo
from nonxfer_bench.schema.files import read_yaml
from nonxfer_bench.storage.formats import is_16bit, read_image

RESIZED = "resized to the model's input size"
CROPPED = "not square: resized, then center-cropped to a square (the longer side's edges dropped)"
ALPHA = "alpha dropped"
DEEP = "16-bit source"
MAX_CLASS_FILE_BYTES = 16 << 20


def decode_source(
    path: Path, size: int, crop_pct: float, channels: int, interpolation: str
) -> tuple[torch.Tensor, list[str]]:
    """A source image as the authorized model's input (C x size x size float in [0, 1]) and notes on what changed.

    ``encode`` decodes with ``crop_pct`` 1: an image at the input size is taken as it is, a square one is resized, and a
    non-square one is resized (shorter side to ``size``) and center-cropped (:data:`RESIZED`, :data:`CROPPED`). 8-bit
    images go through :func:`nonxfer_bench.datasets.base.decode_image` (timm's eval resize and center crop, so the
    ``image_folder`` dataset decodes them to the same pixels); 16-bit PNGs keep their depth: resized (antialiased, in
    torch) and center-cropped the same way. Releases written before ``crop_pct`` 1 recorded timm's own crop_pct."""
    if is_16bit(path):
        image, notes = read_image(path)
        notes.append(DEEP)
        notes += geometry_notes(tuple(image.shape[-2:]), size)
        if image.shape[0] != channels:
            image = image.mean(0, keepdim=True) if channels == 1 else image.expand(3, -1, -1)
        short = max(size, math.floor(size / crop_pct))
        height, width = image.shape[-2:]
        new = (int(short * height / width), short) if width <= height else (short, int(short * width / height))
        if new != (height, width):
            mode = interpolation if interpolation in ("bilinear", "bicubic") else "nearest"
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            image = F.interpolate(image[None], size=new, mode=mode, **kwargs)[0].clamp(0, 1)
        top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        return image[:, top : top + size, left : left + size].contiguous(), notes
    notes = []
    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                notes.append(ALPHA)
            notes += geometry_notes((image.height, image.width), size)
    except Exception:
        pass  # decode_image reports the unreadable file
    return decode_image(
        path, size=size, crop_pct=crop_pct, channels=channels, interpolation=interpolation
    ).float() / 255.0, notes


def geometry_notes(shape: tuple[int, int], size: int) -> list[str]:
    """What decoding an image of ``shape`` (height, width) at ``size`` x ``size`` changes: nothing, a resize, or a
    crop."""
    if shape == (size, size):
        return []
    return [RESIZED] if shape[0] == shape[1] else [CROPPED]


def list_sources(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder.absolute()}: input folder not found")
    files = sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


# ---------------------------------------------------------------------------------------------------
# the zoo


def read_zoo(path: Path) -> tuple[list, list[str], object | None]:
    """Zoo models, control names and the dataset spec that names the classes, from a zoo file (top-level ``models``
    and ``dataset``; no controls) or a suite file (its ``zoo``, ``controls`` and ``dataset``)."""
    path = Path(path).absolute()
    data = read_yaml(path)
    if isinstance(data, dict) and "models" in data:
        zoo = load_zoo(path)
        return zoo.models, [], zoo.dataset
    if isinstance(data, dict) and "zoo" in data:
        suite = load_suite(path, require_weights=False)
        return suite.models, list(suite.controls), suite.dataset
    raise UserError(f"{path}: neither a zoo file (key 'models') nor a suite file (key 'zoo')")


def load_models(path: Path) -> tuple[list, list[str]]:
    """Zoo models and control names of a zoo or suite file (:func:`read_zoo`)."""
    models, controls, _ = read_zoo(path)
    return models, controls


def pick(models: list, name: str, path: Path):
    """The zoo model called ``name``; one line naming the valid names otherwise."""
    for model in models:
        if model.name == name:
            return model
    raise UserError(f"{path}: no model {name!r}; valid: {', '.join(m.name for m in models)}")


def model_identity_hash(spec) -> str:
    return stable_hash(spec.identity())


def authorized_model(models: list, authorized: dict, zoo: Path):
    """The zoo model a release was made for: the one whose identity hash is the manifest's (its name first)."""
    for spec in sorted(models, key=lambda m: m.name != authorized["name"]):
        if model_identity_hash(spec) == authorized["identity_hash"]:
            return spec
    named = any(m.name == authorized["name"] for m in models)
    why = "its model of that name has other weights or settings" if named else "it has no model of that name"
    raise UserError(
        f"{Path(zoo).absolute()}: does not hold the release's authorized model {authorized['name']!r} (identity hash "
        f"{excerpt(authorized['identity_hash'], 20)}): {why}; pass the zoo or suite file the release was encoded with"
    )


# ---------------------------------------------------------------------------------------------------
# class names


def read_class_file(path: Path) -> list[str]:
    """A class file: one class name per line, line i (from 0) naming label i; blank lines at the end ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--classes {path.absolute()}: file not found (one class name per line, line 1 = label 0)")
    if path.stat().st_size > MAX_CLASS_FILE_BYTES:
        raise UserError(
            f"--classes {path.absolute()}: {path.stat().st_size:,} bytes; a class file has at most "
            f"{MAX_CLASS_FILE_BYTES:,}"
        )
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--classes {path.absolute()}: not UTF-8 text (one class name per line)") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    blank = next((i for i, name in enumerate(names) if not name), None)
    if blank is not None or not names:
        raise UserError(
            f"--classes {path.absolute()}: {'line ' + str(blank + 1) + ' is blank' if names else 'no class names'}; "
            "one class name per line, line 1 = label 0"
        )
    try:
        class_table(names)
    except ValueError as error:
        raise UserError(f"--classes {path.absolute()}: {error}") from None
    return names


def known_classes(zoo: Path, class_file: Path | None) -> list[str]:
    """The class names labels come from: ``class_file`` when given, else those of the dataset the zoo or suite file
    names (Fashion-MNIST's ten classes, ImageNet-1k's WordNet IDs)."""
    if class_file is not None:
        return read_class_file(class_file)
    _, _, dataset = read_zoo(zoo)
    names = (
        DATASETS.create(dataset.name, dataset.params).class_names()
        if dataset is not None and dataset.name in DATASETS.names()
        else None
    )
    if not names:
        named = f"its dataset {dataset.name!r} fixes none" if dataset is not None else "it names no dataset"
        raise UserError(
            f"{Path(zoo).absolute()}: no class names to label the class folders with ({named}); give --classes FILE "
            "(one class name per line, line 1 = label 0)"
        )
    return names


def source_labels(sources: list[str], classes: list[str], where: str) -> torch.Tensor:
    """The label of each source image (a path relative to the originals) from its class folder, the first part of its
    path (:func:`nonxfer_bench.datasets.image_folder.class_labels`)."""
    folders = [Path(source).parts[0] if len(Path(source).parts) > 1 else None for source in sources]
    if any(folder is None for folder in folders):
        loose = next(source for source, folder in zip(sources, folders) if folder is None)
        raise UserError(
            f"{where}: labels need every source image inside a class folder (root/<class>/<image>); {excerpt(loose)} "
            "is not"
        )
    return torch.tensor(class_labels(folders, classes, where))
