"""Datasets: real Fashion-MNIST from IDX files, digits, image folders; seeded subsets."""

import numpy as np
import pytest
import torch
from PIL import Image

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.datasets.base import load_dataset


def test_fashion_mnist_reads_the_full_local_test_split():
    test = load_dataset("fashion_mnist", {"split": "test"})
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes[9] == "Ankle boot"


def test_seeded_subsets_are_deterministic_and_differ_between_seeds():
    digits = load_dataset("digits", {"split": "all"})
    a, b, c = digits.subset(100, 0), digits.subset(100, 0), digits.subset(100, 1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(a) == 100 and digits.subset(None, 0) is digits


def test_digits_splits_are_disjoint_and_cover_the_set():
    train, test = load_dataset("digits", {"split": "train"}), load_dataset("digits", {"split": "test"})
    assert len(train) + len(test) == 1797
    assert train.images.shape[-1] == 16


def test_image_folder_reads_imagenet_val_layout(tmp_path):
    for label, name in enumerate(["n01", "n02"]):
        (tmp_path / name).mkdir()
        for i in range(2):
            array = np.full((40, 60, 3), 50 * label + i, dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"img{i}.png")
    (tmp_path / "n02" / "notes.txt").write_text("not an image")
    data = load_dataset("image_folder", {"root": str(tmp_path), "size": 32})
    assert data.images.shape == (4, 3, 32, 32)
    assert data.labels.tolist() == [0, 0, 1, 1] and data.classes == ["n01", "n02"]
    assert int(data.images[2].float().mean()) == 50


def test_an_image_folder_subset_decodes_only_the_chosen_files_and_equals_the_full_decode_subset(tmp_path, monkeypatch):
    import nonxfer_bench.datasets.image_folder as data_module
    from nonxfer_bench.datasets.base import DATASETS

    for label in range(3):
        (tmp_path / f"c{label}").mkdir()
        for i in range(4):
            Image.fromarray(np.full((20, 30, 3), 20 * label + i, dtype=np.uint8)).save(
                tmp_path / f"c{label}" / f"{i}.png"
            )
    dataset = DATASETS.create("image_folder", {"root": str(tmp_path), "size": 16})
    full = dataset.load().subset(5, 3)
    decoded = []
    original = data_module.decode_image
    monkeypatch.setattr(data_module, "decode_image", lambda path, **kw: decoded.append(path) or original(path, **kw))
    chosen = dataset.load_subset(5, 3)
    assert len(decoded) == 5
    assert (
        torch.equal(chosen.images, full.images)
        and torch.equal(chosen.labels, full.labels)
        and chosen.classes == full.classes
    )


def test_a_cached_image_folder_subset_is_decoded_into_the_cache_file_and_read_back_equal(tmp_path, monkeypatch):
    from nonxfer_bench.datasets.base import DATASETS, load_cached

    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    for label in range(2):
        (tmp_path / "data" / f"c{label}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 30, 3), 40 * label + i, dtype=np.uint8)).save(
                tmp_path / "data" / f"c{label}" / f"{i}.png"
            )
    params = {"root": str(tmp_path / "data"), "size": 16}
    cached = load_cached("image_folder", params, 4, 1)
    expected = DATASETS.create("image_folder", params).load().subset(4, 1)
    assert torch.equal(cached.images, expected.images) and torch.equal(cached.labels, expected.labels)
    assert sorted(p.suffix for p in (tmp_path / "cache" / "datasets").iterdir()) == [
        ".TAG",
        ".json",
        ".npy",
    ]  # no partial file left


def test_an_image_edited_in_place_to_the_same_size_and_modification_time_is_decoded_again(tmp_path, monkeypatch):
    """The cache must not serve an image folder's old pixels: ``cp -p`` or ``rsync -a`` give an edited file its old
    size and modification time, and only the change time (which nothing can restore) tells."""
    import os

    from nonxfer_bench.datasets.base import load_cached

    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "data" / "c0" / "0.bmp"  # uncompressed: the same size whatever the pixels
    image.parent.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 10, dtype=np.uint8)).save(image)
    params = {"root": str(tmp_path / "data"), "size": 16}
    assert int(load_cached("image_folder", params, None, 0).images.max()) == 10
    before = image.stat()
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(image)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert image.stat().st_size == before.st_size and image.stat().st_mtime_ns == before.st_mtime_ns
    assert int(load_cached("image_folder", params, None, 0).images.max()) == 200


def test_image_folder_errors_name_what_to_provide(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_VAL", raising=False)
    with pytest.raises(UserError, match="IMAGENET_VAL"):
        load_dataset("image_folder", {})
    with pytest.raises(UserError, match="no class sub-folders"):
        load_dataset("image_folder", {"root": str(tmp_path)})
    (tmp_path / "n01").mkdir()
    (tmp_path / "n01" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg: cannot read image"):
        load_dataset("image_folder", {"root": str(tmp_path)})
