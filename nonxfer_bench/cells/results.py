"""The cells file of a results folder (``results/<suite>/``): the cells with per-image outcomes, gzipped so that the
same cells give the same bytes, from which every table and interval is rebuilt in a fresh clone (no ``runs/``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.store import gunzipped, gzipped_lines, lines
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.core.errors import UserError

RESULTS_CELLS = "cells.jsonl.gz"  # the cells of a results folder, per-image outcomes included, gzipped (byte-stable)
LEGACY_RESULTS_CELLS = "cells.jsonl"  # results folders written before they were gzipped


def write_results_cells(path: Path, cells: list[Cell]) -> None:
    """``cells`` gzipped at ``path``, left as it is when it already holds exactly these lines (another zlib, e.g.
    macOS's, writes other bytes for the same text: a rebuild must not change a committed file for nothing)."""
    text = lines(cells).encode()
    with contextlib.suppress(UserError):
        if path.is_file() and gunzipped(path, limit=len(text)) == text:
            return
    atomic_write(path, gzipped_lines(cells))


def results_cells(folder: Path) -> Path:
    """A results folder's cells file: ``cells.jsonl.gz``, or ``cells.jsonl`` in a folder written before."""
    legacy = folder / LEGACY_RESULTS_CELLS
    return legacy if legacy.is_file() and not (folder / RESULTS_CELLS).is_file() else folder / RESULTS_CELLS
