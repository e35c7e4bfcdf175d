"""Every table of a bundle re-derived from its cells' outcome bits and compared with the bundle's own.

``cells.csv`` and ``leaderboard.md`` are written again into a temporary folder by the same function that wrote them
(:func:`~nonxfer_bench.rendering.leaderboard.write_leaderboard`, every interval and paired test included) and compared
line by line. Only three parts of the "What was run" line may differ: the stamp of the code that wrote the tables, the
date (of the newest cell, or of the commit of the cells file) and the suite file as the run's command line named it
(relative to the folder it ran in, or absolute): they say when, by what and from where the tables were written, not
what they show. The plots are pinned by their sha256 in the manifest, not redrawn (they take longer than the tables).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from nonxfer_bench.bundles.contents import Contents
from nonxfer_bench.bundles.manifest import Manifest
from nonxfer_bench.core.errors import excerpt
from nonxfer_bench.loading import suite_protocol
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source

TABLES = ("leaderboard.md", "cells.csv")
STAMP = re.compile(r"; tables written by [^;]*;")
DATE = re.compile(r"; (newest cell written|cells committed) \S+ \(UTC\)\.$")
SUITE_FILE = re.compile(r"^(\*\*What was run\*\*: suite `[^`]*`) \((`[^`]*`|suite file not given)\);")
SUMMARY = "**What was run**"
MAX_TABLE_BYTES = 256 << 20  # the tables of the full ImageNet suite are a few MB


def comparable(line: str) -> str:
    """A table line with the "What was run" line's code stamp, date and suite file path left out."""
    if not line.startswith(SUMMARY):
        return line
    return SUITE_FILE.sub(
        r"\1 (suite file);", DATE.sub("; (date) (UTC).", STAMP.sub("; tables written by (code);", line))
    )


def table_problems(folder: Path, contents: Contents, manifest: Manifest) -> list[str]:
    """Where ``leaderboard.md`` and ``cells.csv`` differ from the tables re-derived from the bundle's cells (never
    written inside the bundle)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="nxb-check-") as scratch:
        models = [model.name for model in contents.suite.models]
        protocol, ensemble = suite_protocol(contents.suite)
        try:
            write_leaderboard(
                manifest.suite,
                contents.ordered(),
                models,
                Path(scratch),
                Source(manifest.suite_file),
                protocol,
                ensemble,
                plots=False,
            )
        except Exception as error:  # noqa: BLE001 - cells a run never writes (a tampered bundle's) may break a table: say so
            return [
                f"the tables cannot be derived from these cells ({type(error).__name__}: {excerpt(str(error), 120)})"
            ]
        for name in TABLES:
            if not (folder / name).is_file() or (folder / name).stat().st_size > MAX_TABLE_BYTES:
                problems.append(f"{name} is {'larger than 256 MiB' if (folder / name).is_file() else 'missing'}")
                continue
            problem = first_line_difference(
                name, (folder / name).read_text(encoding="utf-8", errors="replace"), (Path(scratch) / name).read_text()
            )
            if problem:
                problems.append(problem)
    return problems


def first_line_difference(name: str, found: str, derived: str) -> str | None:
    """The first line where the bundle's table ``found`` differs from the ``derived`` one, as one problem line."""
    left, right = [comparable(line) for line in found.splitlines()], [comparable(line) for line in derived.splitlines()]
    if left == right:
        return None
    number = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    shown = excerpt(left[number], 120) if number < len(left) else "(the file ends)"
    wanted = excerpt(right[number], 120) if number < len(right) else "(the file ends)"
    return f"{name} line {number + 1:,} is not the table its cells give: {shown}; re-derived: {wanted}"
