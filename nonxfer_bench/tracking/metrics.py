"""The metrics one encoding group logs (see :mod:`nonxfer_bench.tracking.tracker` for the names), from its results
frame (:func:`~nonxfer_bench.analysis.frame.results_frame`): per cell, per role curve, the no-attack summary, the
strongest attack, the security curves and the bound numbers; every accuracy and agreement with ``_lo``, ``_hi``
(its 95% interval) and ``_n`` (the images it counts)."""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import STEP, unauthorized_models
from nonxfer_bench.analysis.ranking import strongest_attack
from nonxfer_bench.analysis.security import security_points
from nonxfer_bench.analysis.theory import numeric_bounds
from nonxfer_bench.analysis.uncertainty import aggregate_intervals, metric_n, proportion_interval
from nonxfer_bench.cells.step import Step
from nonxfer_bench.linalg.bounds import MODEL_KEYS
from nonxfer_bench.metrics.statistics import Interval
from nonxfer_bench.tracking.names import attack_names, fitting, mlflow_step


def with_interval(name: str, value: float, interval: Interval | None, n: int | None, timestamp: int, step: int) -> list:
    """``name`` and, where known, ``name_lo``, ``name_hi`` (its 95% interval) and ``name_n`` (images it counts)."""
    from mlflow.entities import (
        Metric,
    )  # heavy (~1.5 s): mlflow only where it is used; `leaderboard` from the cell store imports this module without it

    name = fitting(name)
    out = [Metric(name, value, timestamp, step)]
    if interval is not None:
        out += [Metric(f"{name}_lo", interval.lo, timestamp, step), Metric(f"{name}_hi", interval.hi, timestamp, step)]
    if n is not None:
        out.append(Metric(f"{name}_n", n, timestamp, step))
    return out


def _cell_metrics(frame: pd.DataFrame, names: dict[Step, str], timestamp: int) -> list:
    """Per cell: ``acc.<attack>.<model>``, ``agree.<attack>.<model>`` (and ``acc_flat``) with Wilson intervals,
    step = round(100 x attack strength); ``<attack>`` as :func:`~nonxfer_bench.tracking.names.attack_names` gives it."""
    out = []
    for cell in frame.itertuples(index=False):
        attack = names[cell.step]
        labeled = int(cell.n if pd.isna(cell.n_labeled) else cell.n_labeled)
        for metric, name, n in (
            ("accuracy", "acc", labeled),
            ("agreement", "agree", int(cell.n)),
            ("accuracy_flat", "acc_flat", labeled),
        ):
            value = getattr(cell, metric)
            if pd.notna(value):  # accuracy NaN: unlabeled images
                out += with_interval(
                    f"{name}.{attack}.{cell.model}",
                    value,
                    proportion_interval(value, n),
                    n,
                    timestamp,
                    mlflow_step(cell.attack_strength),
                )
    return out


def _aggregates(names: tuple[str, str], part: pd.DataFrame, metric: str, timestamp: int, step: int) -> list:
    """The mean and the max (``names``) over the unauthorized models of ``part`` with their intervals (paired
    bootstrap over images with per-image outcomes, else Wilson) and n."""
    models = unauthorized_models(part)
    values = part[part.model.isin(models)].groupby("model")[metric].mean().dropna()
    if values.empty:
        return []
    mean, best = aggregate_intervals(part, models, metric)
    n = metric_n(part[part.model.isin(models)], metric)
    return with_interval(names[0], values.mean(), mean, n, timestamp, step) + with_interval(
        names[1], values.max(), best, n, timestamp, step
    )


def _summary_metrics(authorized: str, frame: pd.DataFrame, timestamp: int) -> list:
    """No attack: ``auth.acc``, ``unauth.acc_mean``, ``unauth.acc_max`` with intervals, and ``psnr.encoded``."""
    from mlflow.entities import Metric  # heavy (~1.5 s), as in with_interval

    plain = frame[frame.baseline].dropna(subset=["accuracy"])
    out = []
    own = plain[plain.model == authorized]
    if len(own):
        n = metric_n(own, "accuracy")
        out += with_interval(
            "auth.acc", own.accuracy.iloc[0], proportion_interval(own.accuracy.iloc[0], n), n, timestamp, 0
        )
    out += _aggregates(("unauth.acc_mean", "unauth.acc_max"), plain, "accuracy", timestamp, 0)
    if len(frame) and pd.notna(frame.encoded_psnr.iloc[0]):
        out.append(Metric("psnr.encoded", frame.encoded_psnr.iloc[0], timestamp, 0))
    return out


def _strongest_attack(authorized: str, frame: pd.DataFrame) -> dict | None:
    """The group's strongest attack by accuracy (None for unlabeled data or no unauthorized cells)."""
    if frame.empty or frame.accuracy.isna().all():
        return None
    return strongest_attack(frame, authorized)


def _best_attack_metrics(best: dict, frame: pd.DataFrame, timestamp: int) -> list:
    """The strongest attack step: ``unauth.best_attack_acc`` (mean), ``unauth.best_attack_acc_max`` and
    ``auth.best_attack_acc`` with intervals."""
    step = frame[frame.step == best["step"]]
    out = _aggregates(("unauth.best_attack_acc", "unauth.best_attack_acc_max"), step, "accuracy", timestamp, 0)
    if best["auth"] is not None:
        n = metric_n(step[step.role == "authorized"], "accuracy")
        out += with_interval(
            "auth.best_attack_acc", best["auth"], proportion_interval(best["auth"], n), n, timestamp, 0
        )
    return out


def _security_metrics(frame: pd.DataFrame, timestamp: int) -> list:
    """The security-curve points (:func:`~nonxfer_bench.analysis.security.security_points`):
    ``security.<budget>.<tier>.unauth_mean`` and ``..._max`` with intervals and n, step = the budget."""
    if frame.accuracy.isna().all():
        return []
    points = security_points(frame, "accuracy")
    out = []
    for point in points.itertuples(index=False):
        for statistic in ("mean", "max"):
            interval = Interval(
                getattr(point, statistic), getattr(point, f"{statistic}_lo"), getattr(point, f"{statistic}_hi")
            )
            out += with_interval(
                f"security.{point.budget}.{point.tier}.unauth_{statistic}",
                interval.estimate,
                interval,
                point.n,
                timestamp,
                point.value,
            )
    return out


def _role_curves(frame: pd.DataFrame, names: dict[Step, str], timestamp: int) -> list:
    """Per attack step series (:func:`~nonxfer_bench.tracking.names.attack_names`) and role, the authorized value and
    the unauthorized mean and max at each attack strength, with intervals: ``auth.acc.<attack>``,
    ``unauth.acc_mean.<attack>`` ..."""
    out = []
    for key, part in frame.groupby(STEP, sort=True):
        name, step = names[key], mlflow_step(key.strength)
        for metric, short in (("accuracy", "acc"), ("agreement", "agree")):
            measured = part.dropna(subset=[metric])
            own = measured[measured.role == "authorized"]
            if len(own):
                value, n = own[metric].iloc[0], metric_n(own.iloc[:1], metric)
                out += with_interval(f"auth.{short}.{name}", value, proportion_interval(value, n), n, timestamp, step)
            out += _aggregates(
                (f"unauth.{short}_mean.{name}", f"unauth.{short}_max.{name}"), measured, metric, timestamp, step
            )
    return out


def _bound_metrics(frame: pd.DataFrame, timestamp: int) -> list:
    """The no-attack cells' numeric ``bound/`` numbers: group-level ones as ``bound/<name>``, model-specific ones as
    ``bound/<name>.<model>``."""
    from mlflow.entities import Metric  # heavy (~1.5 s), as in with_interval

    out, seen = [], set()
    for cell in frame[frame.baseline].itertuples(index=False):
        for name, value in numeric_bounds(cell.bounds).items():
            key = f"{name}.{cell.model}" if name in MODEL_KEYS else name
            if key not in seen:
                seen.add(key)
                out.append(Metric(key, value, timestamp, 0))
    return out


def group_metrics(authorized: str, frame: pd.DataFrame, timestamp: int) -> tuple[list, str | None]:
    """Every metric of one encoding group's cells, and the ``nxb.best_attack`` tag (``<attack>@<strength>``; None
    without a strongest attack)."""
    names = attack_names(frame[STEP])
    metrics = _cell_metrics(frame, names, timestamp) + _summary_metrics(authorized, frame, timestamp)
    best = _strongest_attack(authorized, frame)
    if best is not None:
        metrics += _best_attack_metrics(best, frame, timestamp)
    metrics += (
        _role_curves(frame, names, timestamp) + _security_metrics(frame, timestamp) + _bound_metrics(frame, timestamp)
    )
    return metrics, None if best is None else f"{names[best['step']]}@{best['step'].strength:g}"
