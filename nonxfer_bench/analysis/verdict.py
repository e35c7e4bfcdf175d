"""The protocol verdict: per release, the protection gap at each knowledge tier, without a winner's curse.

A release's *gap at tier T* is the authorized model's accuracy on the release (no attack) minus the best accuracy any
unauthorized model reaches under any attack step of tier T or below (no attack included): the worst case an attacker
who knows that much can bring about. Tiers accumulate in :data:`~nonxfer_bench.schema.protocol.VERDICT_TIERS` order
(none < method < architecture < public weights < labelled NEs); white box is reported beside them, never as the
headline. The *clean gap* is the same number on the clean images with no attack: the authorized model's plain lead,
which is not protection.

Choosing the best of many attack steps and models on the images it is then reported on would inflate it (the winner's
curse). So the evaluated images are split once (:class:`~nonxfer_bench.schema.protocol.VerdictSpec`: a seeded
``tuning`` share): each tier's (step, model) is chosen on the tuning images and its accuracy and the gap are reported on
the others, the gap with a paired interval over those images (Newcombe's for one model, seed and draw; else a paired
bootstrap). A release is *broken* at a tier when that accuracy reaches ``break_fraction`` of the unauthorized models'
clean accuracy (the adversary ladder's target). Controls are never unauthorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP, metric_of, unauthorized_models
from nonxfer_bench.analysis.uncertainty import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    per_image,
    proportion_interval,
)
from nonxfer_bench.cells.release import Release
from nonxfer_bench.cells.step import Step
from nonxfer_bench.metrics.statistics import Interval, paired_gain
from nonxfer_bench.schema.protocol import VERDICT_TIERS, WHITE_BOX, VerdictSpec


@dataclass(frozen=True)
class TierVerdict:
    """The strongest (attack step, unauthorized model) of a tier and below, chosen on the tuning images, and what it
    reaches on the report images."""

    tier: str
    step: Step
    model: str
    best: Interval  # the model's accuracy under the step
    gap: Interval  # authorized (no attack) minus best, paired over the report images
    broken: bool
    seed_sd: float  # the between-seed (NE key) standard deviation of the gap; NaN with one seed


@dataclass(frozen=True)
class ReleaseVerdict:
    release: Release
    n: int  # report images (labeled, for accuracy)
    tuning: int  # tuning images
    auth: Interval  # the authorized model on the release, no attack
    tiers: tuple[TierVerdict, ...]  # the verdict tiers the cells ran, in order (cumulative)
    white_box: TierVerdict | None  # the white-box tier and below, beside the verdict
    missing: tuple[str, ...]  # verdict tiers with no attack step here
    clean_gap: Interval | None  # the authorized model's lead on the clean images (no attack)
    target: float | None  # the break target: break_fraction of the unauthorized models' clean accuracy
    seeds: int  # NE keys (the per-image outcomes are their mean)
    stop: str = "broken"  # the protocol's stop rule (VerdictSpec.stop): after which tier a run attacks it no further

    @property
    def headline(self) -> TierVerdict | None:
        """The highest verdict tier run: the worst case over every attack the release faced (white box aside)."""
        return self.tiers[-1] if self.tiers else None

    @property
    def broken_at(self) -> str | None:
        """The lowest tier at which the release is broken (None: it held wherever it was attacked)."""
        return next((tier.tier for tier in self.tiers if tier.broken), None)

    @property
    def unheld_at(self) -> str | None:
        """The lowest tier the release does not hold: broken there, or its gap not above 0 beyond its interval."""
        return next((tier.tier for tier in self.tiers if tier.broken or tier.gap.lo <= 0), None)

    @property
    def settled_at(self) -> str | None:
        """The tier after which a protocol run attacks the release no further, by its ``stop`` rule: the first that
        breaks it, or (``unheld``) the first it does not hold, since an attacker who knows more can only lower the gap
        (up to the noise of choosing each tier's attack on the tuning images).
        None: it held wherever it was attacked."""
        return self.broken_at if self.stop == "broken" else self.unheld_at

    @property
    def unknown(self) -> tuple[str, ...]:
        """The missing tiers the verdict depends on: those below the tier that settles it (a release broken at a tier
        stays broken whatever a higher tier's attacks do), or every missing tier when nothing settled it."""
        settled = self.settled_at
        return (
            self.missing
            if settled is None
            else tuple(t for t in self.missing if VERDICT_TIERS.index(t) < VERDICT_TIERS.index(settled))
        )


class _Images:
    """Per-image outcomes of one release's cells (mean over draws) per seed, split into tuning and report images."""

    def __init__(self, cells: pd.DataFrame, metric: str, spec: VerdictSpec) -> None:
        self.per_seed: dict[tuple[Step, str], dict[int, np.ndarray]] = {}
        ids = set()
        for (step, model), part in cells.groupby([STEP, "model"], sort=True):
            found = {seed: per_image(outcomes, metric) for seed, outcomes in zip(part.seed, part.outcomes)}
            ids |= {key for key, _ in found.values()}
            self.per_seed[step, model] = {seed: flags for seed, (_, flags) in found.items()}
        if len(ids) > 1:
            raise ValueError("the release's cells were evaluated on different images")
        self.rows = {pair: np.mean(list(seeds.values()), axis=0) for pair, seeds in self.per_seed.items()}
        count = len(next(iter(self.rows.values())))
        self.tuning, self.report = spec.split(count)

    def flags(self, step: Step, model: str) -> np.ndarray:
        """Per-image ``metric``, mean over seeds and draws."""
        return self.rows[step, model]

    def seed_sd(self, authorized: tuple[Step, str], best: tuple[Step, str]) -> float:
        """The between-seed standard deviation of the gap on the report images (NaN with fewer than two seeds)."""
        seeds = sorted(set(self.per_seed[authorized]) & set(self.per_seed[best]))
        gaps = [
            float(self.per_seed[authorized][s][self.report].mean() - self.per_seed[best][s][self.report].mean())
            for s in seeds
        ]
        return float(np.std(gaps, ddof=1)) if len(gaps) > 1 else float("nan")


def _interval(flags: np.ndarray) -> Interval:
    """Wilson's interval at the mean over images (conservative for fractions from seeds or draws)."""
    return proportion_interval(float(flags.mean()), len(flags))


def _gap(authorized: np.ndarray, best: np.ndarray) -> Interval:
    gain = paired_gain(best[None], authorized[None], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE)
    return Interval(gain.estimate, gain.lo, gain.hi)


def _strongest(images: _Images, candidates: list[tuple[Step, str]]) -> tuple[Step, str]:
    """The (step, model) with the highest accuracy on the tuning images; ties go to no attack, then sort order."""
    return min(candidates, key=lambda pair: (-images.flags(*pair)[images.tuning].mean(), not pair[0].baseline, pair))


def _tier(
    images: _Images, tier: str, candidates: list[tuple[Step, str]], authorized: tuple[Step, str], target: float | None
) -> TierVerdict:
    step, model = _strongest(images, candidates)
    best, auth = images.flags(step, model)[images.report], images.flags(*authorized)[images.report]
    broken = target is not None and float(best.mean()) >= target
    return TierVerdict(
        tier, step, model, _interval(best), _gap(auth, best), broken, images.seed_sd(authorized, (step, model))
    )


def _tier_of(step: Step) -> str | None:
    """A step's knowledge tier: no attack is ``none`` whatever its cells recorded; None for cells of stores written
    before tiers were recorded (such a step belongs to no tier of the verdict)."""
    return "none" if step.baseline else step.tier


def release_verdict(
    release: Release, cells: pd.DataFrame, clean: pd.DataFrame | None, spec: VerdictSpec, metric: str
) -> ReleaseVerdict | None:
    """One release's verdict from its cells (and the clean images' cells of the same authorized model, for the clean
    gap and the break target); None without the authorized model's no-attack cell or an unauthorized model."""
    cells = cells[cells.outcomes.map(lambda outcomes: isinstance(outcomes, dict)) & ~cells.measures_only].dropna(
        subset=[metric]
    )
    models = unauthorized_models(cells)
    plain = cells[cells.baseline & (cells.model == release.authorized)]
    if plain.empty or not models:
        return None
    images = _Images(cells[cells.model.isin([release.authorized, *models])], metric, spec)
    authorized = (plain[STEP].iloc[0], release.authorized)
    clean_gap, target = _clean(clean, release, metric, spec)
    steps = sorted(set(cells[STEP]))
    tiers, missing = [], []
    for index, tier in enumerate(VERDICT_TIERS):
        allowed = set(VERDICT_TIERS[: index + 1])
        candidates = [
            (step, model)
            for step in steps
            if _tier_of(step) in allowed
            for model in models
            if (step, model) in images.rows
        ]
        if not any(_tier_of(step) == tier for step, _ in candidates):
            missing.append(tier)
            continue
        tiers.append(_tier(images, tier, candidates, authorized, target))
    white = [(step, model) for step in steps for model in models if (step, model) in images.rows]
    white_box = (
        _tier(images, WHITE_BOX, white, authorized, target) if any(step.tier == WHITE_BOX for step in steps) else None
    )
    auth = _interval(images.flags(*authorized)[images.report])
    return ReleaseVerdict(
        release,
        len(images.report),
        len(images.tuning),
        auth,
        tuple(tiers),
        white_box,
        tuple(missing),
        clean_gap,
        target,
        int(cells.seed.nunique()),
        spec.stop,
    )


def _clean(
    clean: pd.DataFrame | None, release: Release, metric: str, spec: VerdictSpec
) -> tuple[Interval | None, float | None]:
    """On the clean images with no attack: the authorized model's lead over the best unauthorized model (chosen on the
    tuning images), and the break target (``break_fraction`` of the unauthorized models' mean clean accuracy)."""
    if clean is None:
        return None, None
    plain = clean[clean.baseline & clean.outcomes.map(lambda outcomes: isinstance(outcomes, dict))].dropna(
        subset=[metric]
    )
    models = unauthorized_models(plain)
    if not models or release.authorized not in set(plain.model):
        return None, None
    images = _Images(plain, metric, spec)
    step = plain[STEP].iloc[0]
    best = images.flags(*_strongest(images, [(step, model) for model in models]))[images.report]
    authorized = images.flags(step, release.authorized)[images.report]
    target = spec.break_fraction * float(np.mean([images.flags(step, model)[images.report].mean() for model in models]))
    return _gap(authorized, best), target


def survived(verdict: ReleaseVerdict) -> int:
    """How many verdict tiers the release held, counted from the lowest: a tier holds where it is not broken and its gap
    is above 0 beyond its interval. A release whose own model does no better than an unauthorized one holds nothing,
    however far up the tiers it went unbroken."""
    unheld = verdict.unheld_at
    return len(verdict.tiers) if unheld is None else [tier.tier for tier in verdict.tiers].index(unheld)


def verdicts(frame: pd.DataFrame, spec: VerdictSpec = VerdictSpec()) -> list[ReleaseVerdict]:
    """Every release's verdict (``clean`` is not a release), ranked as AutoAttack ranks defences by what breaks them:
    the
    most tiers held first (:func:`survived`; a release broken with no attack holds none, whatever its gap), then the
    best headline gap. Releases whose cells keep no per-image outcomes (stores written before they were recorded) are
    left out."""
    metric = metric_of(frame)
    clean = {key: part for key, part in frame[frame.encoder == "clean"].groupby(RELEASE, sort=True)}
    out = []
    for release, cells in frame[frame.encoder != "clean"].groupby(RELEASE, sort=True):
        reference = next(
            (
                part
                for key, part in clean.items()
                if (key.authorized, key.precision) == (release.authorized, release.precision)
            ),
            None,
        )
        found = release_verdict(release, cells, reference, spec, metric)
        if found is not None:
            out.append(found)
    return sorted(out, key=lambda v: (-survived(v), -(v.headline.gap.estimate if v.headline else -np.inf), v.release))


def tied(ranked: list[ReleaseVerdict]) -> list[list[int]]:
    """For each ranked release, the ranks (1-based) of the other releases that held as many tiers and whose headline gap
    intervals overlap its own."""
    gaps = [(survived(v), v.headline.gap) if v.headline else None for v in ranked]
    return [
        [
            j + 1
            for j, other in enumerate(gaps)
            if j != i
            and mine
            and other
            and mine[0] == other[0]
            and mine[1].lo <= other[1].hi
            and other[1].lo <= mine[1].hi
        ]
        for i, mine in enumerate(gaps)
    ]
