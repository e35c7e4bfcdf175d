"""Security curves: how much unauthorized accuracy an attacker recovers against what it knows and spends.

From cells that record their attack's threat model (knowledge ``tier`` and budget, see
:mod:`nonxfer_bench.attacks.threat`), per release (authorized model, encoder, strength) and knowledge tier, at
each budget the tier's strongest attack step (highest mean unauthorized ``metric``), as the adversary ladder
(:mod:`nonxfer_bench.analysis.ladder`) picks it, with two budgets on their own axes: NEs used (released NEs
observed + labelled NEs trained on, the ladder's budget) and public clean images. Each point carries the mean
over the unauthorized models and the best unauthorized model, each with n and a 95% interval
(:func:`~nonxfer_bench.analysis.uncertainty.aggregate_intervals`: a bootstrap over images paired across models
where cells keep per-image outcomes, else Wilson's). The figure marks the authorized model's clean accuracy and
the ladder's break target, 90% of the unauthorized models' clean accuracy. Controls are never unauthorized;
cells without a tier (older stores) are left out.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP
from nonxfer_bench.analysis.ladder import BREAK_FRACTION, TIER_ORDER
from nonxfer_bench.analysis.uncertainty import aggregate_intervals, metric_n

BUDGETS = {"nes": "NEs used (released + labelled)", "public": "public clean images used"}
KEYS = [RELEASE, STEP, "tier", "nes", "public"]


def security_points(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per (release, tier, budget kind, budget): the tier's strongest step there, with columns release,
    step, tier, budget (``nes`` or ``public``), value (the budget), mean, mean_lo, mean_hi, max, max_lo, max_hi,
    max_model and n (images per cell). Empty without tiered unauthorized cells of an encoded release."""
    frame = frame[frame.tier.notna() & (frame.role == "unauthorized") & (frame.encoder != "clean")].dropna(
        subset=[metric]
    )
    steps = []
    for key, part in frame.groupby(KEYS, sort=True):
        models = sorted(part.model.unique())
        per_model = part.groupby("model")[metric].mean()
        mean, best = aggregate_intervals(part, models, metric)
        steps.append(
            dict(zip(KEYS, key))
            | {
                "mean": per_model.mean(),
                "mean_lo": mean.lo,
                "mean_hi": mean.hi,
                "max": per_model.max(),
                "max_lo": best.lo,
                "max_hi": best.hi,
            }
            | {"max_model": per_model.idxmax(), "n": metric_n(part, metric)}
        )
    if not steps:
        return pd.DataFrame()
    steps = pd.DataFrame(steps)
    points = []
    for budget in BUDGETS:
        for (_, _, value), candidates in steps.groupby([RELEASE, "tier", budget], sort=True):
            best = candidates.loc[candidates["mean"].idxmax()]  # first in sort order among ties
            points.append(best.drop(["nes", "public"]).to_dict() | {"budget": budget, "value": int(value)})
    order = {tier: index for index, tier in enumerate(TIER_ORDER)}
    points = pd.DataFrame(points)
    return points.sort_values(
        [RELEASE, "budget", "tier", "value"], key=lambda c: c.map(order) if c.name == "tier" else c, kind="stable"
    ).reset_index(drop=True)


def clean_levels(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per authorized model: its own clean ``metric`` (``authorized``) and the break target (``target``,
    :data:`BREAK_FRACTION` of the unauthorized models' mean clean ``metric``), as the ladder's cheapest break uses
    it."""
    clean = frame[(frame.encoder == "clean") & frame.baseline].dropna(subset=[metric])
    authorized = clean[clean.model == clean.authorized].groupby("authorized")[metric].mean()
    target = BREAK_FRACTION * clean[clean.role == "unauthorized"].groupby("authorized")[metric].mean()
    return pd.DataFrame({"authorized": authorized, "target": target})
