"""scikit-learn's 8x8 handwritten digits: always installed, so the tests run on real images in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import DATASETS, Dataset, ImageSet


class DigitsParams(Strict):
    split: Literal["train", "test", "all"] = "test"
    size: int = Field(16, ge=8, le=1024, description="upsampled side length (nearest), so stems have room")


@DATASETS.register("digits")
class Digits(Dataset):
    """scikit-learn's 1,797 8x8 handwritten digits; a fixed 70/30 split; always installed, for tests."""

    Params = DigitsParams

    def load(self) -> ImageSet:
        from sklearn.datasets import (
            load_digits,
        )  # heavy (~2 s): only when the digits are loaded, not whenever the registry scans datasets

        bunch = load_digits()
        images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
        images = torch.nn.functional.interpolate(images.float(), size=self.params.size, mode="nearest").to(torch.uint8)
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        cut = int(0.7 * len(labels))
        index = {"train": order[:cut], "test": order[cut:], "all": order}[self.params.split].sort().values
        return ImageSet(images[index], labels[index], self.class_names())

    def class_names(self) -> list[str]:
        return [str(i) for i in range(10)]

    def data_files(self) -> dict[str, Path]:
        """scikit-learn's copy of the digits (every split and size decodes from it)."""
        import sklearn.datasets  # heavy (~2 s), as in load()

        return {
            "sklearn/datasets/data/digits.csv.gz": Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
        }

    def source(self) -> tuple[str, ...]:
        """The split (train and test are disjoint; all holds both), whatever the size."""
        return ("digits",) if self.params.split == "all" else ("digits", self.params.split)
