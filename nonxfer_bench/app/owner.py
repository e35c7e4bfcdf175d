"""The data owner's commands: ``encode`` an image folder into a release, ``verify`` the zoo's models on it, ``attack``
it with a protocol (:mod:`nonxfer_bench.owner`, :mod:`nonxfer_bench.app.attack`), each ending in its summary lines.

The release and output folders are the text the command line gave: the summaries show them as typed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nonxfer_bench.app.attack import AttackRequest, attack_release
from nonxfer_bench.app.notices import notices
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.owner.card import not_needed_reason
from nonxfer_bench.owner.release import encode_folder
from nonxfer_bench.owner.verify import format_table, stored_agreement_line, verify_release
from nonxfer_bench.rendering.verdict import TIER_NAMES
from nonxfer_bench.schema.settings import RunSettings


def encode(
    source: Path, output: str, zoo: Path, model: str, encoder: str, strength: float, fmt: str, seed_key: str,
    params: dict[str, Any], batch_size: int, overwrite: bool, force: bool, settings: RunSettings,
) -> int:  # fmt: skip
    """``encode``: the images under ``source`` as ``model``'s release in ``output``
    (:func:`~nonxfer_bench.owner.release.encode_folder`), then what it wrote, the image quality and the authorized
    model's agreement after storage with its interval."""
    with notices("nonxfer-bench: %(message)s"):
        manifest = encode_folder(
            zoo, model, encoder, strength, fmt, seed_key, source, Path(output), params=params, batch_size=batch_size,
            overwrite=overwrite, force=force, settings=settings,
        )  # fmt: skip
    notes = "; ".join(f"{note}: {count} image(s)" for note, count in manifest["notes"].items())
    kept = manifest["authorized_agreement"]
    agreement = wilson(kept["kept"], kept["n"])
    print(
        f"wrote {len(manifest['images'])} {manifest['format']} NE(s) for {model} to {output} (PSNR after "
        f"storage: mean {manifest['psnr_mean']} dB, min {manifest['psnr_min']} dB; SSIM mean "
        f"{manifest['ssim_mean']}; key id {manifest['key_id']})" + (f"; {notes}" if notes else "")
    )
    print(
        f"after {manifest['format']} storage {model} keeps its prediction on the originals for "
        f"{100 * agreement.estimate:.1f}% [{100 * agreement.lo:.1f}, {100 * agreement.hi:.1f}] of the images "
        f"(n={kept['n']}, 95% Wilson interval)"
    )
    if manifest["forced_format"]:
        print(f"warning (--force): {manifest['forced_format']}", file=sys.stderr)
    print(f"wrote {Path(output) / 'PROTECTION.md'} (not yet attacked: `nonxfer-bench attack` fills its evidence)")
    return 0


def verify(
    release: str, zoo: Path, models: list[str] | None, originals: Path | None, labels: bool, class_file: Path | None,
    batch_size: int, controls: list[str] | None, overwrite: bool, settings: RunSettings,
) -> int:  # fmt: skip
    """``verify``: the zoo's models scored on ``release`` (:func:`~nonxfer_bench.owner.verify.verify_release`), then
    their table, the models of another input size left out, the agreement after storage and the verdict."""
    with notices("nonxfer-bench: %(message)s"):  # e.g. that the originals cannot be checked by content
        result = verify_release(
            Path(release), zoo, models, originals, labels=labels, class_file=class_file, batch_size=batch_size,
            controls=controls, overwrite=overwrite, settings=settings,
        )  # fmt: skip
    print(
        f"{release}: {result['format']} release for {result['authorized']['name']} "
        f"({result['encoder']['name']}@{result['encoder']['strength']:g}), percentages [95% Wilson intervals]:"
    )
    print(format_table(result["models"]))
    if result["skipped"]:
        sizes = ", ".join(f"{name} ({'x'.join(map(str, size))})" for name, size in result["skipped"].items())
        print(f"not scored: {sizes}: another input size than the release's (name them with --models to be told why)")
    print(stored_agreement_line(result))
    print(result["verdict"]["text"])
    print(f"wrote {Path(release) / 'verify.json'}")
    return 0


def attack(request: AttackRequest) -> int:
    """``attack``: the protocol's tiers run on the release (:func:`~nonxfer_bench.app.attack.attack_release`), then
    each tier's best unauthorized accuracy with its interval, the cheapest break, the tiers not needed or not run and
    the identification."""
    card, _ = attack_release(request)
    evidence = card["evidence"]
    for tier in evidence["tiers"]:
        best = tier["best"]
        print(
            f"  {tier['knows']}: best unauthorized accuracy {100 * best['estimate']:.1f}% [{100 * best['lo']:.1f}, "
            f"{100 * best['hi']:.1f}] by {tier['step']} ({tier['model']}), "
            f"n={evidence['n']}{'; broken' if tier['broken'] else ''}"
        )
    print(f"cheapest known break: {evidence['break']}")
    if evidence["not_needed"]:
        print(
            f"not needed ({not_needed_reason(evidence)}): "
            f"{', '.join(TIER_NAMES[tier] for tier in evidence['not_needed'])}"
        )
    if evidence["not_run"]:
        print(f"not run (nothing is known there): {', '.join(TIER_NAMES[tier] for tier in evidence['not_run'])}")
    print(f"identification: {evidence['identification']}")
    print(
        f"wrote {request.release / 'PROTECTION.md'} (protocol {evidence['protocol']['name']}, "
        f"{evidence['protocol']['ensemble']} ensemble)"
    )
    return 0
