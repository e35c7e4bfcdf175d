"""Security curves: how much unauthorized accuracy an attacker recovers against what it knows and spends.

From cells that record their attack's threat model (knowledge ``tier`` and budget, see
:mod:`nonxfer_bench.attacks.threat`), per release (authorized model, encoder, strength) and knowledge tier, at
each budget the tier's strongest attack step (highest mean unauthorized ``metric``), as the adversary ladder
(:mod:`nonxfer_bench.reporting.ladder`) picks it, with two budgets on their own axes: NEs used (released NEs
observed + labelled NEs trained on, the ladder's budget) and public clean images. Each point carries the mean
over the unauthorized models and the best unauthorized model, each with n and a 95% interval
(:func:`~nonxfer_bench.reporting.uncertainty.aggregate_intervals`: a bootstrap over images paired across models
where cells keep per-image outcomes, else Wilson's). The figure marks the authorized model's clean accuracy and
the ladder's break target, 90% of the unauthorized models' clean accuracy. Controls are never unauthorized;
cells without a tier (older stores) are left out.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.core.cell import Cell
from nonxfer_bench.reporting.figures import caption, encoding_label, metric_label, series_style, styled
from nonxfer_bench.reporting.ladder import BREAK_FRACTION, TIERS
from nonxfer_bench.reporting.uncertainty import aggregate_intervals, metric_n

BUDGETS = {"nes": "NEs used (released + labelled)", "public": "public clean images used"}
STATISTICS = {"mean": "mean over unauthorized models", "max": "best unauthorized model"}
RELEASE = ["authorized", "encoder", "strength"]
STEP = ["attack", "attack_strength", "attack_param", "tier", "nes", "public"]


def threat_frame(frame: pd.DataFrame, cells: list[Cell]) -> pd.DataFrame:
    """``frame`` (the leaderboard's :func:`~nonxfer_bench.reporting.leaderboard.cells_frame` of ``cells``) with each
    cell's ``tier`` and budgets ``nes`` (released + labelled) and ``public``."""
    frame = frame.copy()
    threat = {c.key: (c.tier, (c.budget_released or 0) + (c.budget_labelled or 0), c.budget_public or 0) for c in cells}
    frame[["tier", "nes", "public"]] = pd.DataFrame([threat[key] for key in frame.key], index=frame.index, columns=["tier", "nes", "public"])
    return frame


def security_points(frame: pd.DataFrame, cells: list[Cell], metric: str = "accuracy") -> pd.DataFrame:
    """One row per (release, tier, budget kind, budget): the tier's strongest step there, with columns authorized,
    encoder, strength, tier, budget (``nes`` or ``public``), value (the budget), attack, attack_strength,
    attack_param, mean, mean_lo, mean_hi, max, max_lo, max_hi, max_model and n (images per cell). Empty without
    tiered unauthorized cells of an encoded release. ``frame`` is the cells frame of ``cells``."""
    frame = threat_frame(frame, cells)
    frame = frame[frame.tier.notna() & (frame.role == "unauthorized") & (frame.encoder != "clean")].dropna(subset=[metric])
    steps = []
    for key, part in frame.groupby(RELEASE + STEP, sort=True):
        models = sorted(part.model.unique())
        per_model = part.groupby("model")[metric].mean()
        mean, best = aggregate_intervals(part, models, metric)
        steps.append(
            dict(zip(RELEASE + STEP, key))
            | {"mean": per_model.mean(), "mean_lo": mean.lo, "mean_hi": mean.hi, "max": per_model.max(), "max_lo": best.lo, "max_hi": best.hi}
            | {"max_model": per_model.idxmax(), "n": metric_n(part, metric)}
        )
    if not steps:
        return pd.DataFrame()
    steps = pd.DataFrame(steps)
    points = []
    for budget in BUDGETS:
        for (*release, tier, value), candidates in steps.groupby(RELEASE + ["tier", budget], sort=True):
            best = candidates.loc[candidates["mean"].idxmax()]  # first in sort order among ties
            points.append(best.drop(["nes", "public"]).to_dict() | {"budget": budget, "value": int(value)})
    order = {tier: index for index, tier in enumerate(TIERS)}
    points = pd.DataFrame(points)
    return points.sort_values(RELEASE + ["budget", "tier", "value"], key=lambda c: c.map(order) if c.name == "tier" else c, kind="stable").reset_index(drop=True)


def clean_levels(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per authorized model: its own clean ``metric`` (``authorized``) and the break target (``target``,
    ``BREAK_FRACTION`` of the unauthorized models' mean clean ``metric``), as the ladder's cheapest break uses it."""
    clean = frame[(frame.encoder == "clean") & frame.baseline].dropna(subset=[metric])
    authorized = clean[clean.model == clean.authorized].groupby("authorized")[metric].mean()
    target = BREAK_FRACTION * clean[clean.role == "unauthorized"].groupby("authorized")[metric].mean()
    return pd.DataFrame({"authorized": authorized, "target": target})


def security_curves_figure(frame: pd.DataFrame, cells: list[Cell], metric: str = "accuracy"):
    """The figure of ``security_curves.png``: one row per release, one column per (budget, statistic) with a
    curve per knowledge tier; None unless the cells sweep a budget (two or more budgets of one kind)."""
    points = security_points(frame, cells, metric)
    if points.empty or points.groupby("budget").value.nunique().max() < 2:
        return None
    levels = clean_levels(frame, metric)
    budgets = [b for b in BUDGETS if (points[points.budget == b].value > 0).any()] or ["nes"]
    columns = [(budget, statistic) for budget in budgets for statistic in STATISTICS]
    releases = list(points.groupby(RELEASE, sort=True).groups)
    tiers = [t for t in TIERS if t in set(points.tier)] + sorted(set(points.tier) - set(TIERS))
    styles = {tier: series_style(index) for index, tier in enumerate(tiers)}
    with styled() as plt:
        from matplotlib.lines import Line2D

        figure, axes = plt.subplots(
            len(releases), len(columns), figsize=(3.6 * len(columns) + 1.0, 2.8 * len(releases) + 1.8), squeeze=False, sharex="col", sharey=True, layout="constrained"
        )
        for axes_row, (authorized, encoder, strength) in zip(axes, releases):
            release = points[(points.authorized == authorized) & (points.encoder == encoder) & (points.strength == strength)]
            for axis, (budget, statistic) in zip(axes_row, columns):
                for tier in tiers:
                    curve = release[(release.budget == budget) & (release.tier == tier)]
                    if len(curve):
                        below, above = curve[statistic] - curve[f"{statistic}_lo"], curve[f"{statistic}_hi"] - curve[statistic]
                        axis.errorbar(curve.value, 100 * curve[statistic], yerr=[100 * below.clip(lower=0), 100 * above.clip(lower=0)], capsize=2, markersize=5, **styles[tier])
                if authorized in levels.index:
                    axis.axhline(100 * levels.loc[authorized, "authorized"], color="black", linestyle=":", linewidth=1.2)
                    axis.axhline(100 * levels.loc[authorized, "target"], color="#D55E00", linestyle="--", linewidth=1.2)
            axes_row[0].set_ylabel(f"{encoding_label(encoder, strength)}\nauthorized {authorized}\nunauthorized {metric_label(metric)}")
        axes[0][0].set_ylim(-3, 103)  # shared by every panel: set once
        for axis, (budget, statistic) in zip(axes[0], columns):
            _budget_axis(axis, points[points.budget == budget].value.max())  # shared by its column
            axis.set_title(f"{STATISTICS[statistic]}\nby {BUDGETS[budget].split(' (')[0]}")
        for axis, (budget, _) in zip(axes[-1], columns):
            axis.set_xlabel(f"{BUDGETS[budget]} (count, log)")
        handles = [Line2D([], [], label=f"tier: {tier}", **styles[tier]) for tier in tiers]
        handles += [
            Line2D([], [], color="black", linestyle=":", label="authorized model, clean images"),
            Line2D([], [], color="#D55E00", linestyle="--", label=f"break target: {BREAK_FRACTION:.0%} of unauthorized clean"),
        ]
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        caption(
            figure,
            f"Security curves: unauthorized {metric_label(metric)} against the attacker's budget, one curve per knowledge tier "
            "(at each budget the tier's strongest attack step), per release (rows); error bars: 95% intervals.",
        )
    return figure


def _budget_axis(axis, largest: int) -> None:
    """A log budget axis that also shows 0 (no NEs, no public images): symmetric log, linear below 1, ticks 0, 1, 10, ..."""
    axis.set_xscale("symlog", linthresh=1, linscale=0.5)
    decades = len(str(max(int(largest), 1)))
    ticks = [0] + [10**k for k in range(decades + 1) if 10**k <= 2 * max(largest, 1)]
    axis.set_xticks(ticks, [f"{t:,}" for t in ticks])
    axis.set_xlim(-0.3, 2 * max(largest, 1))
