"""The one description of a first layer's window geometry: where its windows sit on an image.

Every consumer reads it from here: ``F.unfold``/``F.fold`` (the patch-level recipe), the whole-image
operator (``linalg.operator``), the bounds, the flat-input path of a zoo model and the attackers' patch
lattices. A timm ``Conv2dSame`` stem (TF "same", e.g. ``tf_efficientnet_*``) has ``padding == 0`` and pads
inside its forward, asymmetrically and depending on the input size; that is the ``same`` field, so the
explicit ``padding`` stays what ``F.unfold`` takes and :meth:`ConvGeometry.same_padding` says the rest.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from torch import nn


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def is_tf_same(conv: nn.Module) -> bool:
    """True for timm's ``Conv2dSame`` (checked without importing timm: if timm is not loaded, no conv is one)."""
    module = sys.modules.get("timm.layers.conv2d_same")
    return module is not None and isinstance(conv, module.Conv2dSame)


@dataclass(frozen=True)
class ConvGeometry:
    """Window geometry of a convolution: ``F.unfold``/``F.fold``'s arguments, groups, padding mode and TF-same."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"
    same: bool = False  # pads (total per axis as TF "same") inside the forward: timm's Conv2dSame

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "ConvGeometry":
        if isinstance(conv.padding, str):
            raise ValueError(f"padding={conv.padding!r} is not supported; need explicit integers")
        return cls(
            _pair(conv.kernel_size),
            _pair(conv.stride),
            _pair(conv.padding),
            _pair(conv.dilation),
            conv.groups,
            conv.padding_mode,
            is_tf_same(conv),
        )

    @property
    def extent(self) -> tuple[int, int]:
        """Rows and columns one (dilated) window spans."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    @property
    def overlapping(self) -> bool:
        """True when windows share pixels (stride smaller than the dilated kernel extent)."""
        return any(s < e for s, e in zip(self.stride, self.extent))

    def windows(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the windows ``F.unfold`` takes with :meth:`unfold_kwargs` (explicit padding only)."""
        return tuple(
            (n + 2 * p - e) // s + 1 for n, e, s, p in zip((height, width), self.extent, self.stride, self.padding)
        )

    def same_padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The TF-same padding the layer adds on a height x width input, in ``F.pad`` order (left, right, top, bottom).

        Zeros unless ``same``; the odd pixel goes to the bottom/right, as timm's ``pad_same`` does.
        """
        if not self.same:
            return (0, 0, 0, 0)
        total_h, total_w = (
            max((math.ceil(n / s) - 1) * s + e - n, 0) for n, s, e in zip((height, width), self.stride, self.extent)
        )
        return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the layer's own output on a height x width input (TF-same padding included)."""
        left, right, top, bottom = self.same_padding(height, width)
        return self.windows(height + top + bottom, width + left + right)

    def window_offset(self, height: int, width: int) -> tuple[int, int]:
        """Where the unfolded windows' grid starts in the layer's output grid (nonzero only for TF-same stems).

        Raises ValueError when the same padding shifts the windows off the stride grid (no output is one window).
        """
        left, _, top, _ = self.same_padding(height, width)
        (sh, sw) = self.stride
        if top % sh or left % sw:
            raise ValueError("TF-same padding offsets the stem's windows off the unfold grid")
        return top // sh, left // sw

    def unfold_kwargs(self) -> dict:
        return dict(kernel_size=self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def tiling(self) -> "ConvGeometry":
        """Non-overlapping kernel-sized tiles at this layer's padding offset (stride = kernel): the ``patch``
        encoder's lattice, and exactly the windows of a non-overlapping stem."""
        return ConvGeometry(self.kernel_size, self.kernel_size, self.padding)
