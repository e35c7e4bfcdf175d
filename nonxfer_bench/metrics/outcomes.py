"""Classification outcomes of a cell: running counts over batches and attack draws, and their summary."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from nonxfer_bench.cells.cell import Outcomes, pack_bits


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: fraction of predictions equal to the labels."""
    return float((predictions == labels).double().mean())


def aggregate_draws(name: str, values: list[float] | None, role: str) -> dict[str, object]:
    """Summarize one metric over K stochastic attack draws: ``name`` is the mean over draws.

    With K > 1 also ``<name>_worst``, the worst draw for the data owner (the highest value for an
    unauthorized model or a control, the lowest for the authorized one), ``<name>_spread`` (population standard
    deviation) and ``<name>_draws`` (every value). ``values`` None means undefined (unlabeled data).
    """
    if values is None:
        return {name: None}
    out: dict[str, object] = {name: statistics.fmean(values)}
    if len(values) > 1:
        out[f"{name}_worst"] = min(values) if role == "authorized" else max(values)
        out[f"{name}_spread"] = statistics.pstdev(values)
        out[f"{name}_draws"] = list(values)
    return out


class Tally:
    """Per-image outcomes of one (attack step, model) cell over the batches of a group, kept per attack draw.

    Accuracy counts only labeled images (label >= 0; unlabeled sets use -1) and is None when there are
    none; agreement with the model's clean prediction counts every image. A stochastic attack with K
    draws gives K values per metric; the cell reports their mean, and for K > 1 the worst case for the
    data owner and the spread (:func:`aggregate_draws`). The flags themselves become the cell's
    :class:`~nonxfer_bench.cells.cell.Outcomes`, so that every number can carry an interval.
    """

    def __init__(self, draws: int = 1) -> None:
        self.labeled: list[torch.Tensor] = []
        self.correct: list[list[torch.Tensor]] = [[] for _ in range(draws)]
        self.agree: list[list[torch.Tensor]] = [[] for _ in range(draws)]
        self.correct_flat: list[torch.Tensor] = []

    def add(self, draw: int, predictions: torch.Tensor, labels: torch.Tensor, clean_predictions: torch.Tensor) -> None:
        """One batch of one draw: predictions on the attacked images, the labels, the clean predictions."""
        if draw == 0:
            self.labeled.append((labels >= 0).cpu())
        self.correct[draw].append((predictions == labels).cpu())
        self.agree[draw].append((predictions == clean_predictions).cpu())

    def add_flat(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch of the authorized model's predictions on the published recipe's flat input."""
        self.correct_flat.append((predictions == labels).cpu())

    @property
    def n(self) -> int:
        return sum(len(flags) for flags in self.labeled)

    def metrics(self, role: str) -> dict[str, Any]:
        labeled = int(torch.cat(self.labeled).sum()) if self.labeled else 0
        n = self.n
        accuracies = [int(torch.cat(c).sum()) / labeled for c in self.correct] if labeled else None
        out: dict[str, Any] = {"n": n}
        out |= aggregate_draws("accuracy", accuracies, role)
        out |= aggregate_draws("agreement", [int(torch.cat(a).sum()) / n for a in self.agree], role)
        if labeled != n:
            out["n_labeled"] = labeled
        if self.correct_flat:
            out["accuracy_flat"] = int(torch.cat(self.correct_flat).sum()) / labeled if labeled else None
        return out

    def outcomes(self, image_ids: str) -> Outcomes:
        """The per-image flags as packed bits, for the cell store and MLflow."""
        labeled = torch.cat(self.labeled).numpy()
        return Outcomes(
            images=len(labeled),
            ids=image_ids,
            correct=[pack_bits(torch.cat(c).numpy()) for c in self.correct],
            agree=[pack_bits(torch.cat(a).numpy()) for a in self.agree],
            labeled=None if labeled.all() else pack_bits(labeled),
        )
