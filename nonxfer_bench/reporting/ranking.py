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

from nonxfer_bench.metrics.statistics import Interval, bootstrap_over_images, seed_summary
from nonxfer_bench.reporting.uncertainty import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    aggregate_intervals,
    metric_n,
    outcome_matrix,
    proportion_interval,
    signed_points,
)

STEP = ["attack", "attack_strength", "attack_param"]
NO_ATTACK = "no attack"


def step_label(attack: str, strength: float, baseline: bool) -> str:
    """How an attack step is shown: ``blur 0.5``, or ``no attack`` for the identity (never ``none``)."""
    return NO_ATTACK if baseline else f"{attack} {strength:g}"


def _worst_case(release: pd.DataFrame, models: list[str], metric: str) -> tuple[tuple, str, float] | None:
    """(step, model, accuracy) of the highest unauthorized ``metric`` over all attack steps; ties go to no
    attack, then to the first step and model in sort order. None without unauthorized values."""
    values = release[release.model.isin(models)].groupby([*STEP, "model"])[metric].mean().dropna()
    if values.empty:
        return None
    baseline = release.groupby(STEP).baseline.all()
    order = sorted(values.items(), key=lambda item: (-item[1], not baseline[item[0][:3]], item[0]))
    (attack, strength, param, model), value = order[0]
    return (attack, strength, param), model, float(value)


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


def _seed_gaps(release: pd.DataFrame, authorized: str, step: tuple, model: str, metric: str) -> pd.Series:
    """The gap per seed at the chosen step and model."""
    at_step = (release.attack == step[0]) & (release.attack_strength == step[1]) & (release.attack_param == step[2])
    auth = release[release.baseline & (release.model == authorized)].groupby("seed")[metric].mean()
    best = release[at_step & (release.model == model)].groupby("seed")[metric].mean()
    return (auth - best).dropna()


def _visibility(release: pd.DataFrame) -> tuple[float | None, float | None]:
    """(standard PSNR dB, SSIM) of the released (stored) images against the clean ones, mean over seeds."""
    plain = release[release.baseline]
    psnr = plain["stored_psnr"].fillna(plain["encoded_psnr"]).dropna()
    ssim = plain["attacked_ssim"].dropna()  # no attack: the attacked image is the release
    return (float(psnr.mean()) if len(psnr) else None, float(ssim.mean()) if len(ssim) else None)


def protection_rows(frame: pd.DataFrame, metric: str, encoding: list[str]) -> list[dict]:
    """One dict per release with the numbers of the ranking (unformatted), best gap first.

    ``encoding`` names the columns that identify a release (authorized, encoder, strength, precision ...).
    """
    rows = []
    for key, release in frame[frame.encoder != "clean"].groupby(encoding, sort=True):
        fields = dict(zip(encoding, key))
        authorized = fields["authorized"]
        models = sorted(release.loc[release.role == "unauthorized", "model"].unique())
        auth = release[release.baseline & (release.model == authorized)][metric].dropna()
        worst = _worst_case(release, models, metric)
        if worst is None or auth.empty:
            continue
        step, model, best = worst
        intervals = _gap_interval(release, authorized, models, metric)
        gaps = _seed_gaps(release, authorized, step, model, metric)
        at_step = release[(release.attack == step[0]) & (release.attack_strength == step[1]) & (release.attack_param == step[2])]
        psnr, ssim = _visibility(release)
        n = metric_n(release, metric)
        rows.append(
            fields
            | {
                "gap": float(auth.mean()) - best,
                "gap_interval": intervals[0] if intervals else None,
                "auth": proportion_interval(float(auth.mean()), metric_n(release[release.baseline & (release.model == authorized)], metric)),
                "best": intervals[1] if intervals else aggregate_intervals(at_step, [model], metric)[1],
                "attack": step_label(step[0], step[1], bool(at_step.baseline.all())),
                "model": model,
                "n": n,
                "seeds": int(release.seed.nunique()),
                "seed_sd": seed_summary(gaps.to_numpy())[1] if len(gaps) > 1 else float("nan"),
                "psnr": psnr,
                "ssim": ssim,
                "devices": sorted(str(d) for d in release["device"].dropna().unique()),
            }
        )
    return sorted(rows, key=lambda row: (-row["gap"], *(str(row[k]) for k in encoding)))


def gap_text(gap: float, interval: Interval | None) -> str:
    """``+45.5 [+38.0, +52.5]``: the gap in points and its 95% interval; the estimate alone without one."""
    if interval is None:
        return signed_points(gap)
    return f"{signed_points(interval.estimate)} [{signed_points(interval.lo)}, {signed_points(interval.hi)}]"
