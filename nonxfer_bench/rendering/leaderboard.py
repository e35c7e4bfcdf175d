"""Leaderboards: the suite's cells as a long CSV and a Markdown list of sections, sorted and formatted stably.

``leaderboard.md`` opens with ``partial: X of Y planned cells`` when the cells are not all of the suite's plan, then
what was run (:mod:`nonxfer_bench.rendering.provenance`: suite, images, seeds, counts, precision, device, code
version, date of the newest cell; nothing from the clock) and the units (% for people, fractions in cells.csv).
Sections, each a :class:`~nonxfer_bench.rendering.sections.Section` with its own glossary, all from one results
frame (:func:`~nonxfer_bench.analysis.frame.results_frame`):
0. *Protocol verdict*, the headline ranking: per release the protection gap at each knowledge tier, chosen on tuning
   images and reported on the rest, with the tiers that did not run said so (:mod:`nonxfer_bench.analysis.verdict`,
   :mod:`nonxfer_bench.rendering.verdict`), then the evaluation's *sanity checks*.
1. *NE effect*: per (authorized model, encoder, strength) with no attack: achieved standard PSNR,
   authorized accuracy, its retention (% of the authorized model's clean accuracy), the reference's
   flat-input accuracy for overlapping stems, the mean and
   max unauthorized accuracy, and every model's accuracy.
2. *Attacks*: the same rows per attack step: authorized accuracy, mean and max unauthorized accuracy,
   the attacked images' PSNR against the clean ones.
3. *Theory* (when identity cells carry ``bound/`` numbers, see ``nonxfer_bench/linalg/bounds.py``): per encoding
   the authorized bound ratios, per unauthorized model misalignment / Hoffman-Wielandt ratio / first-layer
   response, and the Spearman correlation of misalignment with the accuracy drop; two PNG plots
   (``theory_pred_vs_obs.png``, ``theory_misalignment_vs_drop.png``) are written beside it.
4. *Adversary ladder*, *Cheapest break* and *Identification* when cells record their attacks' threat model
   (:mod:`nonxfer_bench.rendering.ladder`).

Beside the tables: the accuracy plots of :mod:`nonxfer_bench.rendering.plots` (accuracy vs encoder strength, the
transfer heatmap, accuracy vs attack strength, security curves). The cells come from the suite's cell store or,
read back from MLflow, from :mod:`nonxfer_bench.tracking.readback`: both feed the same :func:`write_leaderboard`.

The NE-effect table also names, per encoding, the *strongest attack*: the attack step (any attack of the
suite at any strength, ``identity`` included) with the highest mean unauthorized accuracy, with that mean
and the authorized accuracy it leaves (:func:`~nonxfer_bench.rendering.tables.strongest_attack`); ``no attack`` names
the identity step everywhere.
Per-model columns mark the authorized model's value ``(auth)``. With several precisions (part of the cell key)
each precision is its own row, with a ``precision`` column.

Models a suite names as ``controls`` (e.g. random-weight twins) keep their own columns but are never
counted as unauthorized (means, maxima, strongest attack).

Every accuracy or agreement is shown with its 95% interval as ``83.5 [78.1, 87.9]`` and every table has
an ``n`` column (images per cell) and a glossary line under it (:mod:`nonxfer_bench.analysis.uncertainty`).
With several seeds, ``seeds`` and the between-seed spread (``seed sd``) are added. cells.csv keeps its
columns: intervals follow from its ``n`` and the proportion. Where cells keep per-image outcomes, the
unauthorized mean and max get a paired bootstrap over images, each attack row its change against no attack
(``Δ``, ``p``: Newcombe and exact McNemar for the authorized model, bootstrap and sign-flip test for the
unauthorized mean) and the strongest attack its gain with a Holm-adjusted p; without outcomes those show ``—``.

A missing accuracy (an unlabeled dataset) renders blank; when no cell has an accuracy, the tables show
agreement with each model's own clean prediction instead, and say so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nonxfer_bench.analysis.frame import CELL_COLUMNS, metric_of, results_frame
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.results import RESULTS_CELLS, write_results_cells
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.rendering.ladder import ladder_sections
from nonxfer_bench.rendering.plots import write_plots
from nonxfer_bench.rendering.provenance import Source, run_summary
from nonxfer_bench.rendering.sections import Section
from nonxfer_bench.rendering.tables import attacks_section, effect_section
from nonxfer_bench.rendering.theory import theory_section, write_theory_plots
from nonxfer_bench.rendering.verdict import sanity_section, verdict_section
from nonxfer_bench.rendering.verdict_plot import write_verdict_plot
from nonxfer_bench.schema.protocol import Protocol

UNITS = (
    "Every accuracy, agreement and retention here is in % and every change or gap in percentage points; the "
    "machine-readable files (cells.csv, verify.json) keep fractions in [0, 1]. Accuracies are top-1. PSNR is standard "
    "PSNR (peak 1, [0, 1] pixels) of the released images against the clean ones. Strength: nominal PSNR for "
    "`reference`, standard PSNR for the others. `flat input` is the published protocol for overlapping stems (the "
    "authorized model fed the unfolded tensor directly). `auth retention`: authorized accuracy as a % of its clean "
    "accuracy. Generated by `nonxfer-bench`; per-cell values in cells.csv."
)


def sections(
    frame: pd.DataFrame, models: list[str], protocol: Protocol | None = None, ensemble: str | None = None
) -> list[Section]:
    """The leaderboard's sections, in order: the ranking (the protocol verdict) and its sanity checks, NE effect,
    attacks, theory (when there are bound numbers), the ladder's (when cells record a threat tier)."""
    metric = metric_of(frame)
    seeds = frame.seed.nunique() > 1
    paired = bool(frame["outcomes"].map(lambda outcomes: isinstance(outcomes, dict)).any())
    theory = theory_section(frame)
    return [
        verdict_section(frame, protocol, ensemble),
        sanity_section(frame),
        effect_section(frame, models, metric, paired, seeds),
        attacks_section(frame, metric, paired, seeds),
        *([theory] if theory else []),
        *ladder_sections(frame),
    ]


def notes(frame: pd.DataFrame) -> str:
    """What a reader must know before the tables: controls, and agreement shown in place of accuracy."""
    text = ""
    controls = sorted(frame.loc[frame.role == "control", "model"].unique())
    if controls:
        text += (
            f"**Controls** ({', '.join(controls)}) are listed per model but never counted in `unauth mean` / `unauth "
            "max`.\n\n"
        )
    if metric_of(frame) == "agreement":
        text = (
            "**Unlabeled dataset**: accuracy is not defined, so the tables show *agreement* (%): how often a model's "
            "prediction on the released/attacked image equals its own prediction on the clean image. "
            "The `clean` rows are 100 by definition.\n\n" + text
        )
    return text


def write_leaderboard(
    suite_name: str,
    cells: list[Cell],
    models: list[str],
    folder: Path,
    source: Source | None = None,
    protocol: Protocol | None = None,
    ensemble: str | None = None,
    plots: bool = True,
) -> list[Path]:
    """Write ``cells.csv``, ``cells.jsonl.gz`` and ``leaderboard.md`` (and the plots) under ``folder``; returns the
    paths to show and log (all but ``cells.jsonl.gz``, which MLflow holds per group as ``cells.json``).

    ``cells.jsonl.gz`` holds the cells as the store does, per-image outcomes included, so that ``leaderboard`` and
    ``report`` rebuild every table and interval from a results folder alone (a fresh clone has no ``runs/``);
    gzipped without a time stamp, so the same cells give the same bytes (results folders stay small in git).

    ``source`` (the suite file and when the newest cell was written) completes the "What was run" line; a partial
    set of the suite's cells (``source.partial``) is said above it. ``protocol`` (and which ``ensemble`` of it ran)
    names the protocol the ranking is the verdict of, and sets how it is computed. ``plots=False`` writes only the
    tables (a bundle check re-derives them, and the plots take longer than the tables).
    """
    folder.mkdir(parents=True, exist_ok=True)
    frame = results_frame(cells)
    csv_path, md_path = folder / "cells.csv", folder / "leaderboard.md"
    per_cell = frame[CELL_COLUMNS].assign(
        attack_param=frame.cell_param
    )  # each cell's own parameters, measurements included
    atomic_write(csv_path, per_cell.drop(columns=["key"]).to_csv(index=False, float_format="%.4f"))
    write_results_cells(folder / RESULTS_CELLS, sorted(cells, key=lambda cell: cell.key))
    text = [
        f"# Leaderboard: {suite_name}",
        "",
        *([f"**{source.partial}**: the tables cover only these cells.", ""] if source and source.partial else []),
        run_summary(suite_name, frame, source),
        "",
        UNITS,
        "",
        notes(frame),
        *(line for section in sections(frame, models, protocol, ensemble) for line in section.lines()),
    ]
    atomic_write(md_path, "\n".join(text))
    if not plots:
        return [md_path, csv_path]
    return [
        md_path, csv_path, *write_verdict_plot(frame, folder, protocol, ensemble), *write_theory_plots(frame, folder),
        *write_plots(frame, models, metric_of(frame), folder),
    ]  # fmt: skip
