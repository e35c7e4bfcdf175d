"""The adversary ladder's sections of a leaderboard (:mod:`nonxfer_bench.analysis.ladder`): the ladder, the
cheapest break and the identification of the authorized model."""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.ladder import (
    BREAK_FRACTION,
    cheapest_breaks,
    clean_accuracy,
    identifications,
    ladder,
    step_accuracies,
)
from nonxfer_bench.analysis.uncertainty import proportion_interval
from nonxfer_bench.cells.release import Release
from nonxfer_bench.rendering.sections import Section
from nonxfer_bench.rendering.text import markdown_table, with_interval

NOT_BROKEN = "not broken"


def _label(release: Release) -> str:
    return release.label if release.precision == "fp32" else f"{release.label} ({release.precision})"


def _with_interval(row: pd.Series) -> str:
    """A step's mean unauthorized accuracy with Wilson's interval on its n images (conservative for a mean over
    models)."""
    return with_interval(proportion_interval(row.accuracy, int(row.n)))


def _step(row: pd.Series) -> str:
    step = row.step
    if step.baseline:
        return "no attack"
    return f"{step.attack}@{step.strength:g}" + (f" ({row.variant})" if row.variant else "")


def ladder_tables(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ladder: release x tier rows; cheapest break: one row per release), formatted."""
    steps = step_accuracies(frame)
    if steps.empty:
        return pd.DataFrame(), pd.DataFrame()
    rungs = [
        {
            "authorized": rung["release"].authorized, "encoding": _label(rung["release"]), "tier": rung["tier"],
            "unauth acc by NEs used": ", ".join(f"{n}: {100 * a:.1f}" for n, a in rung["curve"].items()),
            "best [95% CI]": _with_interval(rung["best"]), "best attack": _step(rung["best"]),
        }
        for rung in ladder(steps)
    ]  # fmt: skip
    breaks = []
    for found in cheapest_breaks(steps, clean_accuracy(frame)):
        release, target, row = found["release"], found["target"], found["cheapest"]
        breaks.append(
            {
                "authorized": release.authorized,
                "encoding": _label(release),
                "target": "" if pd.isna(target) else f"{100 * target:.1f}",
                "cheapest break": NOT_BROKEN if row is None else _step(row),
                "tier": "" if row is None else row.tier,
                "NEs used": "" if row is None else int(row.nes),
                "public": "" if row is None else int(row.public),
                "unauth acc [95% CI]": "" if row is None else _with_interval(row),
            }
        )
    return pd.DataFrame(rungs), pd.DataFrame(breaks)


def identification_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per encoding and released NEs observed: how often ``identify`` ranks the authorized model first, with Wilson's
    interval over the trials and the rate guessing would reach (one over the candidates of the release's input
    size, averaged over the trials: a model alone at its size is found by its size)."""
    rows = []
    for found in identifications(frame):
        hits, trials, candidates = found["hits"], found["trials"], found["candidates"]
        rows.append(
            {
                "encoding": found["encoding"].label,
                "released NEs": found["nes"],
                "identified": f"{hits}/{trials}",
                "% [95% CI]": with_interval(proportion_interval(hits / trials, trials)),
                "chance %": "n/a"
                if candidates.isna().all()
                else f"{100 * candidates.rdiv(1.0).mean():.1f}",  # no ranking recorded
            }
        )
    return pd.DataFrame(rows)


def ladder_sections(frame: pd.DataFrame) -> list[Section]:
    """The ladder, cheapest-break and identification sections (none without tiered cells)."""
    rungs, breaks = ladder_tables(frame)
    if rungs.empty:
        return []
    sections = [
        Section(
            "Adversary ladder",
            markdown_table(rungs),
            intro="Mean unauthorized accuracy (%) per knowledge tier (none < method < architecture < public "
            "weights < white box; labelled NEs), best over the tier's attack steps at each budget: NEs used = "
            "released NEs observed + labelled NEs trained on.",
        ),
        Section(
            "Cheapest break",
            markdown_table(breaks),
            intro="The cheapest attack step (lowest tier, then fewest NEs, public images; ties by attack name "
            f"and strength) whose mean unauthorized accuracy reaches {BREAK_FRACTION:.0%} of the unauthorized models' "
            f"clean accuracy (`target`); `{NOT_BROKEN}`: no step of the suite does.",
        ),
    ]
    identified = identification_table(frame)
    if not identified.empty:
        sections.append(
            Section(
                "Identification",
                markdown_table(identified),
                intro="How often `identify` ranks the authorized model first among the public candidates of the "
                "release's input size, with Wilson's 95% interval over the trials (one per release and budget; "
                "releases of one authorized model are not independent trials of models in general), against guessing "
                "(`chance %`).",
            )
        )
    return sections
