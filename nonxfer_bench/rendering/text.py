"""How numbers read in tables: percentages, intervals, signed changes in points and p-values."""

from __future__ import annotations

import math

import pandas as pd

from nonxfer_bench.metrics.statistics import Gain, Interval

SIGNIFICANCE = 0.05
MISSING = "—"  # a paired number that needs per-image outcomes the store does not have


def percent(value: float | None) -> str:
    """A proportion in % with one decimal; blank when undefined."""
    return "" if value is None or pd.isna(value) else f"{100 * value:.1f}"


def with_interval(interval: Interval | None) -> str:
    """``83.5 [78.1, 87.9]``: the estimate and its interval in %; blank when undefined."""
    if interval is None or math.isnan(interval.estimate):
        return ""
    return f"{percent(interval.estimate)} [{percent(interval.lo)}, {percent(interval.hi)}]"


def gain_text(gain: Gain | None) -> str:
    """``+12.5 [+5.0, +20.0]``: a change in points with its interval; ``—`` without per-image outcomes."""
    if gain is None:
        return MISSING
    return f"{signed_points(gain.estimate)} [{signed_points(gain.lo)}, {signed_points(gain.hi)}]"


def signed_points(value: float) -> str:
    """A signed difference in points with one decimal; never ``-0.0``."""
    return f"{round(100 * value, 1) + 0.0:+.1f}"


def p_text(p: float | None, verdict: bool = False) -> str:
    """A p-value with three decimals (``<0.001`` below); ``verdict`` adds "not significant" at p >= 0.05."""
    if p is None:
        return MISSING
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return f"{text} (not significant)" if verdict and p >= SIGNIFICANCE else text


def gap_text(gap: float, interval: Interval | None) -> str:
    """``+45.5 [+38.0, +52.5]``: the gap in points and its 95% interval; the estimate alone without one."""
    if interval is None:
        return signed_points(gap)
    return f"{signed_points(interval.estimate)} [{signed_points(interval.lo)}, {signed_points(interval.hi)}]"


def db(value: float | None) -> str:
    """A PSNR in dB with one decimal; ``inf`` for identical images (no finite PSNR)."""
    return "inf" if value is None or pd.isna(value) else f"{value:.1f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table, every value as its ``str``."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
