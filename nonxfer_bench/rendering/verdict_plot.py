"""The protocol verdict as one figure: the protection x attack-tier matrix (``verdict.png``).

Rows are releases (protection = encoder at its strength, for its authorized model) in verdict rank order, columns the
knowledge tiers and the white box; each cell's colour is the protection gap at that tier (blue: the authorized model
leads, red: an unauthorized model does at least as well), with the gap and its 95 % interval written in it and
``broken`` where the tier breaks the release. A tier no attack of which ran is grey (``not run``); one above the tier
that settled the release is hatched (``not needed``): the protocol attacks a broken (or, ne-v2, unheld) release no
further. It is the table
of :func:`~nonxfer_bench.rendering.verdict.verdict_table` drawn, for a paper's figure, not a second verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nonxfer_bench.analysis.verdict import ReleaseVerdict, TierVerdict, verdicts
from nonxfer_bench.rendering.figures import caption, save, styled
from nonxfer_bench.schema.protocol import VERDICT_TIERS, Protocol, VerdictSpec

FILE = "verdict.png"
COLUMNS = (*VERDICT_TIERS, "white_box")
COLUMN_NAMES = {"none": "none", "method": "method", "architecture": "architecture", "public_weights": "public\nweights",
                "labelled_nes": "labelled\nNEs", "white_box": "white box\n(not ranked)"}  # fmt: skip
MAX_ROWS = 60  # a taller figure is no longer readable: the table holds every release


def _by_column(verdict: ReleaseVerdict) -> dict[str, TierVerdict | None]:
    found = {tier.tier: tier for tier in verdict.tiers}
    return {column: verdict.white_box if column == "white_box" else found.get(column) for column in COLUMNS}


def _needed(verdict: ReleaseVerdict, column: str) -> bool:
    """False for a tier above the one that settled the release (the protocol did not attack it there)."""
    settled = verdict.settled_at
    return settled is None or (column != "white_box" and VERDICT_TIERS.index(column) <= VERDICT_TIERS.index(settled))


def _cell_text(found: TierVerdict) -> str:
    gap = found.gap
    return f"{100 * gap.estimate:+.1f}\n[{100 * gap.lo:+.1f}, {100 * gap.hi:+.1f}]" + (
        "\nbroken" if found.broken else ""
    )


def write_verdict_plot(
    frame: pd.DataFrame, folder: Path, protocol: Protocol | None = None, ensemble: str | None = None
) -> list[Path]:
    """``verdict.png`` in ``folder`` (the paths written; none where no release has a verdict)."""
    ranked = verdicts(frame, protocol.verdict if protocol else VerdictSpec())
    if not ranked:
        return []
    found = ranked[:MAX_ROWS]
    shown = (
        f"the first {len(found)} of {len(ranked)} releases (leaderboard.md ranks them all); "
        if len(ranked) > len(found)
        else ""
    )
    gaps = np.array(
        [[100 * t.gap.estimate if t is not None else np.nan for t in _by_column(v).values()] for v in found]
    )
    limit = max(10.0, float(np.nanmax(np.abs(gaps))) if np.isfinite(gaps).any() else 10.0)
    labels = [f"{rank}. {v.release.authorized}: {v.release.label}" for rank, v in enumerate(found, 1)]
    ran = (
        f"protocol {protocol.label} v{protocol.version}, {ensemble} ensemble"
        if protocol
        else "not a protocol verdict: the suite's own attacks"
    )
    n = sorted({v.n for v in found})
    with styled() as plt:
        figure, axes = plt.subplots(figsize=(11, 1.6 + 0.62 * len(found)), layout="constrained")
        image = axes.imshow(np.ma.masked_invalid(gaps), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        axes.set_facecolor("#e8e8e8")
        for row, verdict in enumerate(found):
            for col, (column, tier) in enumerate(_by_column(verdict).items()):
                if tier is not None:
                    dark = abs(gaps[row, col]) > 0.6 * limit
                    axes.text(
                        col,
                        row,
                        _cell_text(tier),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                        fontweight="bold" if tier.broken else "normal",
                    )
                elif not _needed(verdict, column):
                    axes.add_patch(
                        plt.Rectangle(
                            (col - 0.5, row - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#aaaaaa", linewidth=0
                        )
                    )
                    axes.text(col, row, "not needed", ha="center", va="center", fontsize=8, color="#555555")
                else:
                    axes.text(col, row, "not run", ha="center", va="center", fontsize=8, color="#555555")
        axes.set_xticks(range(len(COLUMNS)), [COLUMN_NAMES[c] for c in COLUMNS])
        axes.set_yticks(range(len(found)), labels)
        axes.tick_params(axis="x", top=True, labeltop=True, bottom=False, labelbottom=False)
        axes.grid(False)
        axes.set_xlabel(
            "knowledge tier of the attacker (each includes the attacks of the tiers left of it; white box beside them)"
        )
        bar = figure.colorbar(image, ax=axes, shrink=0.8)
        bar.set_label("protection gap (points): authorized minus best unauthorized accuracy")
        caption(
            figure,
            f"Protection gap per release and knowledge tier ({ran}); {shown}n = {', '.join(f'{k:,}' for k in n)} "
            "report images per release, 95 % intervals in brackets; blue: the authorized model leads, red: an "
            "unauthorized model does as well or better",
        )
        return [save(figure, folder / FILE)]
