"""The leaderboard's Theory section and its two plots: bound tightness and the misalignment-vs-drop correlation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from nonxfer_bench.analysis.theory import (
    PREDICTORS,
    RHO_RESAMPLES,
    bound_records,
    misalignment_correlation,
    rank_correlation,
)
from nonxfer_bench.linalg.bounds import NOT_COMPUTED, PREFIX
from nonxfer_bench.rendering.figures import caption, encoding_label, save, series_style, styled
from nonxfer_bench.rendering.sections import Section


def predictors_markdown(cells: list[dict]) -> str:
    """'What predicts the drop': per encoding and predictor, Spearman rho [95% bootstrap interval], p and n models."""
    rows = [row for predictor in PREDICTORS for row in rank_correlation(cells, predictor) if row["rho"] is not None]
    if not rows:
        return ""
    lines = [
        "| authorized | encoding | predictor | Spearman rho [95% CI] | p | n models |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(
        rows, key=lambda r: (r["authorized"], r["encoder"], r["strength"], list(PREDICTORS).index(r["predictor"]))
    ):
        low, high = r["interval"] or (None, None)
        interval = f" [{_fmt(low, 2)}, {_fmt(high, 2)}]" if r["interval"] else ""
        lines.append(f"| {r['authorized']} | {r['encoder']} {r['strength']:g} | "
                     f"{r['predictor'].removeprefix(PREFIX)} | "
                     f"{_fmt(r['rho'], 3)}{interval} | {_fmt(r['p'], 3)} | {r['n']} |")  # fmt: skip
    intro = (
        "What predicts the unauthorized accuracy drop (clean - NE, no attack), over the unauthorized models that have "
        "the number (Hoffman-Wielandt only for first layers of the authorized one's shape): "
        + "; ".join(f"`{k.removeprefix(PREFIX)}` = {v}" for k, v in PREDICTORS.items())
        + f". Interval: percentile bootstrap over models ({RHO_RESAMPLES:,} resamples); with few models it is "
        "wide and the p-value is the better guide."
    )
    return "\n".join([intro, "", *lines])


def _fmt(value: Any, digits: int = 3) -> str:
    return (
        "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{float(value):.{digits}g}"
    )


def theory_markdown(cells: list[dict]) -> str:
    """The leaderboard's "Theory" section: per encoding the authorized ratios, per unauthorized model the
    misalignment and HW ratio, and the Spearman line; a sentence when the run skipped them, empty string when no
    cell carries ``bound/`` numbers."""
    baselines = [
        c for c in cells if c.get("baseline") and any(k.startswith(PREFIX) for k in c) and NOT_COMPUTED not in c
    ]
    if not baselines:
        skipped = any(c.get("baseline") and NOT_COMPUTED in c for c in cells)
        return (
            "Bounds were not computed for this run (suite `bounds: false` or `nonxfer-bench run --no-bounds`)."
            if skipped
            else ""
        )
    groups: dict[tuple, list[dict]] = {}
    for c in baselines:
        groups.setdefault((c["authorized"], c["encoder"], c["strength"]), []).append(c)
    correlation = {(r["authorized"], r["encoder"], r["strength"]): r for r in misalignment_correlation(cells)}
    header = (
        "| authorized | encoding | k | sigma_S | layer obs/pred median | p95 | mean-square obs/pred | layer "
        "obs/(‖W‖‖d‖) median | L_g (local) | logit obs/bound | per model: misalignment / HW ratio / unauth layer obs "
        "(pred) | Spearman rho (p, n) |"
    )
    lines = [header, "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"]
    for (authorized, encoder, strength), part in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        auth = next((c for c in part if c["model"] == authorized), part[0])
        models = []
        for c in sorted(part, key=lambda c: c["model"]):
            if c["model"] == authorized:
                continue
            pred = c.get("bound/unauth_layer_pred")
            models.append(
                f"{c['model']}: {_fmt(c.get('bound/misalignment')) or 'n/a'} / "
                f"{_fmt(c.get('bound/hw_ratio')) or 'n/a'} / "
                f"{_fmt(c.get('bound/unauth_layer_obs'))}{f' ({_fmt(pred)})' if pred is not None else ''}"
            )
        r = correlation.get((authorized, encoder, strength))
        spearman = (
            f"{_fmt(r['rho'])} ({_fmt(r['p'])}, {r['n']})"
            if r and r["rho"] is not None
            else (f"n/a (n={r['n']})" if r else "")
        )
        label = encoder if encoder == "clean" else f"{encoder} {strength:g}"
        lines.append(
            f"| {authorized} | {label} | {auth.get('bound/k', '')} | {_fmt(auth.get('bound/sigma_s'))} | "
            f"{_check(auth, 'bound/auth_layer_ratio_median')} | {_check(auth, 'bound/auth_layer_ratio_p95')} | "
            f"{_check(auth, 'bound/auth_layer_ms_ratio')} | {_fmt(auth.get('bound/auth_layer_rel_median'))} | "
            f"{_fmt(auth.get('bound/lipschitz_estimate'))} | {_fmt(auth.get('bound/auth_logit_ratio'))} | "
            f"{'; '.join(models)} | {spearman} |"
        )
    intro = (
        "Bound tightness on the first batch of each encoding (nonxfer_bench/linalg/bounds.py states every "
        "convention). layer obs/pred: ||W d_l|| / (sigma_S ||d_l||) per patch (1 = tight; empty for an exact null "
        "space, sigma_S = 0, where obs/(‖W‖‖d‖) shows the numerical residue); mean-square obs/pred: sum ||W d_l||^2 / "
        "sum ||d_l||^2 over mean_S sigma_i^2; † marks k = 1 with every patch's perturbation in the one chosen "
        "direction v, where ||W v|| = sigma ||v|| makes the ratio 1 by construction: a consistency check of the "
        "implementation, not evidence that the bound is tight. L_g: largest local Jacobian norm of the network after "
        "the first layer at 4 clean images (a lower bound of the global Lipschitz constant); logit obs/bound: ||f(x') "
        "- f(x)|| / (L_g sigma_S ||d||). Per model: misalignment ||W'_eff Q||_F / ||W'_eff||_F in raw-pixel space "
        "(n/a: different D), Hoffman-Wielandt ratio sum (sigma_i - sigma'_i)^2 / ||W_eff - W'_eff||_F^2 (<= 1; n/a: "
        "different shape), RMS first-layer response change on the release (predicted c^2 ||W'_eff B||_F^2 in "
        "parentheses for same-geometry stems). Spearman: misalignment vs accuracy drop (clean - NE, no attack) over "
        "the unauthorized models with a misalignment."
    )
    predictors = predictors_markdown(cells)
    return "\n".join([intro, "", *lines] + (["", predictors] if predictors else []))


def _check(cell: dict, key: str) -> str:
    """A first-layer ratio, marked † when it is 1 by construction: k = 1 and every measured patch ratio is 1
    (median and p95), i.e. the perturbation of every patch lies in the single chosen direction."""
    text = _fmt(cell.get(key))
    by_construction = cell.get("bound/k") == 1 and all(
        cell.get(name) is not None and abs(cell[name] - 1.0) < 1e-3
        for name in ("bound/auth_layer_ratio_median", "bound/auth_layer_ratio_p95")
    )
    return f"{text} †" if text and by_construction else text


def write_theory_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Two PNGs under ``folder``: predicted vs observed first-layer response (unauthorized, same geometry, and the
    authorized layer) and misalignment vs accuracy drop, in the style of :mod:`nonxfer_bench.rendering.figures`.
    Returns the written paths (none without bound numbers)."""
    cells = bound_records(frame)
    baselines = [c for c in cells if c.get("baseline")]
    pairs = [
        (c["bound/unauth_layer_pred"], c["bound/unauth_layer_obs_patch"], c)
        for c in baselines
        if c.get("bound/unauth_layer_pred") and c.get("bound/unauth_layer_obs_patch")
    ]
    correlation = misalignment_correlation(cells)
    if not pairs and not correlation:
        return []
    encoders = sorted({p[2]["encoder"] for p in pairs})
    styles = {encoder: series_style(index) | {"linestyle": "none"} for index, encoder in enumerate(encoders)}
    with styled() as plt:
        fig, ax = plt.subplots(figsize=(6, 5.5), layout="constrained")
        if pairs:
            for encoder in encoders:
                chosen = [p for p in pairs if p[2]["encoder"] == encoder]
                ax.plot([p[0] for p in chosen], [p[1] for p in chosen], label=encoder, **styles[encoder])
            lo = min(min(p[0], p[1]) for p in pairs)
            hi = max(max(p[0], p[1]) for p in pairs)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="observed = predicted")
            ax.set_xscale("log"), ax.set_yscale("log")
            ax.legend()
        ax.set_xlabel("predicted RMS first-layer change c·‖W'_eff B‖_F\n(first-layer output units, log)")
        ax.set_ylabel("observed RMS first-layer change\n(first-layer output units, log)")
        caption(
            fig,
            "First layer: the predicted vs the observed RMS change of each model's first-layer response to the NE "
            "noise, per encoder.",
        )
    paths = [save(fig, folder / "theory_pred_vs_obs.png")]
    panels = sorted({(row["authorized"], row["encoder"]) for row in correlation}) or [("", "")]
    authorized_models = sorted({a for a, _ in panels})
    columns = sorted({e for _, e in panels})
    with styled() as plt:
        fig, axes = plt.subplots(
            len(authorized_models),
            len(columns),
            figsize=(4.2 * len(columns), 3.8 * len(authorized_models) + 1.0),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        for row_axes, authorized in zip(axes, authorized_models):
            for ax, encoder in zip(row_axes, columns):
                rows = [row for row in correlation if (row["authorized"], row["encoder"]) == (authorized, encoder)]
                for index, row in enumerate(rows):  # one series per encoder strength
                    ax.plot(
                        row["misalignment"],
                        [100 * d for d in row["drop"]],
                        label=encoding_label(encoder, row["strength"]),
                        **series_style(index) | {"linestyle": "none"},
                    )
                ax.set_title(f"{encoder}, authorized {authorized}" if rows else "no models with bound numbers")
                if rows:
                    ax.legend()
            row_axes[0].set_ylabel("unauthorized accuracy drop,\nclean − NE (percentage points)")
        for ax in axes[-1]:
            ax.set_xlabel("misalignment ‖W'_eff Q‖_F / ‖W'_eff‖_F\n(unitless, raw pixels)")
        caption(
            fig,
            "Spectral misalignment of each unauthorized model with the authorized one against its accuracy drop on "
            "the NEs (no attack), per authorized model and encoder.",
        )
    paths.append(save(fig, folder / "theory_misalignment_vs_drop.png"))
    return paths


def theory_section(frame: pd.DataFrame) -> Section | None:
    """The "Theory" section (None when no cell carries ``bound/`` numbers and none skipped them)."""
    text = theory_markdown(bound_records(frame))
    return Section("Theory", text) if text else None
