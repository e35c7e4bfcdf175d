"""Classification outcomes of a cell: running counts over batches and attack draws, and their summary."""

from __future__ import annotations

import statistics
from typing import Any

import torch


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
    """Running sums for one (attack step, model) cell over the batches of a group, kept per attack draw.

    Accuracy counts only labeled images (label >= 0; unlabeled sets use -1) and is None when there are
    none; agreement with the model's clean prediction counts every image. A stochastic attack with K
    draws gives K values per metric; the cell reports their mean, and for K > 1 the worst case for the
    data owner and the spread (:func:`nonxfer_bench.metrics.aggregate_draws`).
    """

    def __init__(self, draws: int = 1) -> None:
        self.n = 0
        self.labeled = 0
        self.correct = [0] * draws
        self.agree = [0] * draws
        self.correct_flat = 0
        self.flat = False

    def add(self, draw: int, predictions: torch.Tensor, labels: torch.Tensor, clean_predictions: torch.Tensor) -> None:
        if draw == 0:
            self.n += len(predictions)
            self.labeled += int((labels >= 0).sum())
        self.correct[draw] += int((predictions == labels).sum())
        self.agree[draw] += int((predictions == clean_predictions).sum())

    def metrics(self, role: str) -> dict[str, Any]:
        accuracies = [c / self.labeled for c in self.correct] if self.labeled else None
        out: dict[str, Any] = {"n": self.n}
        out |= aggregate_draws("accuracy", accuracies, role)
        out |= aggregate_draws("agreement", [a / self.n for a in self.agree], role)
        if self.labeled != self.n:
            out["n_labeled"] = self.labeled
        if self.flat:
            out["accuracy_flat"] = self.correct_flat / self.labeled if self.labeled else None
        return out
