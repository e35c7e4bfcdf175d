"""A static HTML report for people without MLflow: one self-contained folder that opens from disk.

``index.html`` shows the leaderboard (what was run, then the same ``leaderboard.md`` tables, the protocol
verdict first, sortable by a click on a column header), every plot the leaderboard wrote with the caption written
into its PNG, and one sample grid per release (:class:`SampleGrid`: the clean images, the released images and each
attack at its strongest setting, captioned with their PSNR), or one sentence saying that there are none and how to
recompute them. Every file it references (``*.png``, ``samples/*.png``, ``cells.csv``, ``leaderboard.md``) is in the
folder.
"""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.release import Release
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.rendering.figures import file_stem, read_caption
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.rendering.text import db
from nonxfer_bench.schema.protocol import Protocol

SORT_SCRIPT = """
document.querySelectorAll("table").forEach(table => {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const ascending = th.dataset.order !== "asc";
    th.dataset.order = ascending ? "asc" : "desc";
    const key = row => { const text = row.cells[column].textContent.trim(); const number = parseFloat(text);
                         return [isNaN(number) ? Infinity : number, text]; };
    rows.sort((a, b) => { const [x, s] = key(a), [y, t] = key(b);
                          const order = x !== y ? x - y : s.localeCompare(t); return ascending ? order : -order; });
    rows.forEach(row => body.appendChild(row));
  }));
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 120em; }
table { border-collapse: collapse; font-size: 0.8em; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; cursor: pointer; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
figure { margin: 0 0 1.5em 0; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render the inline Markdown the leaderboard uses: `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str) -> str:
    """The leaderboard's Markdown (headings, paragraphs, pipe tables) as HTML."""
    out = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.strip().splitlines()
        if lines[0].startswith("#"):
            level = len(lines[0]) - len(lines[0].lstrip("#"))
            out.append(f"<h{level}>{_inline(lines[0][level:].strip())}</h{level}>")
            lines = lines[1:]
        if not lines:
            continue
        if lines[0].startswith("|"):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in _cells(lines[0]))
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in _cells(line)) + "</tr>\n" for line in lines[2:]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _figure(source: str, caption: str) -> str:
    """An image with its caption (a plot's own caption, written into its PNG; a sample grid's rows)."""
    return (
        f'<figure><img src="{html.escape(source)}" '
        f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


@dataclass(frozen=True)
class SampleGrid:
    """One encoding group's sample grid, as the runner saves it: a row of images each for the clean images, the
    release and every attack at its strongest setting (``blur@0.5``), labelled on the left.

    ``group`` is the group's key (its cells give the caption its PSNR). A grid recomputed by ``report --samples``
    says on how many ``images`` and which attack ``rows`` it has; the run's own grids have every attack's."""

    label: str
    group: str
    path: Path
    images: int | None = None
    rows: tuple[str, ...] | None = None


def per_release(grids: list[SampleGrid], cells: list[Cell]) -> list[tuple[SampleGrid, list[Cell]]]:
    """One grid per release with its group's cells, in release order: the first seed's (a release's seeds are draws of
    the same release); a grid whose group has no cells here is left out."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group, []).append(cell)
    chosen: dict[Release, tuple[int, SampleGrid]] = {}
    for grid in sorted(grids, key=lambda grid: grid.label):
        if grid.group in groups:
            release, seed = Release.of(groups[grid.group][0]), groups[grid.group][0].seed
            if release not in chosen or seed < chosen[release][0]:
                chosen[release] = (seed, grid)
    return [(chosen[release][1], groups[chosen[release][1].group]) for release in sorted(chosen)]


def sample_caption(grid: SampleGrid, cells: list[Cell]) -> str:
    """What a grid's rows are, top to bottom, with their PSNR against the clean images (the cells' means over the
    images)."""
    first = cells[0]
    release = Release.of(first)
    encoded = next(
        (cell.encoded_psnr for cell in cells if cell.baseline), None
    )  # the leaderboard's PSNR of the release
    shown = (
        "the clean images again (no encoding)"
        if release.clean
        else f"the released images, {release.label} ({_psnr({encoded})})"
    )
    strongest: dict[
        str, float
    ] = {}  # each suite entry of an attack (its config): its strongest strength, the grid's row
    for cell in cells:
        if not cell.baseline:
            entry = f"{cell.attack} {sorted(cell.attack_config.items())}"
            strongest[entry] = max(strongest.get(entry, cell.attack_strength), cell.attack_strength)
    rows: dict[
        str, set
    ] = {}  # row label -> the attacked PSNR of the entries it shows (entries of one label share a row)
    for cell in cells:
        label = f"{cell.attack}@{cell.attack_strength:g}"
        if (
            not cell.baseline
            and cell.attack_strength == strongest[f"{cell.attack} {sorted(cell.attack_config.items())}"]
            and label in (grid.rows or [label])
        ):
            rows.setdefault(label, set()).add(cell.attacked_psnr)
    attacked = "; ".join(f"{label}: {_psnr(values)}" for label, values in sorted(rows.items()))
    made = f", recomputed on {grid.images} images by `nonxfer-bench report --samples`" if grid.images else ""
    return (
        f"{first.authorized}: {release.label}, seed {first.seed}{made}. Rows, top to bottom: the clean images; {shown}"
        + (f"; then each attack at its strongest setting, as labelled on the left ({attacked})" if attacked else "")
        + f". PSNR against the clean images, mean over the run's {first.n:,} images."
    )


def _psnr(values: set) -> str:
    """A row's PSNR (:func:`db`: ``inf`` for unchanged images), or its range over the suite entries the row stands
    for."""
    shown = sorted({db(value) for value in values}, key=lambda text: float(text))
    return f"{shown[0]} dB" if len(shown) == 1 else f"{shown[0]} to {shown[-1]} dB"


def _samples_section(shown: list[tuple[SampleGrid, list[Cell]]], folder: Path, suite_file: str | None) -> list[str]:
    """The report's sample images (:func:`per_release`), copied into ``folder/samples``; or why there are none."""
    if not shown:
        command = f"nonxfer-bench report {suite_file or 'SUITE.yaml'} --samples"
        return [
            "<h2>Sample images</h2>",
            "<p>No sample images: the run's grids (runs/&lt;suite&gt;/samples/) are not here, as in a fresh clone "
            f"with only the committed results; <code>{html.escape(command)}</code> recomputes them from the first "
            "images of each release.</p>",
        ]
    (folder / "samples").mkdir(exist_ok=True)
    out = [
        "<h2>Sample images</h2>",
        "<p>One grid per release (of its first seed): a row each of the clean images, the released images and every "
        "attack at its strongest setting, as the run saves them.</p>",
    ]
    for grid, own in shown:
        name = file_stem(grid.label) + ".png"
        shutil.copyfile(grid.path, folder / "samples" / name)
        out.append(_figure(f"samples/{name}", sample_caption(grid, own)))
    return out


def write_report(
    suite_name: str,
    cells: list[Cell],
    models: list[str],
    samples: list[SampleGrid],
    folder: Path,
    source: Source | None = None,
    protocol: Protocol | None = None,
    ensemble: str | None = None,
) -> tuple[Path, int]:
    """Write the report folder (leaderboard, plots, ``samples/``); return its ``index.html`` and how many sample grids
    it shows.

    ``samples`` are the groups' sample grids found (one per release is shown); ``source`` says where the cells came
    from (the leaderboard's "What was run" line, and the suite file the sentence on missing samples names);
    ``protocol`` and ``ensemble`` as the leaderboard takes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_leaderboard(suite_name, cells, models, folder, source, protocol, ensemble)
    board = paths[0].read_text()
    figures = [_figure(p.name, read_caption(p) or p.stem) for p in paths if p.suffix == ".png"]
    shown = per_release(samples, cells)
    text = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><title>nonxfer-bench: '
            f"{html.escape(suite_name)}</title><style>{STYLE}</style></head><body>",
            markdown_to_html(board),
            '<p>Per-cell values: <a href="cells.csv">cells.csv</a>; the tables as Markdown: '
            '<a href="leaderboard.md">leaderboard.md</a>. Click a column header to sort.</p>',
            "<h2>Plots</h2>",
            *figures,
            *_samples_section(shown, folder, source.suite_file if source else None),
            f"<script>{SORT_SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )
    index = folder / "index.html"
    atomic_write(index, text)
    return index, len(shown)
