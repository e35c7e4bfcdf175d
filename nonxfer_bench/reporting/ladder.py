"""The adversary ladder: how much an unauthorized party must know, see and spend to recover its accuracy.

From cells that record their attack's threat model (``tier`` and budget, see
:mod:`nonxfer_bench.attacks.threat`), per encoding (authorized model, encoder, strength, storage):

- *Adversary ladder*: one row per knowledge tier; the best mean unauthorized accuracy the tier reaches at
  each budget (NEs used = released NEs observed + labelled NEs trained on), and the best overall with its
  95% interval (Wilson on the n evaluated images, as :mod:`nonxfer_bench.reporting.uncertainty` does).
- *Cheapest break*: the cheapest attack step whose mean unauthorized accuracy reaches 90% of the
  unauthorized models' clean accuracy, ordered by tier, then NEs used, public images, then attack name and strength (not wall seconds, which vary
  with the machine and the cache).
- *Identification*: for ``identify`` cells, how often the top-ranked candidate is the authorized model,
  per number of released NEs observed.

Controls are never counted as unauthorized. Cells without a tier (stores written before tiers were
recorded) are left out; with none, there is no ladder.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.core.cell import Cell, Role, step_texts
from nonxfer_bench.reporting.uncertainty import proportion_interval, with_interval

TIERS = ["none", "method", "architecture", "public_weights", "white_box", "labelled_nes"]  # attacks.threat.Tier, in order
BREAK_FRACTION = 0.9
ENCODING = ["authorized", "encoder", "strength", "storage", "precision"]
STEP = ["attack", "attack_strength", "param", "variant", "baseline", "tier", "nes", "budget_public"]  # param, variant: two steps of one attack differ
NOT_BROKEN = "not broken"
STEP_PARAMS = ("scope",)  # attack_param entries that name a variant rather than report a measurement


def _frame(cells: list[Cell]) -> pd.DataFrame:
    rows = [
        {
            "authorized": c.authorized, "encoder": c.encoder, "strength": c.strength, "storage": c.storage, "precision": c.precision, "attack": c.attack,
            "attack_strength": c.attack_strength, "param": _param(c), "tier": c.tier, "nes": (c.budget_released or 0) + (c.budget_labelled or 0),
            "budget_public": c.budget_public or 0, "accuracy": c.accuracy,
            "baseline": c.baseline, "chosen": c.attack_param.get("chosen"), "group": c.group, "variant": variant,
            "candidates": len(str(c.attack_param["ranking"]).split(">")) if "ranking" in c.attack_param else float("nan"),
            "n": c.n_labeled if c.n_labeled is not None else c.n,
        }
        for c, variant in zip(cells, step_texts(cells))  # the leaderboard's step identity: its steps, not fewer
        if c.role == Role.UNAUTHORIZED and c.tier is not None and c.accuracy is not None
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _param(cell: Cell) -> str:
    """The attack's own parameters that tell two steps of one attack apart (e.g. finetune's scope), as text."""
    shown = {k: v for k, v in cell.attack_param.items() if k in STEP_PARAMS}
    return " ".join(f"{k}={v}" for k, v in sorted(shown.items()))


def _label(encoder: str, strength: float, storage: str, precision: str = "fp32") -> str:
    name = encoder if storage == "float32" else f"{encoder}/{storage}"
    name = name if encoder == "clean" else f"{name} {strength:g}"
    return name if precision == "fp32" else f"{name} ({precision})"


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)])


def ladder_tables(cells: list[Cell]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ladder: encoding x tier rows; cheapest break: one row per encoding) from typed cells."""
    frame = _frame([c for c in cells if c.attack != "identify"])  # identification changes nothing: not a rung
    if frame.empty:
        return pd.DataFrame(), pd.DataFrame()
    steps = frame.groupby(ENCODING + STEP, dropna=False).agg(accuracy=("accuracy", "mean"), n=("n", "min")).reset_index()
    clean_acc = frame[(frame.encoder == "clean") & frame.baseline].groupby(["authorized", "precision"])["accuracy"].mean()
    ladder, breaks = [], []
    for (authorized, encoder, strength, storage, precision), rows in steps[steps.encoder != "clean"].groupby(ENCODING, sort=True):
        label = _label(encoder, strength, storage, precision)
        for tier in [t for t in TIERS if t in set(rows.tier)]:
            tiered = rows[rows.tier == tier]
            curve = tiered.groupby("nes")["accuracy"].max()
            ladder.append(
                {
                    "authorized": authorized, "encoding": label, "tier": tier,
                    "unauth acc by NEs used": ", ".join(f"{n}: {100 * a:.1f}" for n, a in curve.items()),
                    "best [95% CI]": _with_interval(tiered.loc[tiered.accuracy.idxmax()]),
                    "best attack": _step(tiered.loc[tiered.accuracy.idxmax()]),
                }
            )  # fmt: skip
        target = BREAK_FRACTION * clean_acc.get((authorized, precision), float("nan"))
        broken = rows[rows.accuracy >= target].assign(order=lambda r: r.tier.map(TIERS.index))
        cheapest = broken.sort_values(["order", "nes", "budget_public", "attack", "attack_strength", "param"], kind="stable").head(
            1
        )  # no wall seconds: a table must not depend on the machine or the cache
        row = cheapest.iloc[0] if len(cheapest) else None
        breaks.append(
            {
                "authorized": authorized, "encoding": label, "target": "" if pd.isna(target) else f"{100 * target:.1f}",
                "cheapest break": NOT_BROKEN if row is None else _step(row),
                "tier": "" if row is None else row.tier, "NEs used": "" if row is None else int(row.nes),
                "public": "" if row is None else int(row.budget_public),
                "unauth acc [95% CI]": "" if row is None else _with_interval(row),
            }
        )  # fmt: skip
    return pd.DataFrame(ladder), pd.DataFrame(breaks)


def _with_interval(row: pd.Series) -> str:
    """A step's mean unauthorized accuracy with Wilson's interval on its n images (conservative for a mean over models)."""
    return with_interval(proportion_interval(row.accuracy, int(row.n)))


def _step(row: pd.Series) -> str:
    if row.baseline:
        return "no attack"
    return f"{row.attack}@{row.attack_strength:g}" + (f" ({row.param})" if row.param else "")


def identification_table(cells: list[Cell]) -> pd.DataFrame:
    """Per encoder and strength, and released NEs observed: how often ``identify`` ranks the authorized model first,
    with Wilson's interval over the trials (one per release and budget) and the rate guessing would reach (one over
    the candidates of the release's input size, averaged over the trials: a model alone at its size is found by
    its size)."""
    frame = _frame([c for c in cells if c.attack == "identify" and c.encoder != "clean"])  # a clean release has no owner
    if frame.empty:
        return pd.DataFrame()
    groups = frame.drop_duplicates(["group", "nes", "attack_strength"])
    rows = []
    for (encoder, strength, storage, nes), part in groups.groupby(["encoder", "strength", "storage", "nes"], sort=True):
        hits, trials = int((part.chosen == part.authorized).sum()), len(part)
        rows.append(
            {
                "encoding": _label(encoder, strength, storage),
                "released NEs": int(nes),
                "identified": f"{hits}/{trials}",
                "% [95% CI]": with_interval(proportion_interval(hits / trials, trials)),
                "chance %": "n/a" if part.candidates.isna().all() else f"{100 * part.candidates.rdiv(1.0).mean():.1f}",  # no ranking recorded
            }
        )
    return pd.DataFrame(rows)


def ladder_markdown(cells: list[Cell]) -> list[str]:
    """The ladder, cheapest-break and identification sections of ``leaderboard.md`` (no lines without tiers)."""
    ladder, breaks = ladder_tables(cells)
    if ladder.empty:
        return []
    text = [
        "## Adversary ladder",
        "",
        "Mean unauthorized accuracy (%) per knowledge tier (none < method < architecture < public weights < white box; "
        "labelled NEs), best over the tier's attack steps at each budget: NEs used = released NEs observed + labelled NEs "
        "trained on.",
        "",
        _markdown(ladder),
        "",
        "## Cheapest break",
        "",
        f"The cheapest attack step (lowest tier, then fewest NEs, public images; ties by attack name and strength) whose mean unauthorized accuracy "
        f"reaches {BREAK_FRACTION:.0%} of the unauthorized models' clean accuracy (`target`); `{NOT_BROKEN}`: no step of the suite does.",
        "",
        _markdown(breaks),
        "",
    ]
    identified = identification_table(cells)
    if not identified.empty:
        text += ["## Identification", "", "How often `identify` ranks the authorized model first among the public candidates of the "
                 "release's input size, with Wilson's 95% interval over the trials (one per release and budget; releases of one "
                 "authorized model are not independent trials of models in general), against guessing (`chance %`).", "",
                 _markdown(identified), ""]
    return text
