"""ImageNet-val as the official archive unpacks: one flat folder plus a ground-truth file, in timm's class order.

The folder holds ``ILSVRC2012_val_00000001.JPEG`` ... (ILSVRC2012_img_val.tar). Labels come from either

- ``devkit``: the ILSVRC2012 devkit folder (ILSVRC2012_devkit_t12.tar.gz):
  ``data/ILSVRC2012_validation_ground_truth.txt``
  gives the devkit's class ID (1..1000) of image i on line i, and ``data/meta.mat`` maps IDs to WordNet IDs
  (read with ``scipy.io``); or
- ``solution``: Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the first token of the
  string is the WordNet ID), optionally with ``synsets`` = ``LOC_synset_mapping.txt`` checked against timm.

Labels are indices into the sorted WordNet IDs, which is timm's ImageNet-1k order (``timm.data.ImageNetInfo``).
Every mismatch (an image without a label, a label without an image, an unknown ID or WordNet ID, a file
name outside the official pattern) is one line naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from scipy.io import loadmat

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.hashing import file_sha256
from nonxfer_bench.datasets.base import DATASETS, ILSVRC2012_VAL, IMAGE_SUFFIXES
from nonxfer_bench.datasets.image_folder import FolderParams, ImageFolder

FILE_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")
GROUND_TRUTH = Path("data") / "ILSVRC2012_validation_ground_truth.txt"
META = Path("data") / "meta.mat"


class ImageNetValParams(FolderParams):
    root: Path | None = Field(
        None, description="the flat folder of ILSVRC2012_val_*.JPEG; or set the env var named by root_env"
    )
    devkit: Path | None = Field(
        None, description="ILSVRC2012 devkit folder (data/ILSVRC2012_validation_ground_truth.txt, data/meta.mat)"
    )
    solution: Path | None = Field(None, description="LOC_val_solution.csv (ImageId,PredictionString)")
    synsets: Path | None = Field(
        None, description="LOC_synset_mapping.txt, checked against timm's classes (with solution)"
    )

    @model_validator(mode="after")
    def _one_label_source(self) -> "ImageNetValParams":
        if (self.devkit is None) == (self.solution is None):
            raise ValueError(
                "give exactly one label source: 'devkit' (the ILSVRC2012 devkit folder) or 'solution' "
                "(LOC_val_solution.csv)"
            )
        return self


def timm_classes() -> list[str]:
    """ImageNet-1k WordNet IDs in timm's class order (sorted)."""
    from timm.data import ImageNetInfo  # heavy (timm pulls torchvision: seconds): only ImageNet's class names need it

    return list(ImageNetInfo().label_names())


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"imagenet_val: {what} {path} not found")
    return path


def devkit_labels(devkit: Path, classes: list[str]) -> dict[str, int]:
    """Image stem -> timm class index, from the devkit's ground truth and meta.mat."""
    meta = _existing(devkit / META, "devkit class list")
    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        wnids = {
            int(i): str(w)
            for i, w, children in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"])
            if int(children) == 0
        }
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"imagenet_val: {meta} is not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID, WNID, "
            f"num_children): {error}"
        ) from None
    index = {wnid: i for i, wnid in enumerate(classes)}
    truth = _existing(devkit / GROUND_TRUTH, "devkit ground truth")
    labels = {}
    for number, line in enumerate(truth.read_text().split(), 1):
        if not line.isdigit() or int(line) not in wnids:
            raise UserError(
                f"imagenet_val: {truth} line {number}: {line!r} is not a class ID of {meta} (1..{len(wnids)})"
            )
        wnid = wnids[int(line)]
        if wnid not in index:
            raise UserError(
                f"imagenet_val: {meta}: class ID {line} is WordNet ID {wnid}, which is not an ImageNet-1k class of timm"
            )
        labels[f"ILSVRC2012_val_{number:08d}"] = index[wnid]
    return labels


def solution_labels(solution: Path, classes: list[str]) -> dict[str, int]:
    """Image stem -> timm class index, from LOC_val_solution.csv."""
    index = {wnid: i for i, wnid in enumerate(classes)}
    labels: dict[str, int] = {}
    with open(_existing(solution, "label file"), newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header != ["ImageId", "PredictionString"]:
            raise UserError(
                f"imagenet_val: {solution}: expected the header 'ImageId,PredictionString', found "
                f"{','.join(header or [])!r}"
            )
        for number, row in enumerate(rows, 2):
            if len(row) != 2 or not row[1].split():
                raise UserError(
                    f"imagenet_val: {solution} line {number}: expected 'ImageId,PredictionString', found "
                    f"{','.join(row)!r}"
                )
            image, wnid = row[0], row[1].split()[0]
            if wnid not in index:
                raise UserError(f"imagenet_val: {solution} line {number}: {wnid!r} is not an ImageNet-1k WordNet ID")
            if image in labels:
                raise UserError(f"imagenet_val: {solution} line {number}: a second label for {image}")
            labels[image] = index[wnid]
    return labels


def check_synsets(path: Path, classes: list[str]) -> None:
    """LOC_synset_mapping.txt must list exactly timm's classes (its order may differ: labels use timm's)."""
    listed = [line.split()[0] for line in _existing(path, "synset mapping").read_text().splitlines() if line.strip()]
    if sorted(listed) != classes:
        extra = sorted(set(listed) - set(classes))
        missing = sorted(set(classes) - set(listed))
        raise UserError(
            f"imagenet_val: {path} lists {len(listed)} WordNet IDs that are not timm's {len(classes)} ImageNet-1k "
            f"classes ({len(extra)} unknown, first: {extra[:1]}; {len(missing)} missing, first: {missing[:1]})"
        )


@DATASETS.register("imagenet_val")
class ImageNetVal(ImageFolder):
    """The official flat ImageNet-val folder with the devkit's or LOC_val_solution's labels, in timm's class order."""

    Params = ImageNetValParams
    layout: ClassVar[str] = "the flat folder of ILSVRC2012_val_00000001.JPEG ... (ILSVRC2012_img_val.tar)"

    def labels(self, classes: list[str]) -> dict[str, int]:
        if self.params.solution is not None:
            if self.params.synsets is not None:
                check_synsets(self.params.synsets, classes)
            return solution_labels(self.params.solution, classes)
        return devkit_labels(self.params.devkit, classes)

    def class_names(self) -> list[str]:
        return timm_classes()

    def source(self) -> tuple[str, ...]:
        """ImageNet-val itself: every copy, wherever its folder, holds the same 50,000 images."""
        return (ILSVRC2012_VAL,)

    def check(self) -> None:
        self.files()  # cheap (a listing and one text file): every mismatch is found before any work

    def files(self) -> tuple[list[tuple[Path, int]], list[str]]:
        root = self.root()
        images = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            layout = (
                " (it has sub-folders: for root/<class>/<image> use the dataset 'image_folder')"
                if any(p.is_dir() for p in root.iterdir())
                else ""
            )
            raise UserError(f"imagenet_val: no images in {root}{layout}; expected ILSVRC2012_val_00000001.JPEG ...")
        strange = next((p for p in images if not FILE_NAME.match(p.stem)), None)
        if strange is not None:
            raise UserError(
                f"imagenet_val: {strange.name} in {root} is not named like the official ILSVRC2012_val_00000001.JPEG"
            )
        classes = timm_classes()
        labels = self.labels(classes)
        source = self.params.solution or self.params.devkit / GROUND_TRUTH
        unlabeled = [p.name for p in images if p.stem not in labels]
        if unlabeled:
            raise UserError(
                f"imagenet_val: {len(unlabeled)} image(s) in {root} have no label in {source} (first: {unlabeled[0]})"
            )
        if len(labels) != len(images):
            stems = {p.stem for p in images}
            orphan = next(stem for stem in sorted(labels) if stem not in stems)
            raise UserError(
                f"imagenet_val: {source} labels {len(labels)} images, {root} holds {len(images)} (first without a "
                f"file: {orphan}); give the whole folder (use the suite's dataset.limit for a subset)"
            )
        return [(path, labels[path.stem]) for path in images], classes

    def label_files(self) -> list[Path]:
        """The files the labels come from: LOC_val_solution.csv, or the devkit's ground truth and class list."""
        return (
            [self.params.solution]
            if self.params.solution
            else [self.params.devkit / GROUND_TRUTH, self.params.devkit / META]
        )

    def data_files(self) -> dict[str, Path]:
        return super().data_files() | {f"labels/{path.name}": path for path in self.label_files()}

    def fingerprint(self) -> dict:
        return super().fingerprint() | {"labels": [file_sha256(path) for path in self.label_files()]}
