"""The published recipe's flat input: what it feeds an overlapping authorized stem instead of an image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nonxfer_bench.linalg.geometry import ConvGeometry


@dataclass
class FlatInput:
    """What the published code feeds an overlapping authorized stem directly: U + n 1^T, the unfolded clean
    windows (normalized space) plus the noise vector n in every window. Held as the clean normalized
    images and n, so nothing is unfolded unless :meth:`patches` is asked for."""

    normalized: torch.Tensor  # B x C x H x W
    noise: torch.Tensor  # B x D x 1
    geometry: ConvGeometry

    def padded(self) -> torch.Tensor:
        """The clean normalized images as the stem reads them: with a TF-same stem's own zero padding, so that
        every one of its output windows is a window of U (the published protocol feeds the noise to all of them)."""
        return F.pad(self.normalized, self.geometry.same_padding(*self.normalized.shape[-2:]))

    def patches(self) -> torch.Tensor:
        """U + n 1^T itself (B x D x L), L = every window of the stem's output."""
        return F.unfold(self.padded(), **self.geometry.unfold_kwargs()) + self.noise

    def first_layer(self, weight: torch.Tensor) -> torch.Tensor:
        """W (U + n 1^T) without unfolding: the convolution of the clean images plus W n (B x O x L, no bias)."""
        geometry = self.geometry
        conv = F.conv2d(self.padded(), weight, None, geometry.stride, geometry.padding, geometry.dilation)
        return conv.flatten(2) + weight.flatten(1) @ self.noise
