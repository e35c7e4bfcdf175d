"""The protection card: one page beside every release (``PROTECTION.md``, and ``protection.json`` for programs) that a
data owner can hand to a data-protection officer.

It says what was released and for whom (the authorized model and the SHA-256 of its weights), how (encoder, settings,
storage format, image quality after storage), whether the authorized model still works, and the evidence: per
knowledge tier of the protocol the best accuracy an unauthorized model reached with its interval, the cheapest known
break and what the release leaks about its authorized model. ``encode`` writes it with "not yet attacked";
``attack`` fills the evidence from the protocol verdict (:mod:`nonxfer_bench.analysis.verdict`), the numbers of the
leaderboard's verdict section. The Markdown page is rendered from the JSON, so the two never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.metrics.statistics import Interval, wilson
from nonxfer_bench.storage.release import CARD, CARD_DATA

CARD_VERSION = 1
NOT_ATTACKED = "not yet attacked"
NOT_MEASURED = "not measured (the protocol run holds no `identify` attack)"
KNOWS = {  # what an attacker of each tier knows, in plain words
    "none": "knows nothing about the protection",
    "method": "knows the protection method",
    "architecture": "also knows the authorized model's architecture",
    "public_weights": "also holds public models and clean public images",
    "labelled_nes": "also holds labelled protected images",
    "white_box": "holds the authorized model itself (shown, not part of the verdict)",
}


def interval(found: Interval) -> dict[str, float]:
    return {"estimate": float(found.estimate), "lo": float(found.lo), "hi": float(found.hi)}


def card_data(manifest: dict, evidence: dict | None) -> dict[str, Any]:
    """The card as data: the release from its manifest, and ``evidence`` (:func:`nonxfer_bench.app.attack` builds it)
    or None before any attack."""
    agreement = manifest["authorized_agreement"]
    return {
        "card": CARD_VERSION,
        "release": {
            "images": len(manifest["images"]),
            "created": manifest.get("created"),
            "nonxfer_bench": manifest.get("nonxfer_bench"),
            "key_id": manifest["key_id"],
        },
        "authorized": {**manifest["model"]},
        "protection": {**manifest["encoder"], "forced_format": manifest.get("forced_format")},
        "storage": {
            "format": manifest["format"],
            "psnr_mean": manifest.get("psnr_mean"),
            "psnr_min": manifest.get("psnr_min"),
            "ssim_mean": manifest.get("ssim_mean"),
        },
        "authorized_agreement": {**interval(wilson(agreement["kept"], agreement["n"])), "n": agreement["n"]},
        "evidence": evidence,
    }


def write_card(folder: Path, manifest: dict, evidence: dict | None = None) -> dict:
    """Write ``PROTECTION.md`` and ``protection.json`` into the release ``folder``; returns the card's data."""
    data = card_data(manifest, evidence)
    atomic_write(Path(folder) / CARD_DATA, json.dumps(data, indent=1))
    atomic_write(Path(folder) / CARD, render(data))
    return data


def _percent(found: dict) -> str:
    return f"{100 * found['estimate']:.1f}% [{100 * found['lo']:.1f}, {100 * found['hi']:.1f}]"


def _points(found: dict) -> str:
    return f"{100 * found['estimate']:+.1f} [{100 * found['lo']:+.1f}, {100 * found['hi']:+.1f}]"


def render(data: dict) -> str:
    """The card as one page of Markdown."""
    release, model, protection, storage = data["release"], data["authorized"], data["protection"], data["storage"]
    params = ", ".join(f"{k}={v}" for k, v in protection.get("params", {}).items()) or "none"
    weights = (
        f"weights SHA-256 `{model['weights_sha256']}`"
        if model.get("weights_sha256")
        else "weights not from a file (see the zoo entry)"
    )
    lines = [
        "# Protection card",
        "",
        "What protects the images in this folder, how that was checked, and what is not known. Written by "
        "nonxfer-bench;",
        "the same facts are in `protection.json`.",
        "",
        "## What was released",
        "",
        f"- **Images**: {release['images']} files, stored as `{storage['format']}`, made on "
        f"{release['created'] or 'an unrecorded date'} (UTC).",
        f"- **Who may use them**: the model `{model['name']}` (architecture `{model['arch']}`; {weights}).",
        f"- **How they are protected**: `{protection['name']}` at strength {protection['strength']:g} "
        f"({protection.get('strength_unit', 'its own unit')}), parameters: {params}; drawn with a secret key the "
        f"owner keeps (key id `{release['key_id']}`, never the key).",
        f"- **Image quality after storage** (against the originals): PSNR mean {_db(storage['psnr_mean'])} dB, lowest "
        f"{_db(storage['psnr_min'])} dB; SSIM mean {storage['ssim_mean']:.3f} (1 = identical).",
        "- **The authorized model still works**: it keeps its own prediction on "
        f"{_percent(data['authorized_agreement'])} of the released images (n={data['authorized_agreement']['n']}, 95% "
        "interval).",
    ]
    if protection.get("forced_format"):
        lines.append(
            "- **Warning**: written with `--force` in a format the encoder does not declare: "
            f"{protection['forced_format']}."
        )
    lines += ["", "## Evidence", ""]
    evidence = data["evidence"]
    if evidence is None:
        lines += [
            f"**{NOT_ATTACKED.capitalize()}.** Nothing here says the release resists anyone who processes the images "
            "before use. Run `nonxfer-bench attack` on this folder to measure it against a protocol's attacks.",
        ]
    else:
        lines += _evidence(evidence)
    lines += [
        "",
        "## How to read it",
        "",
        "- *Accuracy*: the share of images a model classifies correctly. An unauthorized model should stay far below "
        "the authorized one.",
        "- *Gap*: the authorized model's accuracy on the release minus the best accuracy an attacker reached, in "
        "percentage points; near 0 or below means no protection against that attacker.",
        "- *Broken at a tier*: an attacker with that knowledge reaches the protocol's break target (a share of what "
        "unauthorized models reach on the original images).",
        "- Brackets are 95% intervals; n is the number of images. Only the attacks of the protocol were tried: a "
        "stronger one may exist.",
    ]
    return "\n".join(lines) + "\n"


def not_needed_reason(evidence: dict) -> str:
    """Why the tiers above the one that settled the release (``settled``) were not attacked: it was broken there, or (a
    protocol that stops at ``unheld``) it showed no protection there."""
    settled = evidence["settled"]
    if not settled.startswith("not held"):
        return "an attacker who knows less already breaks it"
    where = settled.removeprefix("not held ")
    return f"no protection shown {where}, and an attacker who knows more can only lower the gap"


def _evidence(evidence: dict) -> list[str]:
    protocol = evidence["protocol"]
    lines = [
        f"Attacked with protocol **{protocol['name']}** (version {protocol['version']}, {protocol['ensemble']} "
        f"ensemble) on {evidence['attacked']} (UTC): every attack of each knowledge tier, scored by the unauthorized "
        f"models of the zoo ({', '.join(evidence['unauthorized'])}) on {evidence['n']} images ({evidence['tuning']} "
        "more chose each tier's strongest attack).",
        "",
        "| the attacker | best unauthorized accuracy [95% CI] | reached by | gap (points) |",
        "|---|---|---|---|",
    ]
    for tier in evidence["tiers"]:
        lines.append(
            f"| {KNOWS[tier['tier']]} | {_percent(tier['best'])} | {tier['step']} ({tier['model']}) | "
            f"{_points(tier['gap'])}{' broken' if tier['broken'] else ''} |"
        )
    for tier in evidence["not_needed"]:
        lines.append(f"| {KNOWS[tier]} | not needed: {not_needed_reason(evidence)} | | |")
    for tier in evidence["not_run"]:
        lines.append(f"| {KNOWS[tier]} | not run: nothing is known | | |")
    lines += [
        "",
        f"- **Authorized model on the release**: {_percent(evidence['authorized'])}"
        + (
            f"; break target: {100 * evidence['target']:.1f}% (the protocol's share of the unauthorized models' "
            "accuracy on the originals)."
            if evidence["target"] is not None
            else "."
        ),
        f"- **Cheapest known break**: {evidence['break']}.",
        f"- **What the release leaks about its authorized model**: {evidence['identification']}.",
    ]
    lines.append(f"- Full tables: `{evidence['leaderboard']}`.")
    return lines


def _db(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"
