"""The one-line verdict of ``verify``: is the release measurably non-transferable on the images it holds?

Rule (docs, "Protecting a folder"): the release is *non-transferable* when the authorized model's 95% Wilson
interval lies entirely above that of the best unauthorized model (the one with the highest score); controls
are never counted. The score is accuracy when labels are known (``--labels``), else agreement with each
model's own predictions on the originals. Overlapping intervals mean the images cannot tell them apart: the
release is then *not shown* to be non-transferable (more images narrow the intervals).
"""

from __future__ import annotations

from typing import Any

from nonxfer_bench.metrics.statistics import Interval, wilson


def _interval(row: dict, metric: str) -> Interval:
    return wilson(round(row[metric] * row["n"]), row["n"])


def _describe(name: str, interval: Interval) -> str:
    return f"{name} {100 * interval.estimate:.1f}% [{100 * interval.lo:.1f}, {100 * interval.hi:.1f}]"


def verdict(rows: list[dict], metric: str) -> dict[str, Any]:
    """The verdict on scored ``rows`` (each with ``model``, ``role``, ``n`` and ``metric``): a dict with
    ``non_transferable`` (True, False, or None when no unauthorized model was scored), ``metric`` and ``text``."""
    authorized = next(row for row in rows if row["role"] == "authorized")
    others = [row for row in rows if row["role"] == "unauthorized"]
    if not others:
        return {
            "non_transferable": None,
            "metric": metric,
            "text": "verdict: none: no unauthorized model was scored (only the authorized model and controls); add "
            "some with --models",
        }
    best = max(others, key=lambda row: row[metric])
    mine, theirs = _interval(authorized, metric), _interval(best, metric)
    holds = mine.lo > theirs.hi
    comparison = (
        f"authorized {_describe(authorized['model'], mine)} vs best unauthorized {_describe(best['model'], theirs)} "
        f"({metric}, n={authorized['n']}, 95% Wilson intervals)"
    )
    if holds:
        text = f"verdict: the release is non-transferable: {comparison}"
    elif mine.estimate > theirs.estimate:
        text = (
            f"verdict: the release is NOT shown to be non-transferable: {comparison} overlap; more images would "
            "narrow them"
        )
    else:
        text = (
            f"verdict: the release is NOT non-transferable: {comparison}; an unauthorized model scores as high as the "
            "authorized one"
        )
    return {"non_transferable": holds, "metric": metric, "text": text}
