"""A static HTML report for people without MLflow: one self-contained folder that opens from disk.

``index.html`` shows the leaderboard (what was run, then the same ``leaderboard.md`` tables, the protection
ranking first, sortable by a click on a column header), the plots, and one sample grid (clean, NE, attacked rows) per encoding; every file it references
(``*.png``, ``samples/*.png``, ``cells.csv``, ``leaderboard.md``) is copied into the folder.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.rendering.figures import read_caption
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.provenance import Source
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
            rows = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in _cells(line)) + "</tr>\n" for line in lines[2:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _figure(source: str, caption: str) -> str:
    """An image with its caption (a plot's own caption, written into its PNG; a sample grid's encoding)."""
    return f'<figure><img src="{html.escape(source)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def write_report(
    suite_name: str, cells: list[Cell], models: list[str], samples: dict[str, Path], folder: Path, source: Source | None = None,
    protocol: Protocol | None = None, ensemble: str | None = None,
) -> Path:  # fmt: skip
    """Write the report folder (leaderboard, plots, ``samples/``) and return its ``index.html``.

    ``samples`` maps an encoding's label (its group run name) to its sample grid PNG; ``source`` says where
    the cells came from (the leaderboard's "What was run" line); ``protocol`` and ``ensemble`` as the leaderboard takes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_leaderboard(suite_name, cells, models, folder, source, protocol, ensemble)
    board = paths[0].read_text()
    figures = [_figure(p.name, read_caption(p) or p.stem) for p in paths if p.suffix == ".png"]
    grids = []
    if samples:
        (folder / "samples").mkdir(exist_ok=True)
    for label in sorted(samples):
        name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", label) + ".png"
        shutil.copyfile(samples[label], folder / "samples" / name)
        grids.append(_figure(f"samples/{name}", label))
    text = "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8"><title>nonxfer-bench: {html.escape(suite_name)}</title><style>{STYLE}</style></head><body>',
            markdown_to_html(board),
            '<p>Per-cell values: <a href="cells.csv">cells.csv</a>; the tables as Markdown: <a href="leaderboard.md">leaderboard.md</a>. Click a column header to sort.</p>',
            "<h2>Plots</h2>",
            *figures,
            "<h2>Sample images</h2>",
            "<p>Per encoding: clean images, the released NEs and each attack at its highest strength.</p>"
            if grids
            else "<p>No sample grids were saved for this suite.</p>",
            *grids,
            f"<script>{SORT_SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )
    index = folder / "index.html"
    atomic_write(index, text)
    return index
