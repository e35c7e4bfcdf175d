"""The leaderboard's ranking: the protocol verdict per release (:mod:`nonxfer_bench.analysis.verdict`) and the sanity
checks of the evaluation (:mod:`nonxfer_bench.analysis.sanity`).

The ranking's first line says what the verdict rests on: the protocol and ensemble the suite ran, or, when a suite
ran no protocol or its cells lack attacks of a tier, "not a protocol verdict" and the tiers no attack of which ran. A
release is never shown as protected without the tiers it was attacked at: each tier is a column, "not run" where no
attack of it ran.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import metric_of
from nonxfer_bench.analysis.ranking import visibility
from nonxfer_bench.analysis.sanity import sanity_findings
from nonxfer_bench.analysis.verdict import ReleaseVerdict, TierVerdict, tied, verdicts
from nonxfer_bench.rendering.sections import Section
from nonxfer_bench.rendering.text import db, gap_text, markdown_table, with_interval
from nonxfer_bench.schema.protocol import VERDICT_TIERS, Protocol, VerdictSpec

TIER_NAMES = {
    "none": "none",
    "method": "method",
    "architecture": "architecture",
    "public_weights": "public weights",
    "labelled_nes": "labelled NEs",
}
NOT_RUN = "not run"
NOT_NEEDED_BROKEN = (
    "`not needed`: a lower tier already broke the release (as AutoAttack stops at a broken point, a protocol run "
    "attacks it no further)."
)
NOT_NEEDED_UNHELD = (
    "`not needed`: a lower tier already settled the release, so a protocol run attacks it no further: it broke the "
    "release (as AutoAttack stops at a broken point), or the release did not hold there (`not held`: no gap above 0 "
    "beyond its interval, which an attacker who knows more can only lower, up to the noise of choosing each tier's "
    "attack on the tuning images). Each release is scored with no attack before any attack runs."
)


def settled_text(verdict: ReleaseVerdict) -> str | None:
    """Why a protocol run attacked the release no further, ``broken at <tier>`` or (a protocol that stops at
    ``unheld``) ``not held at <tier>``; None where nothing settled it."""
    tier = verdict.settled_at
    if tier is None:
        return None
    return f"{'broken' if tier == verdict.broken_at else 'not held'} at {TIER_NAMES[tier]}"


def _tier_cell(found: TierVerdict | None, settled: str | None = None) -> str:
    if found is None:
        return f"not needed: {settled}" if settled else NOT_RUN
    return gap_text(found.gap.estimate, found.gap) + (" broken" if found.broken else "")


def _below(verdict: ReleaseVerdict, tier: str) -> str | None:
    """Why ``tier``'s attacks were not needed (:func:`settled_text`) where a lower tier settled the release, else
    None."""
    settled = verdict.settled_at
    below = settled is not None and VERDICT_TIERS.index(settled) < VERDICT_TIERS.index(tier)
    return settled_text(verdict) if below else None


def headline_text(verdict: ReleaseVerdict) -> str:
    """``broken at <tier>: <step> (<model>)``; ``holds through <tier>`` (the highest tier that ran) only where the gap
    there is positive beyond its interval; else ``no protection shown through <tier>``: no unauthorized model recovers,
    but the authorized model does no better than they do (a release that ruins its own model protects nothing)."""
    broken = next((tier for tier in verdict.tiers if tier.broken), None)
    if broken is not None:
        return f"broken at {TIER_NAMES[broken.tier]}: {broken.step.label} ({broken.model})"
    if verdict.headline is None:
        return "no attack ran"
    held = "holds" if verdict.headline.gap.lo > 0 else "no protection shown"
    return f"{held} through {TIER_NAMES[verdict.headline.tier]}" + (
        f" ({len(verdict.unknown)} tier(s) not run)" if verdict.unknown else ""
    )


def verdict_table(found: list[ReleaseVerdict], frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    precisions, short = frame.precision.nunique() > 1, "acc" if metric == "accuracy" else "agree"
    devices = frame.device.nunique() > 1 or (frame.device.isna().any() and frame.device.notna().any())
    ties = tied(found)
    rows = []
    for rank, (verdict, others) in enumerate(zip(found, ties), 1):
        by_tier = {tier.tier: tier for tier in verdict.tiers}
        release = verdict.release
        psnr, ssim = visibility(frame[frame.release == release])
        headline = verdict.headline
        rows.append(
            {"rank": rank, "authorized": release.authorized, "encoding": release.label}
            | ({"precision": release.precision} if precisions else {})
            | {"verdict": headline_text(verdict)}
            | {
                f"gap: {TIER_NAMES[tier]}": _tier_cell(by_tier.get(tier), _below(verdict, tier))
                for tier in VERDICT_TIERS
            }
            | {
                "white box (not ranked)": _tier_cell(verdict.white_box, settled_text(verdict)),
                "clean gap": ""
                if verdict.clean_gap is None
                else gap_text(verdict.clean_gap.estimate, verdict.clean_gap),
                f"auth {short}": with_interval(verdict.auth),
                f"best unauth {short}": "" if headline is None else with_interval(headline.best),
                "by attack": "" if headline is None else f"{headline.step.label} ({headline.model})",
                "n": f"{verdict.n} (+{verdict.tuning} tuning)",
                "PSNR dB": db(psnr),
                "SSIM": "" if ssim is None else f"{ssim:.3f}",
                "tied with": ", ".join(map(str, others)),
            }
            | (
                {
                    "seeds": str(verdict.seeds),
                    "gap seed sd": ""
                    if headline is None or pd.isna(headline.seed_sd)
                    else f"{100 * headline.seed_sd:.1f}",
                }
                if verdict.seeds > 1
                else {}
            )
            | (
                {
                    "device": ", ".join(
                        sorted(str(d) for d in frame[frame.release == release].device.dropna().unique())
                    )
                    or "not recorded"
                }
                if devices
                else {}
            )
        )
    return pd.DataFrame(rows)


def _first_line(found: list[ReleaseVerdict], protocol: Protocol | None, ensemble: str | None) -> str:
    """What the verdict rests on: the protocol and ensemble that ran, or why it is not a protocol verdict."""
    missing = sorted({tier for verdict in found for tier in verdict.unknown}, key=VERDICT_TIERS.index)
    ran = f"protocol {protocol.label} (version {protocol.version}, {ensemble} ensemble)" if protocol else None
    if protocol is None or missing:
        why = (
            f"no attack of tier{'s' if len(missing) > 1 else ''} {', '.join(TIER_NAMES[t] for t in missing)} ran"
            if missing
            else "this suite runs no protocol"
        )
        return (
            f"**Not a protocol verdict**: {why}{'; ' + ran + ' was named' if ran else ''}. A release is protected "
            "only against the tiers it faced."
        )
    until = "the first it did not hold" if protocol.verdict.stop == "unheld" else "the one that broke it"
    return f"**Protocol verdict**: {ran}; every release faced every tier up to {until}."


def verdict_text(metric: str, spec: VerdictSpec, seeds: bool) -> tuple[str, str]:
    """What the verdict's score is (the intro after its first line) and its glossary, for ``metric`` under ``spec``."""
    score = (
        f"Score: the **protection gap** at each knowledge tier = the authorized model's {metric} on the release (no "
        f"attack) minus the best {metric} any unauthorized model reaches under any attack step of that tier or a "
        "lower one (none < method < architecture < public weights < labelled NEs), in points; a gap near 0 or "
        "negative means no protection. Ranked, as AutoAttack ranks defences, by how many tiers a release held, "
        "counted from `none` upward (held: not broken and the gap above 0 beyond its interval), then by the gap at "
        f"the highest tier that ran; `broken`: that {metric} reaches {spec.break_fraction:.0%} of the unauthorized "
        f"models' clean {metric}. White box is shown, never ranked."
    )
    glossary = (
        f"Each tier's strongest (attack step, unauthorized model) is chosen on a seeded {spec.tuning:.0%} of the "
        "images (`tuning`) and reported on the rest (`n`), so choosing the best of many attacks inflates no number. "
        "`x [lo, hi]`: 95% intervals; a gap's is paired over the reported images (Newcombe's for one model, key and "
        "draw; else a paired bootstrap). `clean gap`: the same gap on the clean images with no attack, the "
        "authorized model's plain lead, which is not protection. `tied with`: the ranks that held as many tiers and "
        "whose ranking gap intervals overlap this one's. `holds through` a tier: not broken there and its gap's "
        "interval is above 0; `no protection shown`: not broken, but the authorized model does no better than the "
        "best unauthorized one (the release ruins its own model). `not run`: no attack of that tier ran, so the "
        "release is not known to hold there; "
        + (NOT_NEEDED_UNHELD if spec.stop == "unheld" else NOT_NEEDED_BROKEN)
        + " Controls never count as unauthorized."
        + (" With several seeds (NE keys): per-image outcomes are means over seeds, and `gap seed sd` is the "
           "standard deviation of the "
           "ranking gap between seeds, in points." if seeds else "")
    )  # fmt: skip
    return score, glossary


def verdict_section(frame: pd.DataFrame, protocol: Protocol | None = None, ensemble: str | None = None) -> Section:
    spec, metric = protocol.verdict if protocol else VerdictSpec(), metric_of(frame)
    found = verdicts(frame, spec)
    score, glossary = verdict_text(metric, spec, frame.seed.nunique() > 1)
    table = markdown_table(verdict_table(found, frame, metric)) if found else (
        "No verdict: it needs each cell's per-image outcomes, which this store does not keep (rerun the suite to "
        "record them)."
    )  # fmt: skip
    return Section(
        "Protocol verdict", table, intro=f"{_first_line(found, protocol, ensemble)} {score}", glossary=glossary
    )


def sanity_section(frame: pd.DataFrame) -> Section:
    findings = sanity_findings(frame)
    intro = (
        "Signs that an attack ran too weakly or not at all (as AutoAttack checks its runs): a tier's attacks weaker "
        "than a lower tier's, a budget sweep that does worse with more, white box weaker than a weight-free attack, "
        "an attack that changes nothing."
    )
    table = "\n".join(f"- {f.check}: {f.text}" for f in findings) if findings else "None of the four checks fired."
    return Section("Sanity checks", table, intro=intro)
