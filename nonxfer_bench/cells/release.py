"""A release as every table, plot and MLflow name knows it: what an authorized model's data owner publishes."""

from __future__ import annotations

from dataclasses import dataclass

from nonxfer_bench.cells.cell import Cell

CLEAN = "clean"  # the encoder that releases the images unchanged: the reference every release is compared with


@dataclass(frozen=True, order=True)
class Release:
    """One release: an encoder at a strength for an authorized model, stored in a format, scored in a precision.

    Its seeds (NE keys) are draws of the same release. Ordered by authorized model, encoder, strength, storage and
    precision."""

    authorized: str
    encoder: str
    strength: float
    storage: str = "float32"
    precision: str = "fp32"

    @classmethod
    def of(cls, cell: Cell) -> Release:
        return cls(cell.authorized, cell.encoder, cell.strength, cell.storage, cell.precision)

    @property
    def clean(self) -> bool:
        """The clean images, not a release: every table's reference row."""
        return self.encoder == CLEAN

    @property
    def encoding(self) -> str:
        """The encoder as stored: ``patch``, or ``patch/png8`` when not stored losslessly as float32."""
        return self.encoder if self.storage == "float32" else f"{self.encoder}/{self.storage}"

    @property
    def label(self) -> str:
        """``patch 10``, ``patch/png8 10``, ``clean``; the precision is a column of its own where several meet."""
        return self.encoding if self.clean else f"{self.encoding} {self.strength:g}"
