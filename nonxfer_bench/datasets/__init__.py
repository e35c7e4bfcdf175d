"""Datasets, registered by name: one module per source (fashion_mnist, digits, image_folder, imagenet_val, packaged)."""

from nonxfer_bench.datasets.base import DATASETS, Dataset, ImageSet, load_cached, load_dataset

__all__ = ["DATASETS", "Dataset", "ImageSet", "load_cached", "load_dataset"]
