"""Threat models as data: what an attacker knows (a tier) and what it spends (a budget).

Every registered attack declares a :class:`ThreatModel` on its class (``threat``), so tables can put
attacks on one ladder: from no knowledge of the scheme to the authorized model's weights, and how many
released NEs, labelled NEs and public clean images each one consumed. The budget an attack actually used
in an encoding group is a :class:`Budget`, recorded on every cell. Estimation attacks take the budget as
parameters (:class:`BudgetParams`), so a suite can sweep it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_serializer

from nonxfer_bench.core.params import MAX_IMAGES, Strict


class Tier(StrEnum):
    """What the attacker knows, from least to most (the order of the ladder's rows)."""

    NONE = "none"  # nothing about the scheme: generic image processing
    METHOD = "method"  # the encoding method is public
    ARCHITECTURE = "architecture"  # plus the authorized architecture (stem geometry, normalization)
    PUBLIC_WEIGHTS = "public_weights"  # plus public candidate models that may include the authorized one
    WHITE_BOX = "white_box"  # the authorized model's weights
    LABELLED_NES = "labelled_nes"  # labelled released NEs (trains on the release itself)


TIERS = list(Tier)


class ThreatModel(Strict):
    """An attack's declared knowledge tier, the resources it may use, and a readable sentence for the docs.

    ``released``/``public``/``labelled``: whether it reads released NEs, clean public images, labelled NEs;
    ``queries``: which access to a model it needs (none, forward passes, gradients); ``requires``: what the
    suite must hold for the attack to run at all (the loader refuses a suite without it): ``public``, the
    suite's ``public`` dataset; ``public_labels``, one whose images all have labels.
    """

    model_config = ConfigDict(frozen=True)

    tier: Tier
    text: str = Field(min_length=1)
    released: bool = False
    public: bool = False
    labelled: bool = False
    queries: Literal["none", "model", "gradient"] = "none"
    requires: frozenset[Literal["public", "public_labels"]] = frozenset()


class Budget(Strict):
    """What one fitted attack consumed in an encoding group (counts of images)."""

    model_config = ConfigDict(frozen=True)

    released: int = Field(0, ge=0)
    labelled: int = Field(0, ge=0)
    public: int = Field(0, ge=0)


BUDGET_FIELDS = ("released", "public")


class BudgetParams(Strict):
    """Parameters of attacks that fit on data: how many released NEs and public images they may use.

    ``None`` (the default) means all the group provides; a default is left out of the parameter dump, so
    suites that do not set a budget keep their cell keys.
    """

    released: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES,
        description="released NEs the attacker observes for fitting (the group's first n, across batches); the first "
        "batch if unset",
    )
    public: int | None = Field(
        None, ge=0, le=MAX_IMAGES, description="clean public images the attacker uses (first n); all if unset"
    )

    @model_serializer(mode="wrap")
    def _drop_unset_budget(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in BUDGET_FIELDS:
            if data.get(name, 0) is None:
                data.pop(name)
        return data
