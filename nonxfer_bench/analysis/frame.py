"""The results frame: one row per cell, the one table that every leaderboard section, plot, theory table and MLflow
metric reads.

Besides the cell's own fields (:meth:`~nonxfer_bench.cells.cell.Cell.record`) a row holds its :class:`Release` and
its :class:`Step` (the values that name a release and an attack step everywhere), the step's knowledge ``tier``, the
budget it spent (``nes``: released + labelled NEs; ``public``: clean public images) and whether its attack only
``measures_only`` what the release leaks. Tables group by the
``release`` and ``step`` columns, never by lists of columns of their own.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.release import Release
from nonxfer_bench.cells.step import param_text, steps
from nonxfer_bench.core.errors import UserError

RELEASE, STEP = "release", "step"
# the columns of cells.csv, in order ('attack_param' there: the cell's own parameters, measurements included)
CELL_COLUMNS = [
    "authorized", "encoder", "strength", "seed", "attack", "attack_strength", "attack_param", "model", "role",
    "accuracy", "agreement", "accuracy_flat", "accuracy_worst", "accuracy_spread", "draws",
    "storage", "encoded_psnr", "encoded_psnr_min", "stored_psnr", "attacked_psnr", "attacked_ssim", "n", "key",
]  # fmt: skip
# the frame's other columns: the no-attack flag, intervals and paired tests, what ran, the values and budgets
EXTRA_COLUMNS = [
    "baseline", "n_labeled", "outcomes", "precision", "device", "code", "cell_param",
    RELEASE, STEP, "tier", "nes", "public", "group", "attack_measured", "bounds", "position", "measures_only",
]  # fmt: skip
ORDER = ["authorized", "encoder", "strength", "seed", "attack", "attack_strength", "model"]


def results_frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell with :data:`CELL_COLUMNS` and :data:`EXTRA_COLUMNS`, sorted stably by :data:`ORDER`.

    ``encoder`` reads ``patch/png8`` for a release not stored as float32 (as ``cells.csv`` has it),
    ``attack_param`` is the step's text (:attr:`Step.text`) and ``cell_param`` the cell's own parameters with what
    its fit measured; accuracies are floats (NaN for unlabeled images); ``position`` is the cell's place in ``cells``
    (a store's order: when each was computed)."""
    rows = []
    measuring = {name: _measures_only(name) for name in {cell.attack for cell in cells}}
    for position, (cell, step) in enumerate(zip(cells, steps(cells))):
        release = Release.of(cell)
        rows.append(
            cell.record()
            | {
                "encoder": release.encoding,
                "attack_param": step.text,
                "cell_param": param_text(cell.attack_param | cell.attack_measured),
            }
            | {
                RELEASE: release,
                STEP: step,
                "nes": (cell.budget_released or 0) + (cell.budget_labelled or 0),
                "public": cell.budget_public or 0,
            }
            | {
                "attack_measured": cell.attack_measured,
                "precision": cell.precision,
                "bounds": cell.bounds,
                "position": position,
            }
            | {"measures_only": measuring[cell.attack]}
        )
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS + EXTRA_COLUMNS)
    for column in ("accuracy", "agreement", "accuracy_flat"):  # None (unlabeled) becomes NaN
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(ORDER, kind="stable").reset_index(drop=True)


def _measures_only(attack: str) -> bool:
    """Whether ``attack`` only measures what a release leaks (identify): not a step of the ladder or the verdict. An
    attack this installation does not know (a plugin's, read from old results) counts as an attack."""
    try:
        return bool(ATTACKS.get(attack).measures_only)
    except UserError:
        return False


def unauthorized_models(part: pd.DataFrame) -> list[str]:
    """The models counted in unauthorized means and maxima: neither the authorized model nor a control."""
    return sorted(part.loc[part.role == "unauthorized", "model"].unique())


def metric_of(frame: pd.DataFrame) -> str:
    """What the tables show: ``accuracy``, or ``agreement`` when no cell has an accuracy (unlabeled images)."""
    return "accuracy" if frame["accuracy"].notna().any() else "agreement"
