"""The theory statistics: which first-layer number predicts the unauthorized accuracy drop, from the no-attack
cells' ``bound/`` numbers (computed per encoding group by :mod:`nonxfer_bench.linalg.bounds`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from nonxfer_bench.linalg.bounds import PREFIX, finite_or_none


def bound_records(frame: pd.DataFrame) -> list[dict]:
    """The no-attack cells of the results frame as flat dicts, in the order the cells were given: who, what and the
    accuracy, with their ``bound/`` numbers."""
    plain = frame[frame.baseline].sort_values("position")
    fields = ["authorized", "encoder", "strength", "model", "role", "baseline", "accuracy"]
    return [
        {k: (None if k == "accuracy" and pd.isna(v) else v) for k, v in zip(fields, row[:-1])} | row[-1]
        for row in plain[fields + ["bounds"]].itertuples(index=False, name=None)
    ]


def numeric_bounds(cell: dict) -> dict[str, float]:
    """The cell's numeric ``bound/`` entries (for metrics and tables)."""
    return {
        k: float(v)
        for k, v in cell.items()
        if k.startswith(PREFIX) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


PREDICTORS = {
    "bound/misalignment": "misalignment ||W'_eff Q||_F / ||W'_eff||_F",
    "bound/hw_lhs": "spectral gap sum_i (sigma_i - sigma'_i)^2 (Hoffman-Wielandt left side)",
    "bound/hw_rhs": "weight distance ||W_eff - W'_eff||_F^2 (Hoffman-Wielandt right side)",
}
RHO_RESAMPLES = 2000


def rank_correlation(cells: list[dict], predictor: str = "bound/misalignment") -> list[dict]:
    """Per encoding (authorized, encoder, strength; seed means): Spearman rho between ``predictor`` and the
    unauthorized accuracy drop (clean accuracy - NE accuracy, identity attack) over the unauthorized models
    that have the predictor, its p-value, a 95% bootstrap interval over models and n models."""
    baselines = [c for c in cells if c.get("baseline") and c.get("accuracy") is not None]
    clean_acc: dict[tuple[str, str], list[float]] = {}
    for c in baselines:
        if c["encoder"] == "clean":
            clean_acc.setdefault((c["authorized"], c["model"]), []).append(c["accuracy"])
    groups: dict[tuple, dict[str, list[tuple[float, float]]]] = {}
    for c in baselines:
        if c["encoder"] == "clean" or c["role"] != "unauthorized" or c.get(predictor) is None:
            continue
        base = clean_acc.get((c["authorized"], c["model"]))
        if not base:
            continue
        drop = sum(base) / len(base) - c["accuracy"]
        groups.setdefault((c["authorized"], c["encoder"], c["strength"]), {}).setdefault(c["model"], []).append(
            (float(c[predictor]), drop)
        )
    rows = []
    for (authorized, encoder, strength), per_model in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])
    ):
        names = sorted(per_model)
        x = [sum(v[0] for v in per_model[m]) / len(per_model[m]) for m in names]
        drop = [sum(v[1] for v in per_model[m]) / len(per_model[m]) for m in names]
        rho, p, interval = _spearman(x, drop)
        rows.append(
            {
                "authorized": authorized,
                "encoder": encoder,
                "strength": strength,
                "predictor": predictor,
                "models": names,
                "x": x,
                "drop": drop,
                "rho": rho,
                "p": p,
                "interval": interval,
                "n": len(names),
            }
        )
    return rows


def misalignment_correlation(cells: list[dict]) -> list[dict]:
    """:func:`rank_correlation` of misalignment, with its values under ``misalignment`` (the Theory table and plot)."""
    return [row | {"misalignment": row["x"]} for row in rank_correlation(cells, "bound/misalignment")]


def _spearman(x: list[float], y: list[float]) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """rho, its p-value and a percentile bootstrap interval over the pairs (seeded; resamples with ties only
    in one variable are left out); None where undefined (fewer than 3 models or a constant variable)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None, None
    result = spearmanr(x, y)
    values, rng = [], np.random.default_rng(0)
    xs, ys = np.asarray(x), np.asarray(y)
    for _ in range(RHO_RESAMPLES):
        pick = rng.integers(0, len(xs), len(xs))
        if len(set(xs[pick])) > 1 and len(set(ys[pick])) > 1:
            values.append(spearmanr(xs[pick], ys[pick]).statistic)
    interval = (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))) if values else None
    return finite_or_none(result.statistic), finite_or_none(result.pvalue), interval
