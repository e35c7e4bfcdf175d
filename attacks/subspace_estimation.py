"""Subspace estimation from released data: find the directions the encoder inflated and project them out.

The attacker holds a sample of the release (``context.released``) and clean public images
(``context.public_images``). NE noise lives in a low-dimensional subspace, so the released data have
*excess variance* there. Solving the generalized eigenproblem C_released v = lambda C_clean v gives the
directions ordered by variance ratio; the attack removes the top ``dims`` of them and restores, by
default, their clean conditional expectation given the rest (see ``SubspaceRemover``). Prior art: the
orthogonal projection attack against unlearnable examples (Sandoval-Segura et al., 2023, "What can we
learn from unlearnable datasets?"), which projects out directions found from the poisoned data.

- ``subspace_patch``: at patch level, over the tiles of the assumed stem lattice (the attacker knows
  the method and the authorized architecture's kernel, or a given one).
- ``subspace_image``: at image level (vectors of C*H*W pixels; no lattice knowledge at all), for small
  images only (``max_pixels``).

Strength s maps to the number of removed directions, round(s x ``max_dims``) (capped at the dimension).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from pydantic import BaseModel, Field

from nonxfer_bench.attacks._subspace_tools import (
    MAX_PIXELS,
    Lattice,
    LatticeParams,
    Restore,
    Ridge,
    SubspaceRemover,
    excess_variance_directions,
    not_fitted,
)
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import BudgetParams, ThreatModel, Tier


class _Estimated(Attack):
    """Common part: fit the generalized eigenbasis once, build one remover per dimension on demand."""

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.basis: torch.Tensor | None = None
        self.ratios: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None
        self._removers: dict[int, SubspaceRemover] = {}

    @abstractmethod
    def rows(self, images: torch.Tensor) -> torch.Tensor:
        """The vectors the estimator works on (stem tiles or whole images), one per row."""

    @abstractmethod
    def apply_rows(self, images: torch.Tensor, fn) -> torch.Tensor:
        """Apply ``fn`` to the rows of ``images`` and put the result back into image form."""

    def fit_rows(self, released: torch.Tensor, public: torch.Tensor) -> None:
        released_rows = self.rows(released)
        self.clean = self.rows(public) if len(public) else None
        limit = min(self.params.max_dims, released_rows.shape[1])
        self.basis, self.ratios = excess_variance_directions(released_rows, self.clean, limit, self.params.ridge)
        self._removers = {}

    def dims(self, strength: float) -> int:
        limit = self.params.max_dims if self.basis is None else self.basis.shape[1]
        return round(strength * limit)

    def parameter(self, strength: float) -> dict:
        return {"dims": self.dims(strength)}

    def measured(self, strength: float) -> dict:
        """The variance ratio of the last removed direction on this release."""
        dims = self.dims(strength)
        return {"ratio": round(float(self.ratios[dims - 1]), 3)} if self.ratios is not None and dims else {}

    def remover(self, dims: int) -> SubspaceRemover:
        if dims not in self._removers:
            self._removers[dims] = SubspaceRemover(
                self.basis[:, :dims], self.clean, self.params.restore, self.params.ridge
            )
        return self._removers[dims]

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.basis is None:
            raise not_fitted(self.name)
        dims = self.dims(strength)
        if dims == 0:
            return images.clone()
        remover = self.remover(dims)
        return self.apply_rows(images, lambda rows: remover(rows))


class SubspacePatchParams(LatticeParams, BudgetParams):
    max_dims: int = Field(
        32, ge=1, le=MAX_PIXELS, description="directions removed at strength 1 (capped at the patch dimension)"
    )
    restore: Restore = Field(
        "regression", description="what replaces the removed component: clean regression, clean mean, or nothing"
    )
    ridge: Ridge = Field(1e-3, description="relative ridge on the clean covariances")


@ATTACKS.register("subspace_patch")
class SubspacePatch(_Estimated):
    """Removes the top excess-variance directions (release vs public images) from every stem tile.

    Tiles of the assumed lattice (kernel-sized, stride = kernel, at the stem's padding offset, as the
    ``patch`` encoder tiles) from the released sample and the public images;
    the top round(s x ``max_dims``) excess-variance directions are removed from every tile of every image.
    Unclipped values are used as they are. Without public images the clean covariance is the identity
    (plain PCA of released tiles). Needs :meth:`fit` (it raises otherwise)."""

    Params = SubspacePatchParams
    threat = ThreatModel(
        tier=Tier.ARCHITECTURE,
        text=(
            "knows the method and the authorized architecture's stem kernel (not its weights); holds released NEs "
            "and clean public images; estimates the noise subspace from their patch covariances"
        ),
        released=True,
        public=True,
    )

    def fit(self, context: AttackContext) -> None:
        self.tiling = Lattice.resolve(self.params, context).tiling
        self.fit_rows(context.released, context.public_images)

    def rows(self, images: torch.Tensor) -> torch.Tensor:
        return self.tiling.patches(images)

    def apply_rows(self, images: torch.Tensor, fn) -> torch.Tensor:
        return self.tiling.apply(images, fn)


class SubspaceImageParams(BudgetParams):
    max_dims: int = Field(64, ge=1, le=MAX_PIXELS, description="directions removed at strength 1")
    restore: Restore = Field(
        "regression", description="what replaces the removed component: clean regression, clean mean, or nothing"
    )
    ridge: Ridge = Field(1e-3, description="relative ridge on the clean covariances")
    max_pixels: int = Field(
        4096, ge=1, le=MAX_PIXELS, description="refuse images with more than this many values (C*H*W)"
    )


@ATTACKS.register("subspace_image")
class SubspaceImage(_Estimated):
    """Removes the top excess-variance directions (release vs public images) from whole images.

    Images as vectors (C*H*W values, at most ``max_pixels``); the top round(s x ``max_dims``)
    excess-variance directions are removed. Needs no lattice: it also sees
    structure the encoder spreads across patches (the fold of an overlapping stem). Unclipped values are
    used as they are. Needs :meth:`fit` (it raises otherwise)."""

    Params = SubspaceImageParams
    threat = ThreatModel(
        tier=Tier.METHOD,
        text=(
            "knows only that the noise is low-dimensional; holds released NEs and clean public images; "
            "estimates the noise subspace from their image covariances"
        ),
        released=True,
        public=True,
    )

    def fit(self, context: AttackContext) -> None:
        size = context.released[0].numel()
        if size > self.params.max_pixels:
            raise ValueError(
                f"subspace_image: images have {size} values, more than max_pixels={self.params.max_pixels}"
            )
        self.fit_rows(context.released, context.public_images)

    def rows(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def apply_rows(self, images: torch.Tensor, fn) -> torch.Tensor:
        return fn(images.flatten(1)).view_as(images)
