"""The protection ranking: one headline score per release, ranked best first (as RobustBench ranks defenses).

For each release (authorized model, encoder, strength; ``clean`` is not a release) the *protection gap* is the
authorized model's accuracy on the release (no attack) minus the best accuracy any unauthorized model reaches
on it under the strongest attack, where the strongest attack is the attack step (no attack included) that
raises the best unauthorized accuracy most: the worst case over attack steps and unauthorized models.
Controls are never unauthorized. A gap near 0 or below means no protection.

Its 95% interval is a paired bootstrap over images (:func:`~nonxfer_bench.metrics.statistics.bootstrap_over_images`,
the same resamples as every other aggregate) of authorized accuracy minus the max over all (attack step,
unauthorized model) pairs, so picking the worst case is part of the interval. With several seeds the
accuracies are means over seeds (the gap is the mean of the per-seed gaps at the chosen step and model) and
the between-seed spread of the gap is shown. Beside it: visibility of the release (standard PSNR and SSIM
against the clean images).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP
from nonxfer_bench.analysis.uncertainty import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    aggregate_intervals,
    metric_n,
    outcome_matrix,
    proportion_interval,
)
from nonxfer_bench.cells.step import Step
from nonxfer_bench.metrics.statistics import Interval, bootstrap_over_images, seed_summary


def _worst_case(release: pd.DataFrame, models: list[str], metric: str) -> tuple[Step, str, float] | None:
    """(step, model, accuracy) of the highest unauthorized ``metric`` over all attack steps; ties go to no
    attack, then to the first step and model in sort order. None without unauthorized values."""
    values = release[release.model.isin(models)].groupby([STEP, "model"])[metric].mean().dropna()
    if values.empty:
        return None
    order = sorted(values.items(), key=lambda item: (-item[1], not item[0][0].baseline, item[0]))
    (step, model), value = order[0]
    return step, model, float(value)


def _gap_interval(release: pd.DataFrame, authorized: str, models: list[str], metric: str) -> tuple[Interval, Interval] | None:
    """(gap, best unauthorized) with paired bootstrap intervals over images: each resample takes the max over
    every (attack step, unauthorized model). None without per-image outcomes on the same images."""
    auth = outcome_matrix(release[release.baseline], [authorized], metric)
    steps = [outcome_matrix(cells, models, metric) for _, cells in release.groupby(STEP, sort=True)]
    if auth is None or any(step is None or step[0] != auth[0] for step in steps) or auth[1].shape[1] == 0:
        return None
    unauthorized = np.vstack([step[1] for step in steps])
    best = bootstrap_over_images(unauthorized, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE)[1]
    over = bootstrap_over_images(unauthorized - auth[1], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE)[1]  # max of (unauth - auth)
    return Interval(-over.estimate, -over.hi, -over.lo), best


def _seed_gaps(release: pd.DataFrame, authorized: str, step: Step, model: str, metric: str) -> pd.Series:
    """The gap per seed at the chosen step and model."""
    at_step = release.step == step
    auth = release[release.baseline & (release.model == authorized)].groupby("seed")[metric].mean()
    best = release[at_step & (release.model == model)].groupby("seed")[metric].mean()
    return (auth - best).dropna()


def visibility(release: pd.DataFrame) -> tuple[float | None, float | None]:
    """(standard PSNR dB, SSIM) of the released (stored) images against the clean ones, mean over seeds."""
    plain = release[release.baseline]
    psnr = plain["stored_psnr"].fillna(plain["encoded_psnr"]).dropna()
    ssim = plain["attacked_ssim"].dropna()  # no attack: the attacked image is the release
    return (float(psnr.mean()) if len(psnr) else None, float(ssim.mean()) if len(ssim) else None)


def protection_rows(frame: pd.DataFrame, metric: str) -> list[dict]:
    """One dict per release (``clean`` is not one) with the numbers of the ranking (unformatted), best gap first;
    ties by authorized model, encoding, strength and precision as text."""
    rows = []
    for key, release in frame[frame.encoder != "clean"].groupby(RELEASE, sort=True):
        authorized = key.authorized
        models = sorted(release.loc[release.role == "unauthorized", "model"].unique())
        auth = release[release.baseline & (release.model == authorized)][metric].dropna()
        worst = _worst_case(release, models, metric)
        if worst is None or auth.empty:
            continue
        step, model, best = worst
        intervals = _gap_interval(release, authorized, models, metric)
        gaps = _seed_gaps(release, authorized, step, model, metric)
        at_step = release[release.step == step]
        psnr, ssim = visibility(release)
        rows.append(
            {
                "release": key,
                "gap": float(auth.mean()) - best,
                "gap_interval": intervals[0] if intervals else None,
                "auth": proportion_interval(float(auth.mean()), metric_n(release[release.baseline & (release.model == authorized)], metric)),
                "best": intervals[1] if intervals else aggregate_intervals(at_step, [model], metric)[1],
                "step": step,
                "model": model,
                "n": metric_n(release, metric),
                "seeds": int(release.seed.nunique()),
                "seed_sd": seed_summary(gaps.to_numpy())[1] if len(gaps) > 1 else float("nan"),
                "psnr": psnr,
                "ssim": ssim,
                "devices": sorted(str(d) for d in release["device"].dropna().unique()),
            }
        )
    order = lambda row: (-row["gap"], *(str(v) for v in (row["release"].authorized, row["release"].encoding, row["release"].strength, row["release"].precision)))  # noqa: E731
    return sorted(rows, key=order)


def strongest_attack(part: pd.DataFrame, authorized: str, metric: str = "accuracy") -> dict | None:
    """The attack step with the highest mean unauthorized ``metric`` on one encoding's cells (mean over seeds).

    Ties go to the step that leaves the authorized model more, then to the first step in sort order.
    Returns step (its :class:`~nonxfer_bench.cells.step.Step`), label (``name strength``; ``no attack`` for
    identity), unauth_mean, unauth_max, unauth_max_model, auth, attacked_psnr and n (images per cell, for
    intervals); None without unauthorized cells.
    """
    unauthorized = part[(part.model != authorized) & (part.role != "control")].dropna(subset=[metric])
    if unauthorized.empty:
        return None
    per_model = unauthorized.groupby([STEP, "model"])[metric].mean()
    auth = part[part.model == authorized].groupby(STEP)[metric].mean()
    candidates = []
    for step, values in per_model.groupby(level=STEP, sort=True):
        values = values.droplevel(STEP)
        auth_value = auth.get(step, float("nan"))
        candidates.append((-values.mean(), -(auth_value if pd.notna(auth_value) else -1.0), step, values, auth_value))
    _, _, step, values, auth_value = min(candidates, key=lambda c: (c[0], c[1]))
    chosen = part[part.step == step]
    return {
        "step": step,
        "label": step.label,
        "unauth_mean": float(values.mean()),
        "unauth_max": float(values.max()),
        "unauth_max_model": str(values.idxmax()),
        "auth": None if pd.isna(auth_value) else float(auth_value),
        "attacked_psnr": None if chosen["attacked_psnr"].isna().all() else float(chosen["attacked_psnr"].mean()),
        "n": metric_n(chosen, metric),
    }
