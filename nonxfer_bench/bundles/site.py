"""One static leaderboard site from every bundle under a results folder, in the HTML report's style.

Each bundle (a folder with a BUNDLE.json) whose files still hash as its manifest records adds one row per release
(protection = encoder, release settings: authorized model, strength, storage, precision) with its protocol verdict
and protection gap per knowledge tier (:func:`release_rows`), each row linking to its bundle; a second table lists the
bundles with what produced them. A
folder without a manifest, or whose files no longer match it, is listed apart and adds no row: the site shows only
numbers whose files are pinned. Rows of different suites are not comparable (other data, zoo and attacks): the
suite is the first column, and a click on a header sorts.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nonxfer_bench.analysis.frame import metric_of, results_frame
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.bundles.check import file_problems
from nonxfer_bench.bundles.contents import bundle_suite, read_cells
from nonxfer_bench.bundles.manifest import BUNDLE, Manifest, read_manifest
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.loading import suite_protocol
from nonxfer_bench.rendering.report import SORT_SCRIPT, STYLE, markdown_to_html
from nonxfer_bench.rendering.verdict import verdict_table, verdict_text
from nonxfer_bench.schema.protocol import VerdictSpec

MAX_BUNDLES = 1000  # folders of a results folder looked at


@dataclass(frozen=True)
class Listed:
    """A folder of the results folder: its name, its manifest (None: not a bundle) and why it adds no rows (None: it
    does)."""

    folder: Path
    manifest: Manifest | None
    excluded: str | None


def protocol_of(folder: Path, manifest: Manifest) -> tuple[VerdictSpec, str]:
    """The verdict rule of a bundle's suite and what its verdict rests on: ``protocol ne-v1 v1 (fast)``, or ``not a
    protocol verdict`` where the suite runs none (or its suite file is not here to say)."""
    try:
        protocol, ensemble = suite_protocol(bundle_suite(folder, manifest)[0])
    except UserError:
        return VerdictSpec(), "not a protocol verdict (suite file not here)"
    if protocol is None:
        return VerdictSpec(), "not a protocol verdict"
    return protocol.verdict, f"protocol {protocol.label} v{protocol.version} ({ensemble})"


def release_rows(cells: list[Cell], spec: VerdictSpec = VerdictSpec()) -> pd.DataFrame:
    """The site's rows of one bundle: one per release with its verdict and protection gap per knowledge tier, ranked
    as the leaderboard's protocol verdict ranks them (:func:`~nonxfer_bench.rendering.verdict.verdict_table`)."""
    frame = results_frame(cells)
    return verdict_table(verdicts(frame, spec), frame, metric_of(frame))


def find_bundles(results: Path) -> list[Listed]:
    """Each folder directly under ``results`` that holds cells or a BUNDLE.json, with its manifest and whether its files
    hash as recorded (:func:`~nonxfer_bench.bundles.check.file_problems`)."""
    if not results.is_dir():
        raise UserError(
            f"{results}: {'not a folder' if results.exists() else 'no such folder'}; give the folder that holds the "
            "bundles (results/)"
        )
    folders = sorted(path for path in results.iterdir() if path.is_dir() and not path.is_symlink())[:MAX_BUNDLES]
    listed = []
    for folder in folders:
        if not (folder / BUNDLE).exists():
            if any((folder / name).is_file() for name in ("cells.jsonl.gz", "cells.jsonl")):
                listed.append(Listed(folder, None, f"no {BUNDLE} (`nonxfer-bench bundle SUITE` writes it)"))
            continue
        try:
            manifest = read_manifest(folder)
            problems, _ = file_problems(folder, manifest, ())
        except UserError as error:
            listed.append(Listed(folder, None, str(error)))
            continue
        listed.append(Listed(folder, manifest, f"its files do not match {BUNDLE}: {problems[0]}" if problems else None))
    return listed


def _link(folder: Path, site: Path, text: str) -> str:
    target = os.path.relpath(folder, site)
    return f'<a href="{html.escape(target)}/">{html.escape(text)}</a>'


def _table(frame: pd.DataFrame, raw: set[str]) -> str:
    """A frame as an HTML table; the columns in ``raw`` hold HTML already (links)."""
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{value if column in raw else html.escape(str(value))}</td>"
            for column, value in zip(frame.columns, row)
        )
        + "</tr>\n"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>"


def _dataset(manifest: Manifest) -> str:
    record = next((r for r in manifest.datasets if r.key == "dataset"), None)
    if record is None:
        return ""
    split = record.spec.get("params", {}).get("split")
    limit = record.spec.get("limit")
    return " ".join(part for part in (record.spec["name"], split, f"({limit:,} images)" if limit else "") if part)


def site_html(listed: list[Listed], site: Path) -> str:
    """The site's index page: the releases of every included bundle, the bundles, the folders left out."""
    left = [(item.folder.name, item.excluded) for item in listed if item.excluded]
    releases, bundles, stops = [], [], set()
    for item in listed:
        if item.excluded:
            continue
        manifest = item.manifest
        spec, protocol = protocol_of(item.folder, manifest)
        stops.add(spec.stop)
        try:
            rows = release_rows(list(read_cells(item.folder).values()), spec)
        except Exception as error:  # noqa: BLE001 - cells no run writes (pinned, but never checked) may break the ranking: leave them out
            left.append(
                (
                    item.folder.name,
                    f"its cells give no ranking ({type(error).__name__}: {excerpt(str(error), 100)}); `nonxfer-bench "
                    "check` says why",
                )
            )
            continue
        link = _link(item.folder, site, item.folder.name)
        rows.insert(0, "protocol", protocol)
        rows.insert(0, "dataset", _dataset(manifest))
        rows.insert(0, "suite", link)
        releases.append(rows)
        bundles.append(
            {
                "suite": link,
                "dataset": _dataset(manifest),
                "cells": f"{manifest.cells:,}",
                "groups": f"{manifest.groups:,}",
                "code": "; ".join(manifest.code),
                "draws": manifest.draws or "",
                "precision": ", ".join(manifest.precisions),
                "files": f"{len(manifest.files)} ({sum(e.bytes for e in manifest.files.values()) / 1e6:.1f} MB)",
            }
        )
    table = pd.concat(releases, ignore_index=True).fillna("") if releases else pd.DataFrame()
    # the glossary explains `not held` where a bundle's protocol stops there (ne-v2)
    score, glossary = verdict_text("accuracy", VerdictSpec(stop="unheld" if "unheld" in stops else "broken"), False)
    left_out = "".join(f"<li>{html.escape(name)}: {html.escape(why)}</li>" for name, why in left)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>nonxfer-bench: leaderboard of '
        f"bundles</title><style>{STYLE}</style></head><body>",
        "<h1>Leaderboard of bundles</h1>",
        f"<p>{len(table):,} releases from {len(bundles)} bundle{'s' if len(bundles) != 1 else ''}, each row linked to "
        "its bundle. Every number here can be checked from its bundle alone: <code>nonxfer-bench check "
        "results/SUITE</code> verifies the hashes, re-derives every table from the per-image outcome bits and "
        "replays a random sample of the cells. Rows of different suites are not comparable (other images, models and "
        "attacks). Click a column header to sort.</p>",
        "<h2>Protocol verdict</h2>",
        markdown_to_html(
            "A release is protected only against the knowledge tiers it faced: `protocol` says whether its bundle's "
            "suite ran a protocol (every release attacked tier by tier until one settles it: breaks it or, ne-v2, "
            "finds it not held) or only the attacks it lists. " + score
        ),
        _table(table, {"suite"}) if releases else "<p>No bundle to show.</p>",
        markdown_to_html(glossary),
        "<h2>Bundles</h2>",
        _table(pd.DataFrame(bundles), {"suite"}) if bundles else "<p>No bundle.</p>",
        *([f"<h2>Left out</h2><ul>{left_out}</ul>"] if left_out else []),
        f"<script>{SORT_SCRIPT}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
