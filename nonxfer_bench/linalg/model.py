"""What the first-layer algebra needs of a classifier: its stem, normalization and pixel-space weight.

:class:`nonxfer_bench.zoo.ZooModel` is one; the protocol lets this layer type its arguments without
importing the zoo, which sits above it.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch import nn

from nonxfer_bench.linalg.geometry import ConvGeometry


class FirstLayerModel(Protocol):
    """A classifier of [0, 1] images with an identifiable first convolution."""

    name: str
    std: torch.Tensor
    input_size: tuple[int, int, int]

    @property
    def first_conv(self) -> nn.Conv2d: ...

    @property
    def geometry(self) -> ConvGeometry: ...

    def pixel_weight(self, dtype: torch.dtype = torch.float64) -> torch.Tensor: ...

    def normalize(self, images: torch.Tensor) -> torch.Tensor: ...

    def prepare(self, images: torch.Tensor) -> torch.Tensor: ...

    def forward_first_layer(self, images: torch.Tensor, flat: torch.Tensor) -> torch.Tensor: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...
