"""Leaderboard plots (matplotlib, PNG) from a cells frame (:func:`nonxfer_bench.analysis.frame.results_frame`).

Each figure shows a mean over seeds of ``metric`` (accuracy, or agreement for unlabeled data), in %, with
error bars for the 95% interval of each point (:mod:`nonxfer_bench.analysis.uncertainty`: Wilson's for one
model, a paired bootstrap over images for a mean over models), in the shared style of
:mod:`nonxfer_bench.rendering.figures`:

- ``accuracy_vs_strength.png``: one panel per (authorized model, encoder), no attack: the authorized model
  (black) and every other model against the encoder strength, whose axis says which PSNR it is; the authorized
  model's clean accuracy dotted. With more models than a panel can tell apart, the unauthorized mean and
  best model replace the single models.
- ``transfer_heatmap.png``: rows (authorized model, encoding), columns the evaluated models, no attack; the
  authorized model's cell boxed.
- ``attack_curves.png``: one row of panels per (authorized model, encoder), one column per attack: the
  authorized model (solid, filled) and the unauthorized mean (dashed, hollow) against the attack strength,
  one colour and marker per encoder strength.
- ``security_curves.png``: when cells record their attacks' threat model, :mod:`nonxfer_bench.rendering.security_plot`.

Each ``*_figure`` function builds the figure (for tests and notebooks); :func:`write_plots` writes them.
The bound scatters are :func:`nonxfer_bench.rendering.theory.write_theory_plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nonxfer_bench.analysis.uncertainty import aggregate_intervals
from nonxfer_bench.rendering.figures import (
    ATTACK_STRENGTH_LABEL,
    AUTHORIZED_STYLE,
    MAX_SERIES,
    caption,
    encoding_label,
    metric_label,
    save,
    series_style,
    strength_axis_label,
    styled,
)
from nonxfer_bench.rendering.security_plot import security_curves_figure

STRENGTHS_PER_PANEL = MAX_SERIES // 2  # attack curves: two series (authorized, unauthorized mean) per strength


def _curve(part: pd.DataFrame, by: str, metric: str, models: list[str], statistic: str = "mean") -> pd.DataFrame:
    """Per value of ``by``: the mean (or, ``statistic="max"``, the best) over ``models`` (and seeds) of ``metric``
    in % with its 95% interval's distance below and above (columns value, below, above), for ``axis.errorbar``;
    the intervals are the leaderboard's (:func:`~nonxfer_bench.analysis.uncertainty.aggregate_intervals`)."""
    rows = []
    for x, rows_at_x in part[part.model.isin(models)].groupby(by, sort=True):
        per_model = rows_at_x.groupby("model")[metric].mean()
        value = per_model.max() if statistic == "max" else per_model.mean()
        interval = aggregate_intervals(rows_at_x, models, metric)[1 if statistic == "max" else 0]
        below, above = (0.0, 0.0) if interval is None else (max(0.0, value - interval.lo), max(0.0, interval.hi - value))
        rows.append({by: x, "value": 100 * value, "below": 100 * below, "above": 100 * above})
    return pd.DataFrame(rows).set_index(by)


def _errorbar(axis, curve: pd.DataFrame, **style):
    return axis.errorbar(curve.index, curve["value"], yerr=[curve["below"], curve["above"]], capsize=2, elinewidth=0.8, markersize=5, **style)


def _grid(plt, panels: int, columns: int, width: float, height: float, legend_rows: int, **options):
    rows = -(-panels // columns)
    size = (width * columns, height * rows + 0.4 * legend_rows + 0.8)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained", **options)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    return figure, axes


def _handle(**style):
    from matplotlib.lines import Line2D

    return Line2D([], [], **style)


def accuracy_vs_strength_figure(frame: pd.DataFrame, models: list[str], metric: str):
    """The figure of ``accuracy_vs_strength.png``; None without an encoded release."""
    plain = frame[frame.baseline].dropna(subset=[metric])
    panels = sorted({(a, e) for a, e in zip(plain.authorized, plain.encoder) if e != "clean"})
    if not panels:
        return None
    models = [m for m in models if m in set(plain.model)]
    single = len(models) <= MAX_SERIES  # else: the authorized model, the unauthorized mean and best model
    styles = {model: series_style(index) for index, model in enumerate(models)}
    with styled() as plt:
        columns = min(len(panels), 4)
        handles = [_handle(label="authorized model of the panel", **AUTHORIZED_STYLE), _handle(color="black", linestyle=":", label="authorized model, clean images")]
        if single:
            handles += [_handle(label=model, **styles[model]) for model in models]
        else:
            handles += [_handle(label="unauthorized mean", **series_style(0)), _handle(label="best unauthorized model", **series_style(1))]
        figure, axes = _grid(plt, len(panels), columns, 3.8, 3.3, -(-len(handles) // 4), sharey=True)
        for axis, (authorized, encoder) in zip(axes.flat, panels):
            part = plain[(plain.authorized == authorized) & (plain.encoder == encoder)]
            present = [m for m in models if m in set(part.model)]
            if single:
                for model in present:
                    _errorbar(axis, _curve(part, "strength", metric, [model]), **(AUTHORIZED_STYLE if model == authorized else styles[model]))
            else:
                _errorbar(axis, _curve(part, "strength", metric, [authorized]), **AUTHORIZED_STYLE)
                others = sorted(part.loc[part.role == "unauthorized", "model"].unique())
                if others:
                    _errorbar(axis, _curve(part, "strength", metric, others), **series_style(0))
                    _errorbar(axis, _curve(part, "strength", metric, others, "max"), **series_style(1))
            clean = plain[(plain.authorized == authorized) & (plain.encoder == "clean") & (plain.model == authorized)][metric]
            if len(clean):
                axis.axhline(100 * clean.mean(), color="black", linewidth=1.0, linestyle=":")
            axis.set_title(f"{encoder}, authorized {authorized}")
            if part.strength.nunique() <= 6:  # the strengths run, not matplotlib's fractions of a dB
                axis.set_xticks(sorted(part.strength.unique()))
            axis.set_xlabel(strength_axis_label(encoder))
        axes[0][0].set_ylim(-3, 103)  # shared by every panel
        for row in axes:
            row[0].set_ylabel(metric_label(metric))
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        caption(
            figure,
            f"{metric_label(metric).capitalize()} of each model on the released images (no attack) against the encoder's strength, "
            "per authorized model and encoder; error bars: 95% intervals (Wilson; bootstrap over images for aggregates).",
        )
    return figure


def transfer_heatmap_figure(frame: pd.DataFrame, models: list[str], metric: str):
    """The figure of ``transfer_heatmap.png``; None without cells."""
    plain = frame[frame.baseline].dropna(subset=[metric])
    if plain.empty:
        return None
    table = plain.groupby(["authorized", "encoder", "strength", "model"])[metric].mean().unstack("model") * 100
    table = table[[m for m in models if m in table.columns]]
    with styled() as plt:
        from matplotlib.patches import Rectangle

        figure, axis = plt.subplots(figsize=(4.5 + 0.9 * table.shape[1], 1.6 + 0.32 * table.shape[0]), layout="constrained")
        image = axis.imshow(table.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (row, column), value in np.ndenumerate(table.values):
            if not np.isnan(value):
                axis.text(column, row, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black")
        for row, (authorized, _, _) in enumerate(table.index):
            if authorized in table.columns:
                column = list(table.columns).index(authorized)
                axis.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        axis.grid(False)
        axis.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
        axis.set_yticks(range(table.shape[0]), [f"{a}: {encoding_label(e, s)}" for a, e, s in table.index])
        axis.set_xlabel("evaluated model")
        axis.set_ylabel("authorized model: encoding")
        figure.colorbar(image, ax=axis, label=metric_label(metric))
        caption(figure, f"Transfer with no attack: {metric_label(metric)} of each evaluated model on each release; boxed: the authorized model.")
    return figure


def _attack_rows(attacked: pd.DataFrame) -> list[tuple[str, str, list[float]]]:
    """(authorized model, encoder, its strengths) per row of the attack curves, at most ``STRENGTHS_PER_PANEL`` strengths a row."""
    rows = []
    for (authorized, encoder), part in attacked.groupby(["authorized", "encoder"], sort=True):
        strengths = sorted(part.strength.unique())
        rows += [(authorized, encoder, strengths[i : i + STRENGTHS_PER_PANEL]) for i in range(0, len(strengths), STRENGTHS_PER_PANEL)]
    return rows


def attack_curves_figure(frame: pd.DataFrame, metric: str):
    """The figure of ``attack_curves.png``; None without attacked cells."""
    attacked = frame[~frame.baseline].dropna(subset=[metric])
    if attacked.empty:
        return None
    attacks = sorted(attacked.attack.unique())
    rows = _attack_rows(attacked)
    with styled() as plt:
        figure, axes = plt.subplots(
            len(rows), len(attacks), figsize=(2.9 * len(attacks) + 2.6, 2.5 * len(rows) + 1.4), squeeze=False, sharex=True, sharey=True, layout="constrained"
        )
        for axes_row, (authorized, encoder, strengths) in zip(axes, rows):
            for axis, attack in zip(axes_row, attacks):
                part = attacked[(attacked.authorized == authorized) & (attacked.encoder == encoder) & (attacked.attack == attack)]
                for index, strength in enumerate(strengths):
                    encoding = part[part.strength == strength]
                    style = series_style(index)
                    if authorized in set(encoding.model):
                        _errorbar(axis, _curve(encoding, "attack_strength", metric, [authorized]), **style | {"linestyle": "-"})
                    others = sorted(encoding.loc[encoding.role == "unauthorized", "model"].unique())  # no controls
                    if others:
                        _errorbar(axis, _curve(encoding, "attack_strength", metric, others), **style | {"linestyle": "--", "markerfacecolor": "none"})
            axes_row[0].set_ylabel(f"{encoder}, authorized {authorized}\n{metric_label(metric)}")
            entries = [_handle(label=encoding_label(encoder, s), **series_style(i) | {"linestyle": "-"}) for i, s in enumerate(strengths)]
            axes_row[-1].legend(handles=entries, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=encoder, frameon=False)
        axes[0][0].set_xlim(-0.05, 1.05)  # shared by every panel: set once (each call reaches all of them)
        axes[0][0].set_ylim(-3, 103)
        for axis, attack in zip(axes[0], attacks):
            axis.set_title(attack)
        for axis in axes[-1]:
            axis.set_xlabel(ATTACK_STRENGTH_LABEL)
        roles = [
            _handle(color="grey", marker="o", linestyle="-", label="authorized model"),
            _handle(color="grey", marker="o", markerfacecolor="none", linestyle="--", label="unauthorized mean"),
        ]
        figure.legend(handles=roles, loc="outside lower center", ncol=2, frameon=False)
        caption(
            figure,
            f"{metric_label(metric).capitalize()} under each attack (columns) against the attack's strength (0 = weakest, 1 = strongest setting), "
            "per authorized model and encoder (rows), one colour per encoder strength; error bars: 95% intervals.",
        )
    return figure


def write_plots(frame: pd.DataFrame, models: list[str], metric: str, folder: Path) -> list[Path]:
    """The figures above under ``folder``; returns the written paths (a figure without data is skipped)."""
    figures = {
        "accuracy_vs_strength.png": accuracy_vs_strength_figure(frame, models, metric),
        "transfer_heatmap.png": transfer_heatmap_figure(frame, models, metric),
        "attack_curves.png": attack_curves_figure(frame, metric),
        "security_curves.png": security_curves_figure(frame, metric),
    }
    return [save(figure, folder / name) for name, figure in figures.items() if figure is not None]
