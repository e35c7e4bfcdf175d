"""An attack step as every table, plot and MLflow name knows it: one value, made by :func:`steps` alone.

A step is an attack at one strength with the settings that tell it from the attack's other steps: its own
parameter at that strength (``quality=50``, :meth:`Attack.parameter`) and the budget it spent (``released``,
``labelled``, ``public``: a budget sweep is one step per budget). What the attack's fit found on a release
(``attack_measured``) is never part of it, so a step's releases and seeds aggregate into one row. Where two
suite entries of one attack would read the same at one strength in a group (two candidate lists of a surrogate),
the suite parameters that tell them apart are added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nonxfer_bench.cells.cell import Cell

NO_ATTACK = "no attack"


@dataclass(frozen=True, order=True)
class Step:
    """One attack step; equal, hashed and ordered by (attack, strength, text)."""

    attack: str
    strength: float
    text: str  # the settings as ``k=v`` pairs sorted by key ('' when none): what a table's ``param`` column shows
    baseline: bool = field(default=False, compare=False)  # the no-attack step
    tier: str | None = field(default=None, compare=False)  # the attack's knowledge tier (None: not recorded)
    settings: tuple[tuple[str, Any], ...] = field(default=(), compare=False)  # the items ``text`` shows

    @property
    def label(self) -> str:
        """``blur 0.5``, or ``no attack`` for the identity (never ``none``)."""
        return NO_ATTACK if self.baseline else f"{self.attack} {self.strength:g}"


def param_text(params: dict[str, Any]) -> str:
    """``k=v`` pairs sorted by key, as the tables show an attack's parameters."""
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def step_settings(cell: Cell) -> dict[str, Any]:
    """A cell's settings and the budget it spent (zero budgets left out)."""
    budget = {"released": cell.budget_released, "labelled": cell.budget_labelled, "public": cell.budget_public}
    return dict(cell.attack_param) | {k: v for k, v in budget.items() if v}


def steps(cells: list[Cell]) -> list[Step]:
    """Each cell's attack step (see the module docstring)."""
    settings = [step_settings(cell) for cell in cells]
    configs: dict[tuple, set[str]] = {}
    for cell, shown in zip(cells, settings):
        key = (cell.group, cell.model, cell.attack, cell.attack_strength, param_text(shown))
        configs.setdefault(key, set()).add(param_text(cell.attack_config))
    out = []
    for cell, own in zip(cells, settings):
        alike = len(configs[cell.group, cell.model, cell.attack, cell.attack_strength, param_text(own)]) > 1
        extra = {k: v for k, v in cell.attack_config.items() if k not in own} if alike else {}
        text = " ".join(filter(None, [param_text(own), param_text(extra)]))
        out.append(
            Step(
                cell.attack, cell.attack_strength, text, cell.baseline, cell.tier, tuple(sorted((own | extra).items()))
            )
        )
    return out
