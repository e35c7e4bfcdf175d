"""What every plot of the package shares: legible style, distinguishable series, honest axis labels and a
deterministic PNG.

- Style: DejaVu Sans (shipped with matplotlib, so no system font changes a plot), text >= 10 pt, titles 12 pt.
- Series: at most :data:`MAX_SERIES` per axes, each with its own colour, marker and line style
  (:data:`SERIES_STYLES`); figures facet rather than cycle colours.
- Labels: an encoder's strength axis says which PSNR it is (the encoder's ``strength_unit``: nominal PSNR,
  peak 255 in the model's normalized space, for ``reference``; standard PSNR, peak 1, for the others), so the
  two never share an axis.
- Output: Agg, :data:`DPI` dots per inch, no software version or date in the file, and the figure's caption in
  the PNG's ``Description`` text chunk (:func:`read_caption`), so the same cells give the same bytes and a
  report can caption a plot by what it shows rather than by its file name.
"""

from __future__ import annotations

import re
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

from nonxfer_bench.core.atomic import atomic_path
from nonxfer_bench.core.errors import UserError

DPI = 150
FONT_SIZE = 10
TITLE_SIZE = 12
MAX_SERIES = 8
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": FONT_SIZE,
    "axes.titlesize": TITLE_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE,
    "ytick.labelsize": FONT_SIZE,
    "legend.fontsize": FONT_SIZE,
    "legend.title_fontsize": FONT_SIZE,
    "figure.titlesize": TITLE_SIZE,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
# colour-blind-safe colours (Okabe-Ito, black kept for the authorized model), each with its own marker and dashes
SERIES_STYLES = [
    {"color": color, "marker": marker, "linestyle": linestyle}
    for color, marker, linestyle in zip(
        ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"],
        ["o", "s", "^", "D", "v", "P", "X", "*"],
        ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 2, 1, 2))],
    )
]
AUTHORIZED_STYLE = {"color": "black", "marker": "o", "linestyle": "-", "linewidth": 2.2}
METRIC_LABELS = {"accuracy": "top-1 accuracy (%)", "agreement": "agreement with the clean prediction (%)"}
ATTACK_STRENGTH_LABEL = "attack strength\n(0 = weakest, 1 = strongest setting)"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    # heavy (~0.8 s): imported only when a figure is drawn, and Agg is chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def styled() -> Iterator:
    """pyplot with :data:`STYLE` applied while the block builds a figure."""
    plt = pyplot()
    with plt.rc_context(STYLE):
        yield plt


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"{metric} (%)")


def strength_unit(encoder: str) -> str:
    """The PSNR an encoder's strength is (``encoder/png8``: the encoder's own); ``encoder strength`` for an encoder
    this installation does not know (cells read back from elsewhere)."""
    from nonxfer_bench.encoders.base import (
        ENCODERS,
    )  # heavy (the encoders import timm: seconds); rendering otherwise needs no model code

    try:
        return ENCODERS.get(encoder.split("/")[0]).strength_unit
    except UserError:
        return "encoder strength"


def strength_axis_label(encoder: str) -> str:
    """``encoder strength: standard PSNR (dB, peak 1 on [0, 1] pixels)``, wrapped for a panel's width."""
    return textwrap.fill(f"encoder strength: {strength_unit(encoder)}", 40)


def encoding_label(encoder: str, strength: float) -> str:
    """``patch 20 dB`` or ``reference 15 dB nominal``: an encoding named with its strength and which PSNR that is."""
    if encoder == "clean":
        return encoder
    kind = strength_unit(encoder).split(" ")[0]
    return f"{encoder} {strength:g} dB{' nominal' if kind == 'nominal' else ''}"


def panel_title(text: str) -> str:
    """A panel's title wrapped to a panel's width, so that long model names never run into the next panel's."""
    return textwrap.fill(text, 34)


def file_stem(text: str) -> str:
    """``text`` as part of a file name: letters, digits and ``_.@-`` kept, every other run of characters ``_``."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text)


def series_style(index: int) -> dict:
    return dict(SERIES_STYLES[index % len(SERIES_STYLES)])


def errorbar(axis, x, y, below, above, **style):
    """A series with its 95% intervals (``below``/``above``: distances from ``y``): markers joined by the style's line,
    or one marker and its error bar with no line when the series has a single point (a point, not a lone dot)."""
    if len(x) == 1:
        return axis.errorbar(
            x, y, yerr=[below, above], capsize=3, elinewidth=1.0, markersize=6, **style | {"linestyle": "none"}
        )
    return axis.errorbar(x, y, yerr=[below, above], capsize=2, elinewidth=0.8, markersize=5, **style)


def intervals_note(figure) -> str:
    """The caption's words on the error bars: 95% intervals, and, where one is too short to show past its marker on
    ``figure`` as laid out now, that the marker hides it (so a reader takes a bare marker for a narrow interval, not
    for a missing one). Lays the figure out; call it before :func:`caption`, whose title then takes a little height
    from the panels (hence the 20% margin)."""
    figure.draw_without_rendering()
    for axis in figure.axes:
        for container in axis.containers:
            line, _, bars = getattr(container, "lines", (None, (), ()))
            if line is None or not bars or not len(line.get_xydata()):
                continue
            radius = 1.2 * line.get_markersize() * figure.dpi / 72 / 2  # a marker's half height, in pixels
            points = axis.transData.transform(line.get_xydata())[:, 1]
            for point, segment in zip(points, bars[0].get_segments()):
                ends = axis.transData.transform(segment)[:, 1]
                if abs(ends - point).max() < radius:
                    return "error bars: 95% intervals (some narrower than their marker, which hides them)"
    return "error bars: 95% intervals"


def caption(figure, text: str) -> None:
    """Say what ``figure`` shows: its title (wrapped to its width) and its label, which :func:`save` writes into the
    PNG."""
    figure.suptitle(textwrap.fill(text, int(11 * figure.get_figwidth())), fontsize=TITLE_SIZE)
    figure.set_label(text)


def save(figure, path: Path) -> Path:
    """Write a figure built under :func:`styled` (constrained layout, captioned by :func:`caption`) atomically, with its
    caption as the PNG's ``Description``; close it."""
    plt = pyplot()
    metadata = {"Software": None, "Title": path.stem, "Description": figure.get_label()}  # no version or date: no churn
    with plt.rc_context(STYLE), atomic_path(path) as temporary:  # a reader never sees half a plot
        figure.savefig(temporary, dpi=DPI, format="png", metadata=metadata)
    plt.close(figure)
    return path


def read_caption(path: Path) -> str | None:
    """The caption :func:`save` wrote into a PNG (None for a PNG without one)."""
    with Image.open(path) as image:
        return image.text.get("Description")
