"""n and 95% intervals for the leaderboard's numbers, and their text (:mod:`nonxfer_bench.metrics.statistics`).

A row of a leaderboard table is a mean over seeds (and attack draws) of cells evaluated on the same n
images. Its interval is Wilson's for that proportion with n images: for a mean over seeds, draws or
models of proportions on the same images this is conservative (the mean's variance is at most that of one
proportion with the mean's value), and the spread between seeds is reported apart.
"""

from __future__ import annotations

import math

import pandas as pd

from nonxfer_bench.metrics.statistics import Interval, wilson

CONFIDENCE = 0.95


def metric_n(part: pd.DataFrame, metric: str) -> int | None:
    """The images a row's ``metric`` counts: labeled images for accuracy, all for agreement (the smallest
    over the row's cells, which is the conservative choice); None when unknown."""
    counts = part["n_labeled"].fillna(part["n"]) if metric == "accuracy" else part["n"]
    counts = pd.to_numeric(counts, errors="coerce").dropna()
    return int(counts.min()) if len(counts) else None


def proportion_interval(value: float | None, n: int | None) -> Interval | None:
    """Wilson's 95% interval for a proportion measured on n images (None when either is missing)."""
    if value is None or n is None or pd.isna(value) or n <= 0:
        return None
    return wilson(min(max(value, 0.0), 1.0) * n, n, CONFIDENCE)


def percent(value: float | None) -> str:
    """A proportion in % with one decimal; blank when undefined."""
    return "" if value is None or pd.isna(value) else f"{100 * value:.1f}"


def with_interval(interval: Interval | None) -> str:
    """``83.5 [78.1, 87.9]``: the estimate and its interval in %; blank when undefined."""
    if interval is None or math.isnan(interval.estimate):
        return ""
    return f"{percent(interval.estimate)} [{percent(interval.lo)}, {percent(interval.hi)}]"
