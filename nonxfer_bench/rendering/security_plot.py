"""The security-curves figures (``security_curves_<authorized>.png``) from
:func:`~nonxfer_bench.analysis.security.security_points`.

Small multiples: one figure per authorized model (its releases share the clean and break-target lines), one row of
panels per release and one column per (budget, statistic), at most :data:`RELEASES_PER_PAGE` releases a figure
(further releases go to ``security_curves_<authorized>_2.png``, ...), so a figure stays a page high however many
releases a suite has. Every figure has the same axes (budgets up to the largest of the suite, 0 to 100%) and tier
styles, so pages compare at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE
from nonxfer_bench.analysis.ladder import BREAK_FRACTION, TIER_ORDER
from nonxfer_bench.analysis.security import BUDGETS, clean_levels, security_points
from nonxfer_bench.cells.release import Release
from nonxfer_bench.rendering.figures import (
    caption,
    encoding_label,
    errorbar,
    file_stem,
    intervals_note,
    metric_label,
    series_style,
    styled,
)

STATISTICS = {"mean": "mean over unauthorized models", "max": "best unauthorized model"}
RELEASES_PER_PAGE = 4  # rows of a figure: with four (budget, statistic) columns at most a 4 x 4 grid


def security_curves_figures(frame: pd.DataFrame, metric: str = "accuracy") -> dict[str, object]:
    """The security-curves figures by file name, in order (see the module docstring); empty unless the cells sweep a
    budget (two or more budgets of one kind)."""
    points = security_points(frame, metric)
    if points.empty or points.groupby("budget").value.nunique().max() < 2:
        return {}
    budgets = [b for b in BUDGETS if (points[points.budget == b].value > 0).any()] or ["nes"]
    tiers = [t for t in TIER_ORDER if t in set(points.tier)] + sorted(set(points.tier) - set(TIER_ORDER))
    shared = _Shared(
        points,
        clean_levels(frame, metric),
        metric,
        [(budget, statistic) for budget in budgets for statistic in STATISTICS],
        {tier: series_style(index) for index, tier in enumerate(tiers)},
        {budget: points[points.budget == budget].value.max() for budget in budgets},
    )
    figures = {}
    releases = sorted(set(points[RELEASE]))
    for authorized in sorted({release.authorized for release in releases}):
        own = [release for release in releases if release.authorized == authorized]
        pages = [own[start : start + RELEASES_PER_PAGE] for start in range(0, len(own), RELEASES_PER_PAGE)]
        for number, page in enumerate(pages, 1):
            name = f"security_curves_{file_stem(authorized)}{'' if len(pages) == 1 else f'_{number}'}.png"
            figures[name] = _page(
                shared, authorized, page, "" if len(pages) == 1 else f" (page {number} of {len(pages)})"
            )
    return figures


@dataclass(frozen=True)
class _Shared:
    """What every page of the security curves shares: the points, clean levels, columns, tier styles and budget axes."""

    points: pd.DataFrame
    levels: pd.DataFrame
    metric: str
    columns: list[tuple[str, str]]  # (budget, statistic)
    styles: dict[str, dict]  # tier -> its series style
    largest: dict[str, int]  # budget -> the largest value of the suite: every page's axis ends there


def _page(shared: _Shared, authorized: str, releases: list[Release], page: str):
    """One figure: ``releases`` of ``authorized`` as rows, the (budget, statistic) columns."""
    points, columns = shared.points, shared.columns
    on_page = points[points[RELEASE].isin(releases)]
    tiers = [tier for tier in shared.styles if tier in set(on_page.tier)]
    with styled() as plt:
        from matplotlib.lines import (
            Line2D,
        )  # heavy (~0.8 s): matplotlib is imported only when a figure is drawn (see figures.pyplot)

        figure, axes = plt.subplots(
            len(releases),
            len(columns),
            figsize=(3.6 * len(columns) + 1.0, 2.8 * len(releases) + 2.2),
            squeeze=False,
            sharex="col",
            sharey=True,
            layout="constrained",
        )
        for axes_row, key in zip(axes, releases):
            release = on_page[on_page[RELEASE] == key]
            for axis, (budget, statistic) in zip(axes_row, columns):
                for tier in tiers:
                    curve = release[(release.budget == budget) & (release.tier == tier)]
                    if len(curve):
                        below, above = (
                            curve[statistic] - curve[f"{statistic}_lo"],
                            curve[f"{statistic}_hi"] - curve[statistic],
                        )
                        errorbar(
                            axis,
                            curve.value,
                            100 * curve[statistic],
                            100 * below.clip(lower=0),
                            100 * above.clip(lower=0),
                            **shared.styles[tier],
                        )
                if authorized in shared.levels.index:
                    axis.axhline(
                        100 * shared.levels.loc[authorized, "authorized"], color="black", linestyle=":", linewidth=1.2
                    )
                    axis.axhline(
                        100 * shared.levels.loc[authorized, "target"], color="#D55E00", linestyle="--", linewidth=1.2
                    )
            axes_row[0].set_ylabel(
                f"{encoding_label(key.encoding, key.strength)}\nunauthorized {metric_label(shared.metric)}"
            )
        axes[0][0].set_ylim(-3, 103)  # shared by every panel: set once
        for axis, (budget, statistic) in zip(axes[0], columns):
            _budget_axis(axis, shared.largest[budget])  # shared by its column
            axis.set_title(f"{STATISTICS[statistic]}\nby {BUDGETS[budget].split(' (')[0]}")
        for axis, (budget, _) in zip(axes[-1], columns):
            axis.set_xlabel(f"{BUDGETS[budget]} (count, log)")
        handles = [Line2D([], [], label=f"tier: {tier}", **shared.styles[tier]) for tier in tiers]
        handles += [
            Line2D([], [], color="black", linestyle=":", label=f"{authorized} (authorized), clean images"),
            Line2D(
                [],
                [],
                color="#D55E00",
                linestyle="--",
                label=f"break target: {BREAK_FRACTION:.0%} of unauthorized clean",
            ),
        ]
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        caption(
            figure,
            f"Security curves of the releases for authorized model {authorized}{page}: unauthorized "
            f"{metric_label(shared.metric)} against the attacker's budget, one curve per knowledge tier (at each "
            f"budget the tier's strongest attack step), one row per release; {intervals_note(figure)}.",
        )
    return figure


def _budget_axis(axis, largest: int) -> None:
    """A log budget axis that also shows 0 (no NEs, no public images): symmetric log, linear below 1, ticks 0, 1, 10,
    ..."""
    axis.set_xscale("symlog", linthresh=1, linscale=0.5)
    decades = len(str(max(int(largest), 1)))
    ticks = [0] + [10**k for k in range(decades + 1) if 10**k <= 2 * max(largest, 1)]
    axis.set_xticks(ticks, [f"{t:,}" for t in ticks])
    axis.set_xlim(-0.3, 2 * max(largest, 1))
