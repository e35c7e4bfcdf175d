"""Per-release helpers the tables share: the visibility of a release and the strongest attack on one encoding.

The ranking itself is the protocol verdict (:mod:`nonxfer_bench.analysis.verdict`).
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import STEP
from nonxfer_bench.analysis.uncertainty import (
    metric_n,
)


def visibility(release: pd.DataFrame) -> tuple[float | None, float | None]:
    """(standard PSNR dB, SSIM) of the released (stored) images against the clean ones, mean over seeds."""
    plain = release[release.baseline]
    psnr = plain["stored_psnr"].fillna(plain["encoded_psnr"]).dropna()
    ssim = plain["attacked_ssim"].dropna()  # no attack: the attacked image is the release
    return (float(psnr.mean()) if len(psnr) else None, float(ssim.mean()) if len(ssim) else None)


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
