"""Patch-level low-sensitivity subspace of a first layer (the published recipe's step 2).

A first ``Conv2d`` with weight (m, C_in, kh, kw) acts on each flattened patch (length
D = C_in*kh*kw, in ``F.unfold`` column order) as the matrix W (m x D). Directions that W barely
sees are its right-singular vectors with the smallest singular values; for D > m there is an exact
null space of dimension D - m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConvGeometry:
    """Window geometry of a convolution, as ``F.unfold``/``F.fold`` take it."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "ConvGeometry":
        if isinstance(conv.padding, str):
            raise ValueError(f"padding={conv.padding!r} is not supported; need explicit integers")
        return cls(
            tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups
        )

    @property
    def overlapping(self) -> bool:
        """True when windows share pixels (stride smaller than the dilated kernel extent)."""
        extent = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation)]
        return any(s < e for s, e in zip(self.stride, extent))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of windows on a height x width input (the convolution's output grid)."""
        return tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation)
        )

    def unfold_kwargs(self) -> dict:
        return dict(kernel_size=self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)


@dataclass(frozen=True)
class PatchSubspace:
    """Orthonormal basis V_N (D x k) of the low-sensitivity directions of W, and its spectrum."""

    basis: torch.Tensor
    singular_values: torch.Tensor
    selected_singular_values: torch.Tensor
    exact_null_space: bool

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    @property
    def sigma_s(self) -> float:
        """Largest singular value over the chosen directions (0 for an exact null space)."""
        return float(self.selected_singular_values.max()) if self.k else 0.0


def flatten_weight(conv: nn.Conv2d) -> torch.Tensor:
    """W with shape (m, D), columns in (C_in, kh, kw) order; grouped convs are refused."""
    if conv.groups != 1:
        raise ValueError(f"grouped first layer (groups={conv.groups}) has no single patch matrix")
    return conv.weight.detach().flatten(1)


def patch_subspace(weight: torch.Tensor, tau: float = 1e-5) -> PatchSubspace:
    """The reference's rule: exact null space if D > m, else singular values <= tau, else the smallest one.

    Follows the published call order (full-matrix ``torch.linalg.svd`` of the float weight; the basis
    is the rows of Vh from index r on, transposed) so that encodings reproduce bit for bit.
    """
    m, d = weight.shape
    _, s, vh = torch.linalg.svd(weight, full_matrices=True)
    if d > m:
        r = m
    else:
        r = int((s > tau).sum())
        r = min(r, d - 1)
    basis = vh[r:].T.contiguous()
    selected = torch.cat([s[r:], s.new_zeros(max(0, basis.shape[1] - s[r:].numel()))])
    return PatchSubspace(basis=basis, singular_values=s, selected_singular_values=selected, exact_null_space=d > m)
