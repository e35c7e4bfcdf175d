"""The security-curves figure (``security_curves.png``) from :func:`~nonxfer_bench.analysis.security.security_points`."""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE
from nonxfer_bench.analysis.ladder import BREAK_FRACTION, TIER_ORDER
from nonxfer_bench.analysis.security import BUDGETS, clean_levels, security_points
from nonxfer_bench.rendering.figures import caption, encoding_label, metric_label, series_style, styled

STATISTICS = {"mean": "mean over unauthorized models", "max": "best unauthorized model"}


def security_curves_figure(frame: pd.DataFrame, metric: str = "accuracy"):
    """The figure of ``security_curves.png``: one row per release, one column per (budget, statistic) with a
    curve per knowledge tier; None unless the cells sweep a budget (two or more budgets of one kind)."""
    points = security_points(frame, metric)
    if points.empty or points.groupby("budget").value.nunique().max() < 2:
        return None
    levels = clean_levels(frame, metric)
    budgets = [b for b in BUDGETS if (points[points.budget == b].value > 0).any()] or ["nes"]
    columns = [(budget, statistic) for budget in budgets for statistic in STATISTICS]
    releases = sorted(set(points[RELEASE]))
    tiers = [t for t in TIER_ORDER if t in set(points.tier)] + sorted(set(points.tier) - set(TIER_ORDER))
    styles = {tier: series_style(index) for index, tier in enumerate(tiers)}
    with styled() as plt:
        from matplotlib.lines import Line2D

        figure, axes = plt.subplots(
            len(releases), len(columns), figsize=(3.6 * len(columns) + 1.0, 2.8 * len(releases) + 1.8), squeeze=False, sharex="col", sharey=True, layout="constrained"
        )
        for axes_row, key in zip(axes, releases):
            release, authorized = points[points[RELEASE] == key], key.authorized
            for axis, (budget, statistic) in zip(axes_row, columns):
                for tier in tiers:
                    curve = release[(release.budget == budget) & (release.tier == tier)]
                    if len(curve):
                        below, above = curve[statistic] - curve[f"{statistic}_lo"], curve[f"{statistic}_hi"] - curve[statistic]
                        axis.errorbar(curve.value, 100 * curve[statistic], yerr=[100 * below.clip(lower=0), 100 * above.clip(lower=0)], capsize=2, markersize=5, **styles[tier])
                if authorized in levels.index:
                    axis.axhline(100 * levels.loc[authorized, "authorized"], color="black", linestyle=":", linewidth=1.2)
                    axis.axhline(100 * levels.loc[authorized, "target"], color="#D55E00", linestyle="--", linewidth=1.2)
            axes_row[0].set_ylabel(f"{encoding_label(key.encoding, key.strength)}\nauthorized {authorized}\nunauthorized {metric_label(metric)}")
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
