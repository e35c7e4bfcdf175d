"""A bundle's dataset records name each file the suite reads by a name that does not depend on where it lies, so the
record of one copy of a dataset is the record of every copy, and one changed image changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from nonxfer_bench.bundles.manifest import dataset_record


def image_folder(root: Path) -> Path:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (label == "dog") * 100, dtype=np.uint8)).save(
                root / label / f"{i}.png"
            )
    return root


def test_a_folder_dataset_is_recorded_by_names_inside_it_and_changes_with_an_image(tmp_path):
    spec = {"name": "image_folder"}
    first = dataset_record("dataset", "image_folder", {"root": str(image_folder(tmp_path / "a"))}, spec)
    moved = dataset_record(
        "dataset", "image_folder", {"root": str(shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b"))}, spec
    )
    assert sorted(first.listing) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"] and first.files == 4
    assert (moved.listing, moved.sha256, moved.bytes) == (
        first.listing,
        first.sha256,
        first.bytes,
    )  # only its source (the folder) differs
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / "dog" / "1.png")
    changed = dataset_record("dataset", "image_folder", {"root": str(tmp_path / "a")}, spec)
    assert changed.sha256 != first.sha256 and changed.listing["dog/1.png"] != first.listing["dog/1.png"]


def test_packaged_and_fashion_mnist_files_are_named_as_they_ship():
    photos = dataset_record("dataset", "skimage_photos", {}, {"name": "skimage_photos"})
    assert photos.files == 9 and "astronaut.png" in photos.listing and photos.source == ["skimage_photos"]
    fashion = dataset_record("dataset", "fashion_mnist", {"split": "test"}, {"name": "fashion_mnist"})
    assert sorted(fashion.listing) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] and fashion.source == [
        "fashion_mnist",
        "test",
    ]
