"""Model identification: what a release leaks about who may read it.

``identify`` changes no image. It ranks public candidate models by how much of the release's excess energy
lies in each candidate's low-sensitivity subspace (the scoring of ``surrogate_projection``,
:func:`~nonxfer_bench.attacks.surrogate.rank_candidates`) from the first ``released`` NEs of the group, and
records the ranking in every cell's ``attack_param``: ``chosen`` (the top candidate), ``authorized_rank``
(1 = the authorized model was identified; 0 = it is not among the candidates) and ``ranking``. The
leaderboard's identification table counts, per ``released`` budget, how often ``chosen`` is the authorized
model.
"""

from __future__ import annotations

import torch
from pydantic import Field

from nonxfer_bench.attacks._subspace_tools import Tau
from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.surrogate import rank_candidates
from nonxfer_bench.attacks.threat import BudgetParams, ThreatModel, Tier
from nonxfer_bench.core.params import ZooModelName


class IdentifyParams(BudgetParams):
    candidates: list[ZooModelName] = Field(
        min_length=1, max_length=1000, description="zoo model names the attacker holds (public models)"
    )
    tau: Tau = Field(1e-5, description="singular-value threshold for each candidate's V_N")


@ATTACKS.register("identify")
class Identify(Attack):
    """Ranks the candidates by the explained excess variance of the release; returns the images unchanged."""

    measures_only = True
    Params = IdentifyParams
    threat = ThreatModel(
        tier=Tier.PUBLIC_WEIGHTS,
        text="knows the method and holds public candidate models and clean public images; asks which candidate "
        "the release was made for",
        released=True,
        public=True,
    )

    def __init__(self, params: IdentifyParams) -> None:
        super().__init__(params)
        self.ranking: list[str] | None = None
        self.authorized = ""

    def fit(self, context: AttackContext) -> None:
        scored, _ = rank_candidates(
            self.name, self.params.candidates, context, self.params.tau, exclude_authorized=False
        )
        self.ranking = [name for _, _, name, _, _ in scored]
        self.authorized = context.authorized.name

    def measured(self, strength: float) -> dict:
        """The ranking the fit found: the top candidate, the authorized model's rank (0: not a candidate), all."""
        if self.ranking is None:
            return {}
        rank = self.ranking.index(self.authorized) + 1 if self.authorized in self.ranking else 0
        return {"chosen": self.ranking[0], "authorized_rank": rank, "ranking": ">".join(self.ranking)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.ranking is None:
            raise RuntimeError(f"{self.name}: call fit() with an AttackContext before attacking")
        return images.clone()
