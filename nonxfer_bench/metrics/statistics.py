"""Intervals and paired tests for accuracies measured on a finite set of images (numpy and scipy only).

A cell's accuracy is k correct of n images; its interval is Wilson's score interval (or Clopper-Pearson's
exact one). Two cells over the same images are compared per image: the exact McNemar test and Newcombe's
interval for the difference of paired proportions. Aggregates over models (mean and max unauthorized
accuracy) get a paired bootstrap over images: one resample of the images serves every model. Holm's
step-down method adjusts p-values for the number of comparisons a winner was chosen from.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import stats


class Interval(NamedTuple):
    """A point estimate and its confidence interval [lo, hi]."""

    estimate: float
    lo: float
    hi: float


class Gain(NamedTuple):
    """A paired difference (second minus first), its confidence interval and a two-sided p-value."""

    estimate: float
    lo: float
    hi: float
    p: float


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson(k: float, n: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for k successes of n; k may be fractional (a mean over draws or models).

    n = 0 gives the uninformative [0, 1] around NaN.
    """
    if n <= 0:
        return Interval(float("nan"), 0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = (0.0 if k == 0 else float(centre - half)), (1.0 if k == n else float(centre + half))
    return Interval(p, max(0.0, lo), min(1.0, hi))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Clopper-Pearson's exact interval for k successes of n (integer k), from beta quantiles."""
    if n <= 0:
        return Interval(float("nan"), 0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    alpha = 1 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(k / n, lo, hi)


def _paired_bits(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired outcomes need two 1-d arrays of one length, got {first.shape} and {second.shape}")
    return first, second


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> float:
    """Exact (conditional) McNemar p-value for paired bits: two-sided binomial test of the discordant pairs.

    1.0 when no pair is discordant.
    """
    first, second = _paired_bits(first, second)
    gained, lost = int((second & ~first).sum()), int((first & ~second).sum())
    return 1.0 if gained + lost == 0 else float(stats.binomtest(gained, gained + lost, 0.5).pvalue)


def paired_difference(first: np.ndarray, second: np.ndarray, confidence: float = 0.95) -> Interval:
    """Difference of paired proportions mean(second) - mean(first) with Newcombe's (1998) method 10.

    Method 10 combines the Wilson intervals of both proportions ("square and add") with the
    continuity-corrected correlation phi of the paired 2x2 table; unlike the Wald interval it does not
    collapse to a point when no pair is discordant.
    """
    first, second = _paired_bits(first, second)
    n = len(first)
    if n == 0:
        return Interval(float("nan"), -1.0, 1.0)
    both, second_only = int((first & second).sum()), int((second & ~first).sum())
    first_only, neither = int((first & ~second).sum()), int((~first & ~second).sum())
    p2, p1 = (both + second_only) / n, (both + first_only) / n
    _, l2, u2 = wilson(both + second_only, n, confidence)
    _, l1, u1 = wilson(both + first_only, n, confidence)
    margins = (both + second_only) * (first_only + neither) * (both + first_only) * (second_only + neither)
    phi = 0.0
    if margins > 0:
        a = both * neither - second_only * first_only
        phi = (a - n / 2) / np.sqrt(margins) if a > n / 2 else (0.0 if a >= 0 else a / np.sqrt(margins))
    estimate = p2 - p1
    lower = np.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    upper = np.sqrt(max(0.0, (u2 - p2) ** 2 + (p1 - l1) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1)))
    return Interval(estimate, float(estimate - lower), float(estimate + upper))


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    adjusted = np.empty_like(p)
    adjusted[order] = scaled
    return adjusted


def sign_flip_p(differences: np.ndarray) -> float:
    """Two-sided p-value that paired per-image differences are symmetric about 0 (sign-flip test).

    With differences in {-1, 0, 1} (one model's bits) the exact null distribution is binomial and this is
    the exact McNemar test; otherwise (means over models, draws or seeds) its normal approximation
    z = sum(d) / sqrt(sum(d^2)), whose variance is exact under sign flips.
    """
    d = np.asarray(differences, dtype=float)
    if np.isin(d, (-1.0, 0.0, 1.0)).all():
        return mcnemar_exact(d < 0, d > 0)
    scale = np.sqrt(np.sum(d * d))
    return 1.0 if scale == 0 else float(2 * stats.norm.sf(abs(d.sum()) / scale))


@lru_cache(maxsize=1)
def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n): how often each image is drawn in each bootstrap resample. Cached: a leaderboard's rows
    share their images, so they share one set of resamples (160 MB for 10,000 images and 2,000 resamples)."""
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, n))
    chunk = max(1, 4_000_000 // n)  # bounded temporary memory
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts[start : start + size] = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
    counts.flags.writeable = False
    return counts


def bootstrap_over_images(
    values: np.ndarray, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[Interval, Interval]:
    """Percentile intervals of the mean and the max over models of per-model accuracy, by a paired bootstrap.

    ``values`` is (models, images): 1 where a model was right on an image (or a fraction, for a mean over
    draws or seeds). Every resample draws the images once, with replacement, for all models, so the
    correlation between models on the same images is kept. Seeded: the same input gives the same interval.
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    models, n = values.shape
    if n == 0 or models == 0:
        raise ValueError(f"need at least one model and one image, got shape {values.shape}")
    per_model = _resample_counts(n, resamples, seed) @ values.T / n  # (resamples, models)
    tails = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
    accuracy = values.mean(axis=1)
    return (
        Interval(float(accuracy.mean()), *map(float, np.percentile(per_model.mean(axis=1), tails))),
        Interval(float(accuracy.max()), *map(float, np.percentile(per_model.max(axis=1), tails))),
    )


def paired_gain(
    first: np.ndarray, second: np.ndarray, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Gain:
    """The gain in mean accuracy over models of ``second`` over ``first`` on the same images, with interval and p.

    Both are (models, images), same models in the same order. One model with 0/1 outcomes: Newcombe's
    interval (:func:`paired_difference`) and the exact McNemar p. Otherwise (several models, or fractions
    from draws or seeds): the per-image mean difference over models, a paired bootstrap percentile interval
    (:func:`bootstrap_over_images`) and the sign-flip p (:func:`sign_flip_p`).
    """
    first, second = np.atleast_2d(np.asarray(first, dtype=float)), np.atleast_2d(np.asarray(second, dtype=float))
    if first.shape != second.shape:
        raise ValueError(f"paired outcomes need one shape, got {first.shape} and {second.shape}")
    binary = np.isin(first, (0.0, 1.0)).all() and np.isin(second, (0.0, 1.0)).all()
    if first.shape[0] == 1 and binary:
        interval = paired_difference(first[0].astype(bool), second[0].astype(bool), confidence)
        return Gain(*interval, mcnemar_exact(first[0].astype(bool), second[0].astype(bool)))
    differences = (second - first).mean(axis=0)
    interval, _ = bootstrap_over_images(differences, resamples, seed, confidence)
    return Gain(*interval, sign_flip_p(differences))


def seed_summary(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and between-seed spread (sample standard deviation, ddof 1) of one number over several seeds.

    The spread is NaN for a single seed: it is not measured, not zero.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no seeds to summarize")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")
