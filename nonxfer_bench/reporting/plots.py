"""Leaderboard plots (matplotlib, PNG) from a cells frame (:func:`nonxfer_bench.reporting.leaderboard.cells_frame`).

Three figures, each a mean over seeds of ``metric`` (accuracy, or agreement for unlabeled data), in %,
with error bars for the 95% interval of each point (:mod:`nonxfer_bench.reporting.uncertainty`):

- ``accuracy_vs_strength.png``: one panel per (authorized model, encoder), no attack: the authorized
  model (black) and every unauthorized model against the encoder strength, the clean value at the left.
- ``transfer_heatmap.png``: rows (authorized model, encoding), columns the evaluated models, no attack.
- ``attack_curves.png``: one panel per (authorized model, attack): authorized (solid) and mean
  unauthorized (dashed) against the attack strength, one colour per encoding.

The bound scatters are :func:`nonxfer_bench.reporting.theory.write_theory_plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nonxfer_bench.reporting.uncertainty import aggregate_intervals


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)
    return path


def _label(encoder: str, strength: float) -> str:
    return encoder if encoder == "clean" else f"{encoder} {strength:g}"


def _curve(part: pd.DataFrame, by: str, metric: str, models: list[str]) -> pd.DataFrame:
    """Per value of ``by``: the mean over ``models`` (and seeds) of ``metric`` in % with its 95% interval's
    distance below and above (columns value, below, above), for ``axis.errorbar``; the intervals are the
    leaderboard's (:func:`~nonxfer_bench.reporting.uncertainty.aggregate_intervals`)."""
    rows = []
    for x, rows_at_x in part[part.model.isin(models)].groupby(by, sort=True):
        value = rows_at_x.groupby("model")[metric].mean().mean()
        interval = aggregate_intervals(rows_at_x, models, metric)[0]
        below, above = (0.0, 0.0) if interval is None else (max(0.0, value - interval.lo), max(0.0, interval.hi - value))
        rows.append({by: x, "value": 100 * value, "below": 100 * below, "above": 100 * above})
    return pd.DataFrame(rows).set_index(by)


def _errorbar(axis, curve: pd.DataFrame, **style):
    return axis.errorbar(curve.index, curve["value"], yerr=[curve["below"], curve["above"]], capsize=2, elinewidth=0.6, **style)


def accuracy_vs_strength(frame: pd.DataFrame, models: list[str], metric: str, path: Path) -> Path | None:
    plain = frame[frame.baseline].dropna(subset=[metric])
    panels = sorted({(a, e) for a, e in zip(plain.authorized, plain.encoder) if e != "clean"})
    if not panels:
        return None
    plt = _pyplot()
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for axis, (authorized, encoder) in zip(axes.flat, panels):
        part = plain[(plain.authorized == authorized) & (plain.encoder == encoder)]
        clean = plain[(plain.authorized == authorized) & (plain.encoder == "clean")].groupby("model")[metric].mean()
        for model in (m for m in models if m in set(part.model)):
            curve = _curve(part, "strength", metric, [model])
            style = {"color": "black", "lw": 2.2} if model == authorized else {"lw": 1.0}
            line = _errorbar(axis, curve, marker="o", ms=3, label=f"{model}{' (auth)' if model == authorized else ''}", **style)
            if model in clean:
                axis.axhline(100 * clean[model], color=line[0].get_color(), lw=0.5, ls=":")
        axis.set_title(f"{authorized}: {encoder}", fontsize=8)
        axis.set_xlabel("encoder strength", fontsize=7)
        axis.set_ylabel(f"{metric} %", fontsize=7)
        axis.set_ylim(-3, 103)
        axis.tick_params(labelsize=6)
        axis.legend(fontsize=5)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    return _save(figure, path)


def transfer_heatmap(frame: pd.DataFrame, models: list[str], metric: str, path: Path) -> Path | None:
    plain = frame[frame.baseline].dropna(subset=[metric])
    if plain.empty:
        return None
    table = plain.groupby(["authorized", "encoder", "strength", "model"])[metric].mean().unstack("model") * 100
    table = table[[m for m in models if m in table.columns]]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(1.0 + 0.8 * table.shape[1], 0.8 + 0.3 * table.shape[0]))
    axis.imshow(table.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (row, column), value in np.ndenumerate(table.values):
        if not np.isnan(value):
            axis.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=6, color="white" if value < 60 else "black")
    axis.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(table.shape[0]), [f"{a} / {_label(e, s)}" for a, e, s in table.index], fontsize=7)
    axis.set_xlabel("evaluated model", fontsize=7)
    axis.set_title(f"{metric} % with no attack: authorized (row) x evaluated (column)", fontsize=8)
    return _save(figure, path)


def attack_curves(frame: pd.DataFrame, metric: str, path: Path) -> Path | None:
    attacked = frame[~frame.baseline].dropna(subset=[metric])
    panels = sorted(set(zip(attacked.authorized, attacked.attack)))
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    encodings = sorted(set(zip(attacked.encoder, attacked.strength)))
    colours = {encoding: plt.get_cmap("tab20")(index % 20) for index, encoding in enumerate(encodings)}
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    per_line = 2 * columns  # legend entries per line below the panels
    legend_lines = -(-(len(encodings) + 2) // per_line)
    height = 2.4 * rows + 0.2 * legend_lines + 0.1
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, height), squeeze=False)
    for axis, (authorized, attack) in zip(axes.flat, panels):
        part = attacked[(attacked.authorized == authorized) & (attacked.attack == attack)]
        for encoding, rows_of_encoding in part.groupby(["encoder", "strength"], sort=True):
            if authorized not in set(rows_of_encoding.model):
                continue
            _errorbar(axis, _curve(rows_of_encoding, "attack_strength", metric, [authorized]), color=colours[encoding], marker="o", ms=3)
            others = sorted(rows_of_encoding.loc[rows_of_encoding.role == "unauthorized", "model"].unique())  # no controls
            if others:
                _errorbar(axis, _curve(rows_of_encoding, "attack_strength", metric, others), color=colours[encoding], ls="--", marker="x", ms=3)
        axis.set_title(f"{authorized}: {attack}", fontsize=8)
        axis.set_xlabel("attack strength", fontsize=7)
        axis.set_xlim(-0.03, 1.03)
        axis.set_ylabel(f"{metric} %", fontsize=7)
        axis.set_ylim(-3, 103)
        axis.tick_params(labelsize=6)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    handles = [Line2D([], [], color="grey", marker="o", label="authorized"), Line2D([], [], color="grey", ls="--", marker="x", label="unauthorized mean")]
    handles += [Line2D([], [], color=colours[e], lw=3, label=_label(*e)) for e in encodings]
    figure.legend(handles=handles, loc="lower center", ncol=per_line, fontsize=6, frameon=False)
    figure.tight_layout(rect=(0, (0.2 * legend_lines + 0.1) / height, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_plots(frame: pd.DataFrame, models: list[str], metric: str, folder: Path) -> list[Path]:
    """The three figures above under ``folder``; returns the written paths (a figure without data is skipped)."""
    paths = [
        accuracy_vs_strength(frame, models, metric, folder / "accuracy_vs_strength.png"),
        transfer_heatmap(frame, models, metric, folder / "transfer_heatmap.png"),
        attack_curves(frame, metric, folder / "attack_curves.png"),
    ]
    return [path for path in paths if path is not None]
