"""The leaderboard plots read like figures of a paper: legible text, a caption that says what is shown, axes
with units (and which PSNR), at most eight distinguishable series per axes, Wilson/bootstrap error bars, and
the same bytes for the same cells. Rendered from the committed quickstart results and synthetic ladder cells."""

from __future__ import annotations

import html
import re

import matplotlib.text
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.rendering.figures import (
    DPI,
    FONT_SIZE,
    MAX_SERIES,
    TITLE_SIZE,
    errorbar,
    intervals_note,
    read_caption,
    save,
    styled,
)
from nonxfer_bench.rendering.leaderboard import write_leaderboard
from nonxfer_bench.rendering.plots import (
    accuracy_vs_strength_figure,
    attack_curves_figure,
    transfer_heatmap_figure,
    write_plots,
)
from nonxfer_bench.rendering.security_plot import RELEASES_PER_PAGE, security_curves_figures
from tests.synthetic import MODELS, ladder_cells, quickstart_cells

QUICKSTART_MODELS = ["vit_a", "vit_b", "convnext", "resnet", "resnet_deep", "mobilenet"]


@pytest.fixture(scope="module")
def quickstart():
    cells = quickstart_cells()
    return cells, results_frame(cells)


@pytest.fixture(scope="module")
def ladder():
    cells = ladder_cells()
    return cells, results_frame(cells)


@pytest.fixture(scope="module")
def figures(quickstart, ladder):
    cells, frame = quickstart
    built = {
        "accuracy_vs_strength": accuracy_vs_strength_figure(frame, QUICKSTART_MODELS, "accuracy"),
        "transfer_heatmap": transfer_heatmap_figure(frame, QUICKSTART_MODELS, "accuracy"),
        "attack_curves": attack_curves_figure(frame, "accuracy"),
        "security_curves": security_curves_figures(ladder[1], "accuracy")["security_curves_a.png"],
    }
    yield built
    import matplotlib.pyplot as plt

    for figure in built.values():
        plt.close(figure)


def texts(figure) -> list[matplotlib.text.Text]:
    return [text for text in figure.findobj(matplotlib.text.Text) if text.get_visible() and text.get_text().strip()]


def series(axis) -> list[tuple]:
    """One (colour, marker, line style, marker fill) per errorbar series of an axes."""
    lines = [container.lines[0] for container in axis.containers]
    return [
        (line.get_color(), line.get_marker(), str(line.get_linestyle()), str(line.get_markerfacecolor()))
        for line in lines
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accuracy_vs_strength", "transfer_heatmap", "attack_curves", "security_curves"])
def test_every_text_is_at_least_10_pt_and_titles_12(figures, name):
    figure = figures[name]
    assert all(text.get_fontsize() >= FONT_SIZE for text in texts(figure))
    titles = [axis.title for axis in figure.axes if axis.get_title()] + [figure._suptitle]
    assert titles and all(title.get_fontsize() >= TITLE_SIZE for title in titles)


@pytest.mark.parametrize("name", ["accuracy_vs_strength", "transfer_heatmap", "attack_curves", "security_curves"])
def test_the_caption_says_what_is_shown_and_travels_in_the_png(figures, name, tmp_path):
    figure = figures[name]
    caption = figure.get_label()
    assert len(caption.split()) > 10 and ".png" not in caption and "_" not in caption.split(":")[0]
    assert " ".join(figure._suptitle.get_text().split()) == caption
    path = save(figure, tmp_path / f"{name}.png")
    with Image.open(path) as image:
        assert image.info["dpi"] == pytest.approx((DPI, DPI), abs=0.5)
        assert image.width > 600 and image.height > 300
        assert "Software" not in image.text  # no matplotlib version: committed plots do not churn
    assert read_caption(path) == caption


@pytest.mark.parametrize("name", ["accuracy_vs_strength", "attack_curves", "security_curves"])
def test_no_axes_holds_more_than_eight_series_and_each_looks_different(figures, name):
    for axis in figures[name].axes:
        styles = series(axis)
        assert len(styles) <= MAX_SERIES
        assert len(set(styles)) == len(styles), f"{axis.get_title()}: two series look the same"


def test_the_attack_curves_facet_22_series_into_panels_per_encoder(figures, quickstart):
    _, frame = quickstart
    figure = figures["attack_curves"]
    visible = [axis for axis in figure.axes if axis.get_visible() and axis.get_subplotspec() is not None]
    rows = frame[~frame.baseline][["authorized", "encoder"]].drop_duplicates()
    attacks = frame[~frame.baseline].attack.nunique()
    assert len(visible) == len(rows) * attacks  # one row of panels per (authorized, encoder), a column per attack
    assert max(len(series(axis)) for axis in visible) == 6  # 3 strengths x (authorized, unauthorized mean)
    first_column = [axis.get_ylabel() for axis in visible if axis.get_subplotspec().is_first_col()]
    assert any(label.startswith("reference, authorized resnet") for label in first_column)
    assert all("top-1 accuracy (%)" in label for label in first_column)


def test_strength_axes_say_which_psnr_and_never_mix_the_two(figures):
    labels = {
        axis.get_title(): " ".join(axis.get_xlabel().split())
        for axis in figures["accuracy_vs_strength"].axes
        if axis.get_title()
    }
    assert len(labels) == 8  # 2 authorized x (gaussian, operator, patch, reference)
    dots = {title for title, label in labels.items() if label == "evaluated model"}  # one strength: named in the title
    assert dots == {"operator 10 dB, authorized resnet", "operator 10 dB, authorized vit_a"}
    for title, label in labels.items():
        if title in dots:
            continue
        if title.startswith("reference"):
            assert "nominal PSNR (dB, peak 255" in label and "standard" not in label
        else:
            assert "standard PSNR (dB, peak 1" in label and "nominal" not in label
    heatmap = figures["transfer_heatmap"].axes[0]
    rows = [tick.get_text() for tick in heatmap.get_yticklabels()]
    assert "resnet: reference 15 dB nominal" in rows and "resnet: patch 20 dB" in rows and "vit_a: clean" in rows


def test_accuracy_panels_show_each_model_and_the_authorized_model_in_black(figures):
    figure = figures["accuracy_vs_strength"]
    panel = next(axis for axis in figure.axes if axis.get_title() == "patch, authorized resnet")
    assert len(series(panel)) == len(QUICKSTART_MODELS)
    assert sum(style[0] == "black" for style in series(panel)) == 1
    assert figure.axes[0].get_ylabel() == "top-1 accuracy (%)"  # the first column's panels; the others share it
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert (
        legend[:2] == ["authorized model of the panel", "authorized model, clean images"]
        and legend[2:] == QUICKSTART_MODELS
    )


def test_more_models_than_styles_fall_back_to_the_unauthorized_mean_and_best(quickstart):
    _, frame = quickstart
    twins = [frame[frame.role == "unauthorized"].assign(model=lambda f, c=copy: f.model + f"_{c}") for copy in range(2)]
    many = pd.concat([frame, *twins])  # 6 models and 12 unauthorized twins
    models = sorted(many.model.unique())
    figure = accuracy_vs_strength_figure(many, models, "accuracy")
    panel = next(axis for axis in figure.axes if axis.get_title() == "patch, authorized resnet")
    assert len(series(panel)) == 3
    assert [text.get_text() for text in figure.legends[0].get_texts()][2:] == [
        "unauthorized mean",
        "best unauthorized model",
    ]


def test_the_same_cells_give_the_same_png_bytes(quickstart, tmp_path):
    _, frame = quickstart
    first = save(
        transfer_heatmap_figure(frame, QUICKSTART_MODELS, "accuracy"), tmp_path / "first" / "transfer_heatmap.png"
    )
    second = save(
        transfer_heatmap_figure(frame, QUICKSTART_MODELS, "accuracy"), tmp_path / "second" / "transfer_heatmap.png"
    )
    assert first.read_bytes() == second.read_bytes()


def test_security_curves_plot_each_tier_against_each_budget_with_clean_and_break_lines(figures, ladder):
    figure = figures["security_curves"]
    panels = [axis for axis in figure.axes if axis.get_subplotspec() is not None]
    assert [axis.get_title().replace("\n", " ") for axis in panels] == [
        "mean over unauthorized models by NEs used",
        "best unauthorized model by NEs used",
        "mean over unauthorized models by public clean images used",
        "best unauthorized model by public clean images used",
    ]
    assert [" ".join(axis.get_xlabel().split()) for axis in panels[:1]] == [
        "NEs used (released + labelled) (count, log)"
    ]
    assert panels[0].get_ylabel().splitlines() == ["patch 20 dB", "unauthorized top-1 accuracy (%)"]
    assert len(series(panels[0])) == 5  # none, method, architecture, white box, labelled NEs
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend[:5] == ["tier: none", "tier: method", "tier: architecture", "tier: white_box", "tier: labelled_nes"]
    cells, frame = ladder
    clean = frame[(frame.encoder == "clean") & frame.baseline]
    authorized = 100 * clean[clean.model == "a"].accuracy.mean()
    target = 100 * 0.9 * clean[clean.role == "unauthorized"].accuracy.mean()
    levels = sorted(
        line.get_ydata()[0]
        for line in panels[0].get_lines()
        if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2
    )
    assert levels == pytest.approx(sorted([authorized, target]))


def test_security_curves_need_a_budget_sweep(quickstart):
    cells, frame = quickstart
    assert security_curves_figures(frame, "accuracy") == {}  # no tiers
    plain = [c for c in ladder_cells() if c.attack in ("identity", "blur", "oracle_projection")]  # every budget 0
    assert security_curves_figures(results_frame(plain), "accuracy") == {}


@pytest.mark.slow
def test_the_leaderboard_writes_the_security_curves_beside_the_other_plots(ladder, tmp_path):
    cells, _ = ladder
    paths = write_leaderboard("ladder", cells, MODELS, tmp_path)
    names = {path.name for path in paths if path.suffix == ".png"}
    assert {"accuracy_vs_strength.png", "transfer_heatmap.png", "attack_curves.png", "security_curves_a.png"} <= names
    assert "knowledge tier" in read_caption(tmp_path / "security_curves_a.png")
    untiered = [cell.model_copy(update={"tier": None}) for cell in cells]  # cells of stores written before tiers
    assert write_plots(results_frame(untiered), MODELS, "accuracy", tmp_path / "without")
    assert not list((tmp_path / "without").glob("security_curves*.png"))


def bound_frame() -> pd.DataFrame:
    """Identity cells with bound numbers (the results frame's columns that theory reads): authorized 'a', unauthorized
    'b', 'c', 'd', a patch and a reference release."""
    records = []
    for model, misalignment in (("a", 0.0), ("b", 0.2), ("c", 0.4), ("d", 0.6)):
        role = "authorized" if model == "a" else "unauthorized"
        records.append(
            {
                "baseline": True,
                "authorized": "a",
                "encoder": "clean",
                "strength": 0.0,
                "model": model,
                "role": role,
                "accuracy": 0.9,
                "bounds": {},
            }
        )
        for encoder, strength in (("patch", 10.0), ("patch", 20.0), ("reference", 15.0)):
            bounds = {
                "bound/misalignment": misalignment,
                "bound/unauth_layer_pred": 1 + misalignment,
                "bound/unauth_layer_obs_patch": 1.1 + misalignment,
            }
            accuracy = 0.9 if model == "a" else 0.9 - misalignment
            records.append(
                {
                    "baseline": True,
                    "authorized": "a",
                    "encoder": encoder,
                    "strength": strength,
                    "model": model,
                    "role": role,
                    "accuracy": accuracy,
                    "bounds": bounds,
                }
            )
    return pd.DataFrame(records).assign(position=range(len(records)))


def test_theory_plots_share_the_style_and_facet_by_encoder(tmp_path, monkeypatch):
    from nonxfer_bench.rendering import theory
    from nonxfer_bench.rendering.theory import write_theory_plots

    built = {}

    def keep(figure, path):
        built[path.name] = (
            figure,
            [text.get_fontsize() for text in texts(figure)],
            [axis.get_legend_handles_labels()[1] for axis in figure.axes],
        )
        return save(figure, path)

    monkeypatch.setattr(theory, "save", keep)
    paths = write_theory_plots(bound_frame(), tmp_path)
    assert [path.name for path in paths] == ["theory_pred_vs_obs.png", "theory_misalignment_vs_drop.png"]
    for path in paths:
        figure, sizes, legends = built[path.name]
        assert min(sizes) >= FONT_SIZE and all(len(labels) <= MAX_SERIES for labels in legends)
        with Image.open(path) as image:
            assert image.info["dpi"] == pytest.approx((DPI, DPI), abs=0.5)
        assert read_caption(path) == figure.get_label() and len(figure.get_label().split()) > 10
    misalignment, _, legends = built["theory_misalignment_vs_drop.png"]
    assert [axis.get_title() for axis in misalignment.axes] == ["patch, authorized a", "reference, authorized a"]
    assert legends == [["patch 10 dB", "patch 20 dB"], ["reference 15 dB nominal"]]


def test_the_html_report_captions_each_plot_with_its_own_caption(ladder, tmp_path):
    from nonxfer_bench.rendering.report import write_report

    cells, _ = ladder
    index, _ = write_report("ladder", cells, MODELS, [], tmp_path)
    page = index.read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    expected = [html.escape(read_caption(path)) for path in sorted(tmp_path.glob("*.png"))]
    assert sorted(captions) == sorted(expected) and all(
        " " in caption for caption in captions
    )  # sentences, not file names


def many_releases() -> list:
    """The ladder's patch release at ten strengths (10 to 19 dB): more releases of one authorized model than a page
    holds."""
    cells = ladder_cells()
    patch = [cell for cell in cells if cell.encoder == "patch"]
    copies = [
        cell.model_copy(update={"strength": float(s), "key": f"{cell.key}-{s}", "group": f"g-{s}"})
        for s in range(10, 20)
        for cell in patch
    ]
    return [cell for cell in cells if cell.encoder == "clean"] + copies


def panels(figure) -> list:
    return [axis for axis in figure.axes if axis.get_visible() and axis.get_subplotspec() is not None]


@pytest.mark.slow
def test_security_curves_are_pages_of_at_most_four_releases_and_a_bounded_height(tmp_path):
    pages = security_curves_figures(results_frame(many_releases()), "accuracy")
    assert list(pages) == ["security_curves_a_1.png", "security_curves_a_2.png", "security_curves_a_3.png"]
    shown, limits = [], set()
    for name, figure in pages.items():
        rows = [axis.get_ylabel().splitlines()[0] for axis in panels(figure) if axis.get_subplotspec().is_first_col()]
        assert 1 <= len(rows) <= RELEASES_PER_PAGE and len(panels(figure)) <= 16
        assert f"(page {name[-5]} of 3)" in figure.get_label()
        shown += rows
        limits.add(
            tuple((axis.get_xlim(), axis.get_ylim()) for axis in panels(figure)[:4])
        )  # every page: the same axes
        path = save(figure, tmp_path / name)
        with Image.open(path) as image:
            assert image.height <= 2500 and image.width <= 2500  # at the DPI used
    assert shown == [f"patch {s} dB" for s in range(10, 20)]  # each release once, in order
    assert len(limits) == 1


def single_point_figures(ladder) -> dict:
    """Figures where series have one x: a release of one strength, attacks of one step, tiers seen at one budget."""
    _, frame = ladder
    many = results_frame(many_releases())
    return {
        "accuracy_vs_strength": accuracy_vs_strength_figure(frame, MODELS, "accuracy"),
        "attack_curves": attack_curves_figure(frame, "accuracy"),
        "security_curves": next(
            iter(
                security_curves_figures(
                    many[(many.attack != "patch_mean") & (many.attack != "subspace_patch")], "accuracy"
                ).values()
            )
        ),
    }


def test_a_series_of_one_point_is_a_point_with_its_interval_never_a_lone_line(ladder):
    checked = 0
    for name, figure in single_point_figures(ladder).items():
        for axis in panels(figure):
            for container in axis.containers:
                line, _, bars = container.lines
                if len(line.get_xdata()) == 1:
                    assert line.get_marker() not in ("", " ", "None", None) and line.get_linestyle() == "None", name
                    (segment,) = bars[0].get_segments()
                    assert segment[1][1] > segment[0][1], f"{name}: a point without its interval"
                    checked += 1
            for line in axis.get_lines():
                assert len(line.get_xdata()) != 1 or line.get_marker() not in ("", " ", "None", None), (
                    f"{name}: a lone line of one point"
                )
    assert checked > 20


def test_a_release_of_one_strength_is_a_dot_plot_of_the_models(ladder):
    _, frame = ladder
    figure = accuracy_vs_strength_figure(frame, MODELS, "accuracy")
    (panel,) = panels(figure)  # the patch release at 20 dB
    assert panel.get_title() == "patch 20 dB, authorized a" and panel.get_xlabel() == "evaluated model"
    assert [tick.get_text() for tick in panel.get_xticklabels()] == MODELS
    lines = [container.lines[0] for container in panel.containers]
    plain = frame[frame.baseline & (frame.encoder == "patch")]
    assert [list(line.get_xdata()) for line in lines] == [[0], [1], [2]]  # a model per category
    assert [line.get_ydata()[0] for line in lines] == pytest.approx(
        [100 * plain[plain.model == model].accuracy.mean() for model in MODELS]
    )


def test_attack_steps_of_one_strength_are_one_point_each_never_pooled(ladder):
    _, frame = ladder
    figure = attack_curves_figure(frame, "accuracy")
    grid = panels(figure)
    column = [axis.get_title() for axis in grid if axis.get_subplotspec().is_first_row()].index("patch_mean")
    panel = next(
        axis for axis in grid if axis.get_subplotspec().is_last_row() and axis.get_subplotspec().colspan.start == column
    )
    assert [tick.get_text() for tick in panel.get_xticklabels()] == ["100, 1", "2000, 10", "2000, 100"]
    assert panel.get_xlabel() == "public, released"  # the budgets that tell the three steps apart
    hollow = [
        container.lines[0] for container in panel.containers if container.lines[0].get_markerfacecolor() == "none"
    ]
    (unauthorized,) = hollow  # one encoder strength: the unauthorized mean, one point per step
    attacked = frame[(frame.attack == "patch_mean") & (frame.encoder == "patch") & (frame.role == "unauthorized")]
    means = [100 * attacked[attacked.nes == released].accuracy.mean() for released in (1, 10, 100)]
    assert list(unauthorized.get_ydata()) == pytest.approx(means) and len(set(unauthorized.get_xdata())) == 3


@pytest.mark.slow
def test_no_two_texts_of_a_figure_overlap(figures, ladder, quickstart):
    built = {**figures, **{f"{name} (one point)": figure for name, figure in single_point_figures(ladder).items()}}
    _, frame = quickstart
    renamed = frame.replace(
        {"authorized": {"resnet": "resnet_deep_distilled_twin"}, "model": {"resnet": "resnet_deep_distilled_twin"}}
    )  # long panel titles
    built["accuracy_vs_strength (long names)"] = accuracy_vs_strength_figure(
        renamed, [*QUICKSTART_MODELS, "resnet_deep_distilled_twin"], "accuracy"
    )
    for name, figure in built.items():
        canvas = FigureCanvasAgg(figure)  # a figure saved by another test is closed: draw it on a canvas of its own
        canvas.draw()
        renderer = canvas.get_renderer()
        hidden = {
            id(label)
            for axes in figure.axes
            for axis in (axes.xaxis, axes.yaxis)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks()
            for label in (tick.label1, tick.label2)
            if not min(axis.get_view_interval()) <= tick.get_loc() <= max(axis.get_view_interval())
        }
        boxes = [
            (text.get_text(), text.get_window_extent(renderer)) for text in texts(figure) if id(text) not in hidden
        ]  # what is drawn
        for index, (first, box) in enumerate(boxes):
            for second, other in boxes[index + 1 :]:
                assert not box.overlaps(other), f"{name}: {first!r} overlaps {second!r}"


def test_the_caption_says_when_a_marker_hides_an_interval_and_only_then():
    with styled() as plt:
        figure, (wide, narrow) = plt.subplots(1, 2, sharey=True, layout="constrained")
        wide.set_ylim(-3, 103)
        errorbar(wide, [0, 1], [40, 60], [10, 10], [10, 10])  # 20 points of a 103-point axis: past the marker
        errorbar(narrow, [0], [50], [15], [15])
        assert intervals_note(figure) == "error bars: 95% intervals"
        errorbar(narrow, [1, 2], [50, 70], [0.2, 15], [0.1, 15])  # one interval of 0.3 points: under its marker
        assert intervals_note(figure) == "error bars: 95% intervals (some narrower than their marker, which hides them)"
        plt.close(figure)
