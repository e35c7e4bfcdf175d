"""Where a finished run spent its time: a figure and a table from its cells and its run log.

    python benchmarks/runtime.py suites/fashion-full.yaml suites/fashion-full-subset.yaml --out runs/runtime

It never replaces an existing RUNTIME.md or runtime.png unless asked (``--replace``), and even then not a
table with whole-group timings by one without some of them (a fresh clone has no run logs): the committed
results/fashion-full/RUNTIME.md is updated only from the machine that has the logs.

Only the cells the suite plans count (a store may hold cells of an earlier version of the suite). The cells
come from the suite's store (runs/<suite>/cells.jsonl) or, in a fresh clone, from its committed results
(results/<suite>/cells.jsonl.gz); the whole-group panel needs the run log (runs/<suite>/run.log) and is left
out without it.
Two measures, both in wall seconds per 1,000 images so that suites of different sizes compare:
- per attack step, the attack stage of one encoding group (fit, attack, adapt) as the cells record it
  (``attack_seconds``; outputs read from the attack cache count 0 and are left out);
- per encoder, one whole encoding group (encode, every attack step, every model's evaluation, the bounds)
  as the run log's "encoding i/N finished: <group> (<s> s)" lines record it.
Each bar is the median over groups, the whisker the range. The numbers depend on the machine and its load;
they are not part of the reproducible leaderboard, so they live here, beside the speed benchmarks.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from nonxfer_bench.app.sources import find_cells
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.step import steps
from nonxfer_bench.core.atomic import atomic_path
from nonxfer_bench.core.errors import UserError, excerpt

# written by nonxfer_bench.execution.progress.Progress.group_done
FINISHED = re.compile(r"encoding \d+/\d+ finished: (?P<group>\S+) \((?P<seconds>[0-9.]+) s\)$")


@dataclass(frozen=True)
class Timing:
    """Seconds per 1,000 images of one measured thing over the groups that measured it."""

    what: str
    groups: int
    median: float
    low: float
    high: float


def _timing(what: str, values: list[float]) -> Timing:
    return Timing(what, len(values), statistics.median(values), min(values), max(values))


def attack_timings(cells: list[Cell], prefix: str = "") -> list[Timing]:
    """Attack-stage seconds per 1,000 images for each attack step, one value per group that computed it."""
    per_step: dict[str, dict[str, float]] = {}
    for cell, step in zip(cells, steps(cells)):  # one entry per attack step, budgets of a sweep apart
        if cell.attack_seconds and cell.n:
            name = prefix + (
                cell.attack
                if step.baseline
                else " ".join(filter(None, [f"{step.attack} {step.strength:g}", step.text]))
            )
            per_step.setdefault(name, {})[cell.group] = 1000 * cell.attack_seconds / cell.n
    return sorted((_timing(step, list(groups.values())) for step, groups in per_step.items()), key=lambda t: -t.median)


def group_timings(log: Path, cells: list[Cell], labels: set[str], prefix: str = "") -> list[Timing]:
    """Whole-group seconds per 1,000 images for each encoder (the last time each group was computed), from the
    run log's group labels (:attr:`nonxfer_bench.execution.plan.EncodingGroup.label`)."""
    seconds: dict[str, float] = {}
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if (match := FINISHED.search(line)) and match["group"] in labels:
                seconds[match["group"]] = float(match["seconds"])
    images = {(cell.authorized, cell.encoder): cell.n for cell in cells if cell.n}
    per_encoder: dict[str, list[float]] = {}
    for label, value in seconds.items():  # <authorized>/<encoder>[@strength]/seed<k>[/storage][/precision]
        authorized, encoding = label.split("/")[:2]
        encoder = encoding.split("@")[0]
        if (authorized, encoder) in images:
            per_encoder.setdefault(prefix + encoder, []).append(1000 * value / images[authorized, encoder])
    return sorted((_timing(encoder, values) for encoder, values in per_encoder.items()), key=lambda t: -t.median)


def _panel(axis, timings: list[Timing], title: str) -> None:
    labels = [t.what for t in timings][::-1]
    medians = [t.median for t in timings][::-1]
    errors = [[t.median - t.low for t in timings][::-1], [t.high - t.median for t in timings][::-1]]
    axis.barh(labels, medians, xerr=errors, color="#4c72b0", ecolor="#333333", capsize=3)
    values = [t.low for t in timings if t.low > 0] + [t.high for t in timings]
    logarithmic = bool(values) and max(values) > 20 * min(values)  # a log axis only where the bars span decades
    if logarithmic:
        axis.set_xscale("log")
    axis.set_xlabel("wall seconds per 1,000 images (median, range)" + (", log" if logarithmic else ""), fontsize=10)
    axis.set_title(title, fontsize=12)
    axis.tick_params(labelsize=10)


def write_figure(attacks: list[Timing], groups: list[Timing], machine: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(attacks, "attack stage, per attack step"), (groups, "whole encoding group, per encoder")]
    panels = [(timings, title) for timings, title in panels if timings]
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(7.5 * len(panels), 0.32 * max(len(t) for t, _ in panels) + 2.2),
        squeeze=False,
        layout="constrained",
    )
    for axis, (timings, title) in zip(axes[0], panels):
        _panel(axis, timings, title)
    figure.suptitle(f"Run time on {machine}", fontsize=12)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png", metadata={"Software": None})
    plt.close(figure)
    return path


def markdown(
    attacks: list[Timing], groups: list[Timing], machine: str, suites: list[Path], unlogged: list[str] = ()
) -> str:
    lines = [
        "# Run time",
        "",
        f"Measured on {machine}, for {', '.join(f'`{suite}`' for suite in suites)} (the cells' attack "
        f"seconds{' and the run logs' if groups else ''}).",
        "Wall seconds per 1,000 images: median over the encoding groups, range in brackets; they depend on the",
        "machine and its load (other jobs shared these cores).",
        "",
    ]
    sections = (
        ("Whole encoding group, per encoder", groups, "no run log (runs/<suite>/run.log) was found"),
        ("Attack stage, per attack step", attacks, "no cell recorded attack seconds (all read from the attack cache)"),
    )
    for title, timings, missing in sections:
        if not timings:
            lines += [f"## {title}", "", f"Not measured: {missing}.", ""]
            continue
        lines += [f"## {title}", ""]
        if timings is groups and unlogged:
            lines += [
                f"Not measured for {', '.join(f'`{name}`' for name in unlogged)}: no run log (runs/<suite>/run.log).",
                "",
            ]
        lines += ["| | groups | s / 1,000 images | range |", "|---|---|---|---|"]
        lines += [f"| {t.what} | {t.groups} | {t.median:.2f} | [{t.low:.2f}, {t.high:.2f}] |" for t in timings]
        lines.append("")
    return "\n".join(lines)


GROUP_SECTION = "## Whole encoding group, per encoder"


def measured_groups(table: str) -> set[str]:
    """The rows of a RUNTIME.md's whole-group table (what it measured per encoder); empty when it has none."""
    section = table.partition(GROUP_SECTION)[2].split("\n## ")[0]
    rows = [
        line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and line.count("|") >= 3
    ]
    return {row for row in rows if row}


def check_replace(out: Path, replace: bool, groups: list[Timing]) -> str | None:
    """Why the outputs in ``out`` may not be replaced (None when they may): an existing RUNTIME.md or runtime.png
    without ``replace``, or a RUNTIME.md whose whole-group timings the new one would drop."""
    existing = [
        out / name for name in ("RUNTIME.md", "runtime.png") if (out / name).exists() or (out / name).is_symlink()
    ]
    if existing and not replace:
        return f"{existing[0]} exists; pass --replace to replace it, or give a new --out folder (e.g. under runs/)"
    table = out / "RUNTIME.md"
    if table.is_file():
        try:
            with open(table, "rb") as handle:  # a RUNTIME.md is a few kB; a huge file is not read whole
                dropped = measured_groups(handle.read(1 << 20).decode(errors="replace")) - {t.what for t in groups}
        except OSError as error:
            return f"{table}: cannot read it ({error.strerror or error}), so it is not replaced"
        if dropped:
            return (
                f"{table} has whole-group timings this run has no run log for "
                f"({', '.join(excerpt(row, 60) for row in sorted(dropped)[:3])}{', ...' if len(dropped) > 3 else ''}); "
                "it is not replaced: run where runs/<suite>/run.log is, or give a new --out folder"
            )
    return None


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2, as the package's own commands end on bad input."""
    print(f"runtime: error: {message}", file=sys.stderr)
    sys.exit(2)


def machine_text() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", type=Path, help="suite files whose finished runs to read (runs/<suite>/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for runtime.png and RUNTIME.md")
    parser.add_argument("--machine", default=machine_text(), help="how to name the machine in the figure")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace RUNTIME.md and runtime.png in --out (never one with whole-group timings the new one lacks)",
    )
    args = parser.parse_args(argv)
    attacks: list[Timing] = []
    groups: list[Timing] = []
    unlogged: list[str] = []
    for path in args.suites:
        try:  # the store, else the committed results, planned with the draws they record
            found = find_cells("runtime", path, weights=False)
        except UserError as error:  # an unreadable suite, no cells, a damaged store or results file
            fail(str(error))
        suite = found.suite
        prefix = f"{suite.name}: " if len(args.suites) > 1 else ""
        attacks += attack_timings(found.cells, prefix)
        logged = group_timings(suite.run_dir() / "run.log", found.cells, {group.label for group in found.plan}, prefix)
        groups += logged
        unlogged += [] if logged else [suite.name]
    if problem := check_replace(args.out, args.replace, groups):
        fail(problem)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        write_figure(attacks, groups, args.machine, args.out / "runtime.png")
        with atomic_path(args.out / "RUNTIME.md") as temporary:
            temporary.write_text(markdown(attacks, groups, args.machine, args.suites, unlogged) + "\n")
    except OSError as error:  # an --out that cannot be written: one line, nothing half written (atomic)
        fail(f"--out {args.out}: cannot write there ({error.strerror or error})")
    print(f"wrote {args.out / 'runtime.png'} and {args.out / 'RUNTIME.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
