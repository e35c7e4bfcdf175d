"""Surrogate-zoo projection: identify the authorized stem among public candidates, then project its V_N out.

The attacker knows the method and a list of public models (``candidates``, names in the suite's zoo),
but not which one, if any, is authorized. For each candidate it computes the pixel-space low-sensitivity
subspace V_N of the candidate's first layer and asks how much of the release's variance in excess of
clean data that subspace explains; the best-scoring candidate(s) are used like the oracle.

Score of a candidate (higher = better explanation): the *explained excess*, the share of the release's
variance in excess of clean data that lies in the candidate's subspace, over the candidate's own tiles:
``(tr(V^T C_released V) - tr(V^T C_clean V)) / (tr C_released - tr C_clean)``. The authorized stem
explains all of an encoder's low-sensitivity noise (score near 1); a stem whose V_N overlaps it by
chance explains a part; ties go to the smaller subspace (less clean content destroyed). A variance
*ratio* instead would favour any tiny subspace where clean images have almost no energy. Candidates whose
input size or channel count differ from the release cannot be authorized (the release is made at the
authorized model's input size) and are skipped.
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
    covariance,
    first_layer_tiles,
    not_fitted,
)
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import BudgetParams, ThreatModel, Tier
from nonxfer_bench.core.params import ZooModelName


class SurrogateParams(BudgetParams):
    candidates: list[ZooModelName] = Field(
        min_length=1, max_length=1000, description="zoo model names the attacker holds (public models)"
    )
    exclude_authorized: bool = Field(False, description="drop the authorized model from the candidates (it is private)")
    select: int = Field(
        1, ge=1, le=1000, description="how many top-scoring candidates to project out (applied in score order)"
    )
    tau: Tau = Field(1e-5, description="singular-value threshold for each candidate's V_N")
    restore: Restore = Field(
        "regression", description="what replaces the removed component: clean regression, clean mean, or nothing"
    )
    ridge: Ridge = Field(1e-3, description="relative ridge on the clean covariance")


def explained_excess(tiling: Tiling, basis: torch.Tensor, released: torch.Tensor, public: torch.Tensor) -> float:
    """Share of the release's variance in excess of the public images' that lies in ``basis`` (module docstring)."""
    _, c_released = covariance(tiling.patches(released))
    if len(public) > 1:
        c_released = c_released - covariance(tiling.patches(public.to(released.device)))[1]
    total = float(torch.trace(c_released))
    if total <= 0:
        return 0.0
    basis = basis.to(c_released.device)  # the candidate's subspace is computed where its weights are
    return float(torch.trace(basis.T @ c_released @ basis)) / total


Ranked = list[tuple[float, int, str, Tiling, torch.Tensor]]  # (score, subspace dims, name, tiling, V_N), best first


def rank_candidates(
    attack: str, candidates: list[str], context: AttackContext, tau: float, exclude_authorized: bool
) -> tuple[Ranked, dict[str, float | None]]:
    """Candidates ranked by explained excess (ties: the smaller subspace, then the name), and every score
    (None for a candidate whose input shape differs from the release's: it cannot be authorized)."""
    released, public = context.released, context.public_images
    scored: Ranked = []
    scores: dict[str, float | None] = {}
    for name in candidates:
        if exclude_authorized and name == context.authorized.name:
            continue
        try:
            model = context.model(name)
        except Exception:
            raise ValueError(f"{attack}: candidate {name!r} is not a model of the zoo") from None
        if tuple(model.input_size) != tuple(released.shape[1:]):
            scores[name] = None
            continue
        tiling, basis = first_layer_tiles(model, tau)
        scores[name] = explained_excess(tiling, basis, released, public)
        scored.append((scores[name], basis.shape[1], name, tiling, basis))
    if not scored:
        raise ValueError(
            f"{attack}: no candidate among {candidates} matches the release's shape {tuple(released.shape[1:])}"
        )
    scored.sort(key=lambda item: (-round(item[0], 6), item[1], item[2]))
    return scored, scores


@ATTACKS.register("surrogate_projection")
class SurrogateProjection(Attack):
    """Picks the candidate stem(s) whose V_N best explains the release's excess variance and projects it out.

    Scoring as in the module docstring (explained excess variance per candidate on its own tile lattice,
    from ``context.released`` against ``context.public_images``; without public images, the share of the
    released variance in V_N). The top ``select`` candidates are applied one after the other, each as
    ``oracle_projection`` would with that candidate's weights: per tile p - s V (V^T p - a_hat), s the
    removed fraction. ``parameter()`` names the chosen candidate(s). Unclipped values are used as they are.
    Needs :meth:`fit` (it raises otherwise).
    """

    Params = SurrogateParams
    threat = ThreatModel(
        tier=Tier.PUBLIC_WEIGHTS,
        text=(
            "knows the method and holds a list of public candidate models (first layers included) that may contain "
            "the authorized one, plus clean public images; does not know which candidate is authorized"
        ),
        released=True,
        public=True,
    )

    def __init__(self, params: SurrogateParams) -> None:
        super().__init__(params)
        self.chosen: list[tuple[str, Tiling, SubspaceRemover]] | None = None
        self.scores: dict[str, float | None] = {}

    def fit(self, context: AttackContext) -> None:
        public = context.public_images
        scored, self.scores = rank_candidates(
            self.name, self.params.candidates, context, self.params.tau, self.params.exclude_authorized
        )
        self.chosen = []
        for _, _, name, tiling, basis in scored[: self.params.select]:
            clean = tiling.patches(public) if len(public) else None
            self.chosen.append((name, tiling, SubspaceRemover(basis, clean, self.params.restore, self.params.ridge)))

    def parameter(self, strength: float) -> dict:
        return {"removed": round(strength, 4)}

    def measured(self, strength: float) -> dict:
        """The candidates the fit chose (they differ between releases)."""
        return {} if self.chosen is None else {"chosen": "+".join(name for name, _, _ in self.chosen)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.chosen is None:
            raise not_fitted(self.name)
        out = images
        for _, tiling, remover in self.chosen:
            out = tiling.apply(out, lambda rows, remover=remover: remover(rows, strength))
        return out.clone() if out is images else out
