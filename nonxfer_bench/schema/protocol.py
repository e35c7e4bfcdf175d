"""A versioned evaluation protocol: the attack ensemble every release faces, per knowledge tier, and how the verdict
is computed. A file the code reads (``suites/protocols/*.yaml``); changing what it fixes makes a new version, and
every leaderboard names the version it used.

A suite runs a protocol with ``protocol: {file: protocols/ne-v1.yaml, ensemble: fast}``: the loader appends the
ensemble's attacks to the suite's own (:func:`nonxfer_bench.loading.load_suite`). Model names in an attack's
parameters may be written as placeholders, expanded per suite: ``"@public"`` is every zoo model the suite neither
authorizes nor lists as a control (the models an attacker may hold), ``"@zoo"`` every zoo model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from nonxfer_bench.schema.suite import AttackSpec, Ensemble, Frozen, PlainName

# the knowledge tiers in the order a verdict accumulates them (each tier's attacks and every lower tier's); white box
# is reported beside the verdict, never as its headline
VERDICT_TIERS = ("none", "method", "architecture", "public_weights", "labelled_nes")
WHITE_BOX = "white_box"
TierName = Literal["none", "method", "architecture", "public_weights", "labelled_nes", "white_box"]
PUBLIC, ZOO = "@public", "@zoo"


class VerdictSpec(Frozen):
    """How a verdict is computed from the cells' per-image outcomes.

    The evaluated images are split once, by ``seed``: a ``tuning`` share on which each tier's strongest (attack step,
    unauthorized model) is chosen, and the rest, on which that choice is reported with its interval, so picking the
    best of many attacks inflates no number (no winner's curse)."""

    tuning: float = Field(
        0.2, gt=0, lt=1, description="share of the evaluated images that choose each tier's strongest attack"
    )
    seed: int = Field(0, ge=0, lt=2**31, description="seeds the split into tuning and report images")
    break_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="a release counts as broken at a tier when the best unauthorized accuracy reaches this share of "
        "the unauthorized models' clean accuracy",
    )
    no_attack_stage: bool = Field(
        False,
        strict=True,
        description="a protocol run scores each release with no attack first, as a stage of its own: a release that "
        "settles there (see 'stop') faces none of the none tier's attacks",
    )
    stop: Literal["broken", "unheld"] = Field(
        "broken",
        description="after which tier a protocol run attacks a release no further: 'broken', the first that breaks "
        "it; 'unheld', the first it does not hold (broken, or its gap not above 0 beyond its interval: an attacker "
        "who knows more can only lower the gap, up to the noise of choosing each tier's attack)",
    )

    def split(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(tuning, report) positions among ``count`` evaluated images (the labelled ones, in dataset order, when the
        verdict scores accuracy): the one split the verdict and every attack that searches its settings on tuning images
        (``tuned``) use, so that no search sees an image its result is reported on."""
        order = np.random.default_rng(self.seed).permutation(count)
        cut = round(self.tuning * count)
        return order[:cut], order[cut:]


class Protocol(Frozen):
    """The attack ensemble per knowledge tier (``full``: the standard; ``fast``: a cheaper subset with the same
    tiers for a quick run, reported as such) and the verdict rule."""

    name: PlainName
    version: int = Field(ge=1, le=10_000)
    description: str = Field("", max_length=20_000)
    full: dict[TierName, list[AttackSpec]] = Field(min_length=1)
    fast: dict[TierName, list[AttackSpec]] = Field(min_length=1)
    verdict: VerdictSpec = VerdictSpec()

    @field_validator("full", "fast")
    @classmethod
    def _no_empty_tier(cls, tiers: dict[str, list[AttackSpec]]) -> dict[str, list[AttackSpec]]:
        for tier, attacks in tiers.items():
            if not attacks:
                raise ValueError(f"tier {tier!r} lists no attack (leave the tier out instead)")
        return tiers

    @property
    def label(self) -> str:
        """``ne-v1``: what a leaderboard names."""
        return self.name

    def ensemble(self, which: Ensemble) -> dict[str, list[AttackSpec]]:
        return self.full if which == "full" else self.fast
