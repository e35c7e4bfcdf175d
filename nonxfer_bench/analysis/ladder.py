"""The adversary ladder: how much an unauthorized party must know, see and spend to recover its accuracy.

From the results frame's cells that record their attack's threat model (``tier`` and budget, see
:mod:`nonxfer_bench.attacks.threat`), per release:

- *ladder*: per knowledge tier, the best mean unauthorized accuracy the tier reaches at each budget (NEs used =
  released NEs observed + labelled NEs trained on) and the best step overall;
- *cheapest break*: the cheapest attack step whose mean unauthorized accuracy reaches :data:`BREAK_FRACTION` of
  the unauthorized models' clean accuracy, ordered by tier, then NEs used, public images, no attack before any
  attack, then attack name and strength (not wall seconds, which vary with the machine and the cache);
- *identification*: for ``identify`` cells, how often the top-ranked candidate is the authorized model, per
  number of released NEs observed.

Controls are never counted as unauthorized. Cells without a tier (stores written before tiers were recorded) are
left out; with none, there is no ladder.
"""

from __future__ import annotations

import math

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP
from nonxfer_bench.attacks.threat import TIERS

BREAK_FRACTION = 0.9
TIER_ORDER = [tier.value for tier in TIERS]  # none < method < architecture < public weights < white box; labelled NEs
VARIANT_SETTINGS = ("scope",)  # settings that name a variant of an attack (finetune's scope), shown beside its name


def tiered(frame: pd.DataFrame) -> pd.DataFrame:
    """The unauthorized cells with a tier and an accuracy, with ``n`` (labeled images) and ``variant``."""
    rows = frame[(frame.role == "unauthorized") & frame.tier.notna() & frame.accuracy.notna()]
    variant = rows[STEP].map(lambda step: " ".join(f"{k}={v}" for k, v in step.settings if k in VARIANT_SETTINGS))
    return rows.assign(n=rows.n_labeled.fillna(rows.n).astype(int), variant=variant)


def step_accuracies(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (release, step): the mean unauthorized accuracy and the smallest n, with the step's tier, budget and
    variant; an attack that only measures what the release leaks (``identify``) is not a rung."""
    rows = tiered(frame[~frame.measures_only])
    keys = [RELEASE, STEP, "tier", "nes", "public", "variant"]
    return rows.groupby(keys, sort=True).agg(accuracy=("accuracy", exact_mean), n=("n", "min")).reset_index()


def exact_mean(values: pd.Series) -> float:
    """The mean, correctly rounded whatever the order of the values (a table must not depend on the cells' order)."""
    return math.fsum(values) / len(values)


def clean_accuracy(frame: pd.DataFrame) -> pd.Series:
    """The mean clean accuracy of the unauthorized models, by (authorized model, precision)."""
    clean = tiered(frame[(frame.encoder == "clean") & frame.baseline])
    return clean.groupby(["authorized", "precision"])["accuracy"].mean()


def ladder(steps: pd.DataFrame) -> list[dict]:
    """Per release and tier: ``curve`` (budget -> best accuracy) and ``best`` (the tier's best step row)."""
    out = []
    for release, rows in steps[steps[RELEASE].map(lambda r: not r.clean)].groupby(RELEASE, sort=True):
        for tier in [t for t in TIER_ORDER if t in set(rows.tier)]:
            at_tier = rows[rows.tier == tier]
            out.append(
                {
                    "release": release,
                    "tier": tier,
                    "curve": at_tier.groupby("nes")["accuracy"].max(),
                    "best": at_tier.loc[at_tier.accuracy.idxmax()],
                }
            )
    return out


def cheapest_breaks(steps: pd.DataFrame, clean: pd.Series) -> list[dict]:
    """Per release: the break ``target`` and the ``cheapest`` step row reaching it (None: not broken)."""
    out = []
    for release, rows in steps[steps[RELEASE].map(lambda r: not r.clean)].groupby(RELEASE, sort=True):
        target = BREAK_FRACTION * clean.get((release.authorized, release.precision), float("nan"))
        broken = rows[rows.accuracy >= target].assign(order=lambda r: r.tier.map(TIER_ORDER.index))
        broken = broken.assign(
            attacked=broken[STEP].map(lambda s: not s.baseline),
            attack=broken[STEP].map(lambda s: s.attack),
            strength=broken[STEP].map(lambda s: s.strength),
        )  # no attack first among equals: a release broken with no attack is broken by nothing
        cheapest = broken.sort_values(
            ["order", "nes", "public", "attacked", "attack", "strength", "variant"], kind="stable"
        ).head(1)
        out.append({"release": release, "target": target, "cheapest": cheapest.iloc[0] if len(cheapest) else None})
    return out


def identifications(frame: pd.DataFrame) -> list[dict]:
    """Per (release encoding, released NEs): hits and trials of ``identify`` (one trial per release and budget) and
    the mean number of candidates it ranked (NaN without a recorded ranking)."""
    rows = tiered(frame[(frame.attack == "identify") & (frame.encoder != "clean")])  # a clean release has no owner
    if rows.empty:
        return []
    rows = rows.assign(
        chosen=rows.attack_measured.map(lambda m: m.get("chosen")),
        candidates=rows.attack_measured.map(
            lambda m: len(str(m["ranking"]).split(">")) if "ranking" in m else float("nan")
        ),
        release_encoder=rows[RELEASE].map(lambda r: r.encoder),
    )
    trials = rows.drop_duplicates(["group", "nes", "attack_strength"])
    out = []
    for (_, strength, storage, nes), part in trials.groupby(
        ["release_encoder", "strength", "storage", "nes"], sort=True
    ):
        encoding = part[RELEASE].iloc[0]
        out.append(
            {
                "encoding": encoding,
                "nes": int(nes),
                "hits": int((part.chosen == part.authorized).sum()),
                "trials": len(part),
                "candidates": part.candidates,
            }
        )
    return out
