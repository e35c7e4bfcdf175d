"""Sanity checks of an evaluation, in the spirit of AutoAttack's ``checks.py``: signs that an attack was run too weakly
or not at all, which would make a verdict look stronger than it is. Each check returns findings, never raises.

1. *A higher tier weaker than a lower one*: on a release, the best accuracy an unauthorized model reaches under the
   attacks of a tier (its own, not accumulated) lies below, with no overlap of the 95% intervals, what a lower tier's
   attacks reach: an attacker who knows more should do at least as well, so that tier's attacks are too weak.
2. *A budget sweep that is not monotone*: steps of one attack with the same settings but for their budget (released,
   labelled or public images), where a larger budget does worse than a smaller one beyond the intervals.
3. *White box weaker than a weight-free attack*: the white-box tier's best lies below the best of the tiers that hold
   no weights (none, method, architecture).
4. *An attack that changes nothing*: every cell of an attack, at every strength and release, has the per-image outcomes
   of no attack for the same model, images and key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP, metric_of, unauthorized_models
from nonxfer_bench.analysis.uncertainty import metric_n, proportion_interval
from nonxfer_bench.metrics.statistics import Interval
from nonxfer_bench.schema.protocol import VERDICT_TIERS, WHITE_BOX

WEIGHT_FREE = ("none", "method", "architecture")
BUDGETS = ("released", "labelled", "public")


@dataclass(frozen=True)
class Finding:
    check: str  # which check fired: "tier order", "budget sweep", "white box", "no effect"
    text: str


def _best(part: pd.DataFrame, metric: str) -> tuple[Interval, str] | None:
    """The highest mean accuracy of one unauthorized model under one step of ``part``, with Wilson's interval, and
    what reached it (``step label (model)``)."""
    values = part[part.model.isin(unauthorized_models(part))].groupby([STEP, "model"])[metric].mean().dropna()
    if values.empty:
        return None
    (step, model), value = max(values.items(), key=lambda item: item[1])
    n = metric_n(part[(part[STEP] == step) & (part.model == model)], metric)
    return proportion_interval(float(value), n), f"{step.label} ({model})"


def _below(weak: Interval, strong: Interval) -> bool:
    return weak.hi < strong.lo


def tier_order(frame: pd.DataFrame, metric: str) -> list[Finding]:
    findings = []
    for release, part in frame[frame.encoder != "clean"].groupby(RELEASE, sort=True):
        part = part[~part.measures_only]
        tiered = {
            tier: _best(part[part[STEP].map(lambda s, t=tier: s.tier == t and not s.baseline)], metric)
            for tier in VERDICT_TIERS
        }
        for high_index, high in enumerate(VERDICT_TIERS):
            for low in VERDICT_TIERS[:high_index]:
                if tiered[high] and tiered[low] and _below(tiered[high][0], tiered[low][0]):
                    findings.append(Finding("tier order", (
                        f"{release.authorized} {release.label}: the {high} tier's best, {tiered[high][1]}, reaches "
                        f"{100 * tiered[high][0].estimate:.1f} %, below the {low} tier's {tiered[low][1]}, "
                        f"{100 * tiered[low][0].estimate:.1f} %: its attacks are too weak (budgets, epochs?)"
                    )))  # fmt: skip
                    break
    return findings


def budget_sweeps(frame: pd.DataFrame, metric: str) -> list[Finding]:
    findings = []
    attacked = frame[~frame.baseline & frame.model.isin(unauthorized_models(frame))]
    for (release, attack, strength, settings), part in attacked.groupby(
        [
            RELEASE,
            attacked[STEP].map(lambda s: s.attack),
            "attack_strength",
            attacked[STEP].map(lambda s: " ".join(f"{k}={v}" for k, v in s.settings if k not in BUDGETS)),
        ],
        sort=True,
    ):
        sweep = part.groupby(STEP)[metric].mean().dropna()
        if len(sweep) < 2:
            continue
        points = sorted(
            ((tuple(dict(step.settings).get(k, 0) for k in BUDGETS), step, value) for step, value in sweep.items()),
            key=lambda p: p[0],
        )
        for (small, _, low), (large, step, high) in zip(points, points[1:]):
            n = metric_n(part[part[STEP] == step], metric)
            if all(a <= b for a, b in zip(small, large)) and _below(
                proportion_interval(high, n), proportion_interval(low, n)
            ):
                findings.append(Finding("budget sweep", (
                    f"{release.authorized} {release.label}: {attack} {strength:g} with the larger budget {step.text} "
                    f"reaches {100 * high:.1f} % (mean over unauthorized models), below {100 * low:.1f} % with less: "
                    "the sweep is not monotone"
                )))  # fmt: skip
    return findings


def white_box(frame: pd.DataFrame, metric: str) -> list[Finding]:
    findings = []
    for release, part in frame[(frame.encoder != "clean") & ~frame.measures_only].groupby(RELEASE, sort=True):
        white = _best(part[part[STEP].map(lambda s: s.tier == WHITE_BOX)], metric)
        free = _best(part[part[STEP].map(lambda s: s.tier in WEIGHT_FREE and not s.baseline)], metric)
        if white and free and _below(white[0], free[0]):
            findings.append(Finding("white box", (
                f"{release.authorized} {release.label}: the white box's best, {white[1]}, reaches "
                f"{100 * white[0].estimate:.1f} %, below {free[1]} without any weights, {100 * free[0].estimate:.1f} "
                "%: the white-box attack is too weak to bound the others"
            )))  # fmt: skip
    return findings


def no_effect(frame: pd.DataFrame) -> list[Finding]:
    """Attacks whose every cell repeats no attack's per-image outcomes (correct and agree bits)."""
    outcome = frame.outcomes.map(lambda o: (tuple(o["correct"]), tuple(o["agree"])) if isinstance(o, dict) else None)
    baseline = {
        (g, m): o for g, m, o, b in zip(frame.group, frame.model, outcome, frame.baseline) if b and o is not None
    }
    same: dict[str, bool] = {}
    for attack, group, model, o, b, measuring in zip(
        frame[STEP].map(lambda s: s.attack), frame.group, frame.model, outcome, frame.baseline, frame.measures_only
    ):
        if b or measuring or o is None or (group, model) not in baseline:
            continue
        same[attack] = same.get(attack, True) and o == baseline[group, model]
    return [
        Finding(
            "no effect",
            f"{attack}: every cell, at every strength, has no attack's per-image outcomes: it changes nothing here",
        )
        for attack, unchanged in sorted(same.items())
        if unchanged
    ]


def sanity_findings(frame: pd.DataFrame) -> list[Finding]:
    """Every check's findings, in the order of the module docstring."""
    metric = metric_of(frame)
    return tier_order(frame, metric) + budget_sweeps(frame, metric) + white_box(frame, metric) + no_effect(frame)
