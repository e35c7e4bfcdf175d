"""Leaderboard plots (matplotlib, PNG) from a cells frame (:func:`nonxfer_bench.analysis.frame.results_frame`).

Each figure shows a mean over seeds of ``metric`` (accuracy, or agreement for unlabeled data), in %, with
error bars for the 95% interval of each point (:mod:`nonxfer_bench.analysis.uncertainty`: Wilson's for one
model, a paired bootstrap over images for a mean over models), in the shared style of
:mod:`nonxfer_bench.rendering.figures`:

- ``accuracy_vs_strength.png``: one panel per (authorized model, encoder), no attack: the authorized model
  (black) and every other model against the encoder strength, whose axis says which PSNR it is; the authorized
  model's clean accuracy dotted. With more models than a panel can tell apart, the unauthorized mean and
  best model replace the single models. A panel of one strength is a dot plot: one point with its interval per model.
- ``transfer_heatmap.png``: rows (authorized model, encoding), columns the evaluated models, no attack; the
  authorized model's cell boxed.
- ``attack_curves.png``: one row of panels per (authorized model, encoder), one column per attack: the
  authorized model (solid, filled) and the unauthorized mean (dashed, hollow), one colour and marker per encoder
  strength, against the attack strength where the attack's steps differ only by strength; otherwise (one step, a
  budget sweep at one strength, two suite entries of one attack) a dot plot with one category per attack step,
  named by the settings that tell the steps apart. Steps are never pooled.
- ``security_curves_<authorized>.png``: when cells record their attacks' threat model,
  :mod:`nonxfer_bench.rendering.security_plot`.

A series with a single point is drawn as a point with its interval, never as a line
(:func:`~nonxfer_bench.rendering.figures.errorbar`).

Each ``*_figure`` function builds the figure (for tests and notebooks); :func:`write_plots` writes them.
The bound scatters are :func:`nonxfer_bench.rendering.theory.write_theory_plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nonxfer_bench.analysis.frame import STEP
from nonxfer_bench.analysis.uncertainty import aggregate_intervals
from nonxfer_bench.cells.step import Step
from nonxfer_bench.rendering.figures import (
    ATTACK_STRENGTH_LABEL,
    AUTHORIZED_STYLE,
    MAX_SERIES,
    caption,
    encoding_label,
    errorbar,
    intervals_note,
    metric_label,
    panel_title,
    save,
    series_style,
    strength_axis_label,
    styled,
)
from nonxfer_bench.rendering.security_plot import security_curves_figures

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
        below, above = (
            (0.0, 0.0) if interval is None else (max(0.0, value - interval.lo), max(0.0, interval.hi - value))
        )
        rows.append({by: x, "value": 100 * value, "below": 100 * below, "above": 100 * above})
    return pd.DataFrame(rows).set_index(by)


def _errorbar(axis, curve: pd.DataFrame, x: list | None = None, **style):
    """``curve`` (:func:`_curve`) at its index or at ``x``: a line through its points, or one point with its
    interval."""
    return errorbar(
        axis, list(curve.index) if x is None else x, curve["value"], curve["below"], curve["above"], **style
    )


def _dot_plot(axis, series: list[tuple[pd.DataFrame, dict]], categories: list, labels: list[str]) -> None:
    """One tick per category (labelled ``labels``); each series a point with its interval at each of its categories,
    never joined, series that share categories side by side within them."""
    shared = len(series) > 1 and any(
        len(curve.index.intersection(other.index))
        for i, (curve, _) in enumerate(series)
        for other, _ in series[i + 1 :]
    )
    width = 0.7 / len(series) if shared else 0.0
    for index, (curve, style) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * width
        _errorbar(
            axis,
            curve,
            [categories.index(category) + offset for category in curve.index],
            **style | {"linestyle": "none"},
        )
    upright = (
        len(labels) > 1 and max(len(label) for label in labels) > 6
    )  # long names side by side: upright, never overlapping
    axis.set_xticks(range(len(categories)), labels, rotation=90 if upright else 0)
    axis.set_xlim(-0.6, len(categories) - 0.4)
    axis.grid(False, axis="x")


def _grid(plt, panels: int, columns: int, width: float, height: float, legend_rows: int, **options):
    rows = -(-panels // columns)
    size = (width * columns, height * rows + 0.4 * legend_rows + 0.8)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained", **options)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    return figure, axes


def _handle(**style):
    from matplotlib.lines import (
        Line2D,
    )  # heavy (~0.8 s): matplotlib is imported only when a figure is drawn (see figures.pyplot)

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
        handles = [
            _handle(label="authorized model of the panel", **AUTHORIZED_STYLE),
            _handle(color="black", linestyle=":", label="authorized model, clean images"),
        ]
        if single:
            handles += [_handle(label=model, **styles[model]) for model in models]
        else:
            handles += [
                _handle(label="unauthorized mean", **series_style(0)),
                _handle(label="best unauthorized model", **series_style(1)),
            ]
        figure, axes = _grid(plt, len(panels), columns, 3.8, 3.3, -(-len(handles) // 4), sharey=True)
        for axis, (authorized, encoder) in zip(axes.flat, panels):
            part = plain[(plain.authorized == authorized) & (plain.encoder == encoder)]
            series = _model_series(part, authorized, models if single else None, styles, metric)
            if part.strength.nunique() == 1:  # one strength: a dot plot of the models, the strength in the title
                labels = [label for label, _, _ in series]
                _dot_plot(axis, [(curve.set_axis([label]), style) for label, curve, style in series], labels, labels)
                axis.set_title(
                    panel_title(f"{encoding_label(encoder, part.strength.iloc[0])}, authorized {authorized}")
                )
                axis.set_xlabel("evaluated model")
            else:
                for _, curve, style in series:
                    _errorbar(axis, curve, **style)
                axis.set_title(panel_title(f"{encoder}, authorized {authorized}"))
                if part.strength.nunique() <= 6:  # the strengths run, not matplotlib's fractions of a dB
                    axis.set_xticks(sorted(part.strength.unique()))
                axis.set_xlabel(strength_axis_label(encoder))
            clean = plain[(plain.authorized == authorized) & (plain.encoder == "clean") & (plain.model == authorized)][
                metric
            ]
            if len(clean):
                axis.axhline(100 * clean.mean(), color="black", linewidth=1.0, linestyle=":")
        axes[0][0].set_ylim(-3, 103)  # shared by every panel
        for row in axes:
            row[0].set_ylabel(metric_label(metric))
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        caption(
            figure,
            f"{metric_label(metric).capitalize()} of each model on the released images (no attack) against the "
            "encoder's strength, per authorized model and encoder (one strength: one point per model); "
            f"{intervals_note(figure)}; Wilson's for one model, a bootstrap over images for aggregates.",
        )
    return figure


def _model_series(
    part: pd.DataFrame, authorized: str, models: list[str] | None, styles: dict, metric: str
) -> list[tuple[str, pd.DataFrame, dict]]:
    """(label, curve over strength, style) of each model in ``models`` present in ``part``, or (``models`` None) of
    the authorized model, the unauthorized mean and the best unauthorized model."""
    if models is not None:
        present = [m for m in models if m in set(part.model)]
        return [
            (m, _curve(part, "strength", metric, [m]), AUTHORIZED_STYLE if m == authorized else styles[m])
            for m in present
        ]
    series = [(authorized, _curve(part, "strength", metric, [authorized]), AUTHORIZED_STYLE)]
    others = sorted(part.loc[part.role == "unauthorized", "model"].unique())
    if others:
        series += [("unauthorized mean", _curve(part, "strength", metric, others), series_style(0))]
        series += [("best unauthorized", _curve(part, "strength", metric, others, "max"), series_style(1))]
    return series


def transfer_heatmap_figure(frame: pd.DataFrame, models: list[str], metric: str):
    """The figure of ``transfer_heatmap.png``; None without cells."""
    plain = frame[frame.baseline].dropna(subset=[metric])
    if plain.empty:
        return None
    table = plain.groupby(["authorized", "encoder", "strength", "model"])[metric].mean().unstack("model") * 100
    table = table[[m for m in models if m in table.columns]]
    with styled() as plt:
        from matplotlib.patches import (
            Rectangle,
        )  # heavy (~0.8 s): matplotlib is imported only when a figure is drawn (see figures.pyplot)

        figure, axis = plt.subplots(
            figsize=(4.5 + 0.9 * table.shape[1], 1.6 + 0.32 * table.shape[0]), layout="constrained"
        )
        image = axis.imshow(table.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (row, column), value in np.ndenumerate(table.values):
            if not np.isnan(value):
                axis.text(
                    column, row, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black"
                )
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
        caption(
            figure,
            f"Transfer with no attack: {metric_label(metric)} of each evaluated model on each release; boxed: the "
            "authorized model.",
        )
    return figure


def _attack_rows(attacked: pd.DataFrame) -> list[tuple[str, str, list[float]]]:
    """(authorized model, encoder, its strengths) per row of the attack curves, at most ``STRENGTHS_PER_PANEL``
    strengths a row."""
    rows = []
    for (authorized, encoder), part in attacked.groupby(["authorized", "encoder"], sort=True):
        strengths = sorted(part.strength.unique())
        rows += [
            (authorized, encoder, strengths[i : i + STRENGTHS_PER_PANEL])
            for i in range(0, len(strengths), STRENGTHS_PER_PANEL)
        ]
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
            len(rows),
            len(attacks),
            figsize=(2.9 * len(attacks) + 2.6, 2.5 * len(rows) + 1.9),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        axes_labels = {}  # (row, column) -> (x label, tick labels or None for the strength axis)
        for row, (axes_row, (authorized, encoder, strengths)) in enumerate(zip(axes, rows)):
            for column, (axis, attack) in enumerate(zip(axes_row, attacks)):
                part = attacked[
                    (attacked.authorized == authorized) & (attacked.encoder == encoder) & (attacked.attack == attack)
                ]
                axes_labels[row, column] = _attack_panel(axis, part, authorized, strengths, metric)
            axes_row[0].set_ylabel(f"{encoder}, authorized {authorized}\n{metric_label(metric)}")
            entries = [
                _handle(label=encoding_label(encoder, s), **series_style(i) | {"linestyle": "-"})
                for i, s in enumerate(strengths)
            ]
            axes_row[-1].legend(
                handles=entries, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=encoder, frameon=False
            )
        axes[0][0].set_ylim(-3, 103)  # shared by every panel
        for column, attack in enumerate(attacks):
            axes[0][column].set_title(attack)
            uniform = len({axes_labels[row, column] for row in range(len(rows))}) == 1
            for row in range(len(rows)):
                if uniform and row < len(rows) - 1:  # the same axis all down the column: named once, at the bottom
                    axes[row][column].tick_params(labelbottom=False)
                else:
                    axes[row][column].set_xlabel(axes_labels[row, column][0])
        roles = [
            _handle(color="grey", marker="o", linestyle="-", label="authorized model"),
            _handle(color="grey", marker="o", markerfacecolor="none", linestyle="--", label="unauthorized mean"),
        ]
        figure.legend(handles=roles, loc="outside lower center", ncol=2, frameon=False)
        caption(
            figure,
            f"{metric_label(metric).capitalize()} under each attack (columns), per authorized model and encoder "
            "(rows), one colour per encoder strength: against the attack's strength (0 = weakest, 1 = strongest "
            "setting) where the attack's steps differ only by strength, else one point per attack step; "
            f"{intervals_note(figure)}.",
        )
    return figure


def _attack_panel(
    axis, part: pd.DataFrame, authorized: str, strengths: list[float], metric: str
) -> tuple[str, tuple[str, ...] | None]:
    """One attack's panel of a row: the authorized model and the unauthorized mean per encoder strength, as curves over
    the attack strength or as a dot plot over the attack's steps; returns its x label and tick labels (None:
    strength)."""
    steps = sorted(set(part[STEP]))
    if not steps:  # the attack did not run on this row's release
        return "", None
    by_strength = len(steps) > 1 and len({step.strength for step in steps}) == len(steps)
    series = []
    for index, strength in enumerate(strengths):
        encoding = part[part.strength == strength]
        style = series_style(index)
        groups = [([authorized], style | {"linestyle": "-"})] if authorized in set(encoding.model) else []
        others = sorted(encoding.loc[encoding.role == "unauthorized", "model"].unique())  # no controls
        groups += [(others, style | {"linestyle": "--", "markerfacecolor": "none"})] if others else []
        series += [
            (_curve(encoding, "attack_strength" if by_strength else STEP, metric, models), style)
            for models, style in groups
        ]
    if by_strength:
        for curve, style in series:
            _errorbar(axis, curve, **style)
        axis.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
        axis.set_xlim(-0.05, 1.05)
        return ATTACK_STRENGTH_LABEL, None
    labels, name = _step_labels(steps)
    _dot_plot(axis, series, steps, labels)
    return name, tuple(labels)


def _step_labels(steps: list[Step]) -> tuple[list[str], str]:
    """Tick labels that tell an attack's steps apart and what they name: the settings that differ between the steps
    (``released``: 10, 100, 1000), with the attack strength first where those do not tell them apart (or for one
    step)."""
    settings = [dict(step.settings) for step in steps]
    keys = sorted({key for own in settings for key in own if len({str(other.get(key)) for other in settings}) > 1})
    values = [", ".join(str(own.get(key, "-")) for key in keys) for own in settings]
    if keys and len(set(values)) == len(values):
        return values, ", ".join(keys)
    return [", ".join(filter(None, [f"{step.strength:g}", value])) for step, value in zip(steps, values)], ", ".join(
        ["attack strength", *keys]
    )


def write_plots(frame: pd.DataFrame, models: list[str], metric: str, folder: Path) -> list[Path]:
    """The figures above under ``folder``; returns the written paths (a figure without data is skipped)."""
    figures = {
        "accuracy_vs_strength.png": accuracy_vs_strength_figure(frame, models, metric),
        "transfer_heatmap.png": transfer_heatmap_figure(frame, models, metric),
        "attack_curves.png": attack_curves_figure(frame, metric),
        **security_curves_figures(frame, metric),
    }
    return [save(figure, folder / name) for name, figure in figures.items() if figure is not None]
