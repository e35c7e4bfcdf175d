"""Oracle projection: the attacker holds the authorized first layer and removes its low-sensitivity subspace.

The upper bound of every subspace-removal attack: with the authorized stem's weights, V_N (pixel
space, W diag(1/std), as the ``patch`` encoder uses it) is known exactly, and whatever an encoder put
there can be taken out tile by tile. What the attack cannot give back is the clean image's own content
in V_N; ``parameter()`` reports that share (``clean_energy_in_vn``: the fraction of the public images'
tile energy that lies in V_N), the price every projection attack pays.
"""

from __future__ import annotations

import torch
from pydantic import Field

from nonxfer_bench.attacks._subspace_tools import (
    Restore,
    Ridge,
    SubspaceRemover,
    Tau,
    Tiling,
    energy_fraction,
    first_layer_tiles,
    not_fitted,
)
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict


class OracleParams(Strict):
    tau: Tau = Field(1e-5, description="singular-value threshold for V_N (the encoders' default)")
    restore: Restore = Field(
        "regression", description="what replaces the removed component: clean regression, clean mean, or nothing"
    )
    ridge: Ridge = Field(1e-3, description="relative ridge on the clean covariance")


@ATTACKS.register("oracle_projection")
class OracleProjection(Attack):
    """Projects the authorized stem's V_N out of every tile: p - s V (V^T p - a_hat).

    Tiles are kernel-sized at the stem's padding offset with stride = kernel (the ``patch`` encoder's
    lattice; for a non-overlapping stem, exactly its windows). a_hat is the clean conditional expectation
    of the V_N coordinates given the rest of the tile (``restore: regression``, fitted on the public
    images; ``mean``: their mean; ``none``: 0, the plain orthogonal projection). Strength s is the removed
    fraction (0: identity, 1: full). If the clean images have no energy in V_N the output at s = 1 is the
    clean image, exactly. Unclipped values are used as they are. Needs :meth:`fit` (it raises otherwise).
    """

    Params = OracleParams
    threat = ThreatModel(
        tier=Tier.WHITE_BOX,
        text="white box: holds the authorized model's first layer (weights and normalization) and clean public images",
        public=True,
    )

    def __init__(self, params: OracleParams) -> None:
        super().__init__(params)
        self.tiling: Tiling | None = None
        self.remover: SubspaceRemover | None = None
        self.k = 0
        self.clean_energy: float | None = None

    def fit(self, context: AttackContext) -> None:
        self.tiling, basis = first_layer_tiles(context.authorized, self.params.tau)
        clean = self.tiling.patches(context.public_images) if len(context.public_images) else None
        self.remover = SubspaceRemover(basis, clean, self.params.restore, self.params.ridge)
        self.k = basis.shape[1]
        self.clean_energy = energy_fraction(clean, basis) if clean is not None else None

    def parameter(self, strength: float) -> dict:
        return {"removed": round(strength, 4), "k": self.k}

    def measured(self, strength: float) -> dict:
        """The share of the public images' energy that lies in V_N."""
        return {} if self.clean_energy is None else {"clean_energy_in_vn": round(self.clean_energy, 5)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.remover is None:
            raise not_fitted(self.name)
        return self.tiling.apply(images, lambda rows: self.remover(rows, strength))
