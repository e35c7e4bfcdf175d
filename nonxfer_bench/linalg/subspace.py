"""Patch-level low-sensitivity subspace of a first layer (the published recipe's step 2).

A first ``Conv2d`` with weight (m, C_in, kh, kw) acts on each flattened patch (length
D = C_in*kh*kw, in ``F.unfold`` column order) as the matrix W (m x D). Directions that W barely
sees are its right-singular vectors with the smallest singular values; for D > m there is an exact
null space of dimension D - m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nonxfer_bench.linalg.model import FirstLayerModel

DEFAULT_TAU = 1e-5  # the reference library's default threshold


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


def patch_subspace(weight: torch.Tensor, tau: float = DEFAULT_TAU) -> PatchSubspace:
    """The reference's rule: exact null space if D > m, else singular values <= tau, else the smallest one.

    Follows the published call order (full-matrix ``torch.linalg.svd`` of the float weight; the basis
    is the rows of Vh from index r on, transposed) so that encodings reproduce bit for bit. The SVD runs on
    the CPU whatever device the weight is on (the result comes back there): a null space of more than one
    dimension has no unique basis, and CUDA's solver would pick another one, so releases would differ by device.
    """
    m, d = weight.shape
    _, s, vh = (part.to(weight.device) for part in torch.linalg.svd(weight.cpu(), full_matrices=True))
    if d > m:
        r = m
    else:
        r = int((s > tau).sum())
        r = min(r, d - 1)
    basis = vh[r:].T.contiguous()
    selected = torch.cat([s[r:], s.new_zeros(max(0, basis.shape[1] - s[r:].numel()))])
    return PatchSubspace(basis=basis, singular_values=s, selected_singular_values=selected, exact_null_space=d > m)


def pixel_space_subspace(model: FirstLayerModel, tau: float = DEFAULT_TAU) -> PatchSubspace:
    """Low-sensitivity subspace of ``model``'s first layer as seen from [0, 1] pixels: W diag(1/std), float32 products
    (what the ``patch`` encoder draws from, and what an attacker who holds the model estimates)."""
    return patch_subspace(model.pixel_weight(torch.float32), tau)


def unfold_columns(per_channel: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """A per-channel value (C,) repeated over each channel's kh*kw taps: one value per ``F.unfold`` column (D,)."""
    kh, kw = kernel_size
    return per_channel.flatten().repeat_interleave(kh * kw)


@dataclass(frozen=True)
class NoiseSubspace:
    """The patch-level directions an encoder draws its noise from, in the space it draws them.

    ``space`` is ``normalized`` (a subspace of W, the model's normalized input) or ``pixel`` (of W_eff =
    W diag(1/std), [0, 1] pixels); ``pixel_basis`` (D x k, float64) holds the same directions in pixel
    units (B = diag(std) V_N for a normalized subspace). ``folded``: one vector per image is added to every
    window and the windows are summed by ``F.fold`` (the published recipe), so on an overlapping stem the
    release also carries the clean content times the window count.
    """

    patch: PatchSubspace
    space: Literal["normalized", "pixel"]
    pixel_basis: torch.Tensor
    folded: bool = False

    @classmethod
    def normalized(cls, model: FirstLayerModel, subspace: PatchSubspace, folded: bool) -> "NoiseSubspace":
        """A subspace of the model's normalized-space W, with its pixel-unit basis diag(std) V_N."""
        std = unfold_columns(model.std.double(), model.first_conv.kernel_size)
        return cls(subspace, "normalized", std.unsqueeze(1) * subspace.basis.double(), folded)

    @classmethod
    def pixel(cls, model: FirstLayerModel, tau: float = DEFAULT_TAU) -> "NoiseSubspace":
        """The subspace of W_eff (``ZooModel.pixel_weight``, float64, rounded once to float32 for the SVD)."""
        subspace = patch_subspace(model.pixel_weight().float(), tau)
        return cls(subspace, "pixel", subspace.basis.double())
