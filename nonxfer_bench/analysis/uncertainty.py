"""n, 95% intervals and paired tests for the numbers of the results frame (:mod:`nonxfer_bench.metrics.statistics`
applied to it); their text is :mod:`nonxfer_bench.rendering.text`.

A row of a leaderboard table is a mean over seeds (and attack draws) of cells evaluated on the same n
images. Its interval is Wilson's for that proportion with n images: for a mean over seeds, draws or
models of proportions on the same images this is conservative (the mean's variance is at most that of one
proportion with the mean's value), and the spread between seeds is reported apart. Where the cells keep
per-image outcomes (cell schema 2), aggregates over models get a paired bootstrap over images instead and
an attack step is compared with no attack image by image (McNemar, Newcombe, sign-flip test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nonxfer_bench.cells.cell import Outcomes
from nonxfer_bench.metrics.statistics import Gain, Interval, bootstrap_over_images, paired_gain, wilson

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


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


def per_image(outcomes: dict, metric: str) -> tuple[str, np.ndarray]:
    """A cell's per-image ``metric`` (mean over its attack draws) and the hash of its image ids."""
    cell = Outcomes.model_validate(outcomes)
    if metric == "accuracy":
        labeled = cell.labeled_bits()
        flags = [cell.correct_bits(draw)[labeled] for draw in range(len(cell.correct))]
    else:
        flags = [cell.agree_bits(draw) for draw in range(len(cell.agree))]
    return cell.ids, np.mean(flags, axis=0)


def outcome_matrix(part: pd.DataFrame, models: list[str], metric: str) -> tuple[str, np.ndarray] | None:
    """(images key, (models, images) array): each model's per-image ``metric``, mean over seeds and draws.

    None when a model has no cell here, a cell has no per-image outcomes (stores of schema 1) or the cells
    were not evaluated on the same images.
    """
    if not models or "outcomes" not in part:
        return None
    keys, rows = set(), []
    for model in models:
        stored = part.loc[part.model == model, "outcomes"]
        if stored.empty or not all(isinstance(outcomes, dict) for outcomes in stored):
            return None
        per_seed = [per_image(outcomes, metric) for outcomes in stored]
        keys |= {key for key, _ in per_seed}
        if len(keys) > 1:
            return None
        rows.append(np.mean([flags for _, flags in per_seed], axis=0))
    return keys.pop(), np.vstack(rows)


def aggregate_intervals(part: pd.DataFrame, models: list[str], metric: str) -> tuple[Interval | None, Interval | None]:
    """Mean and max over ``models`` of ``metric`` with 95% intervals: a paired bootstrap over images when
    there are several models and the cells keep per-image outcomes, else Wilson at the mean (conservative)
    and the max model's Wilson (one model: its Wilson interval, twice)."""
    matrix = outcome_matrix(part, models, metric) if len(models) > 1 else None
    if matrix is not None and matrix[1].shape[1] > 0:
        return bootstrap_over_images(matrix[1], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE)
    values = part[part.model.isin(models)].groupby("model")[metric].mean().dropna()
    if values.empty:
        return None, None
    n = metric_n(part[part.model.isin(models)], metric)
    return proportion_interval(values.mean(), n), proportion_interval(
        values.max(), metric_n(part[part.model == values.idxmax()], metric)
    )


def gain_over_baseline(baseline: pd.DataFrame, attacked: pd.DataFrame, models: list[str], metric: str) -> Gain | None:
    """The attack's gain in mean ``metric`` over ``models`` against no attack, paired per image (and seed):
    :func:`~nonxfer_bench.metrics.statistics.paired_gain`. None without per-image outcomes on both sides."""
    before, after = outcome_matrix(baseline, models, metric), outcome_matrix(attacked, models, metric)
    if before is None or after is None or before[0] != after[0] or before[1].shape[1] == 0:
        return None
    return paired_gain(before[1], after[1], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE)
