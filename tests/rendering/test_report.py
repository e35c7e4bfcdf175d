"""The HTML report's sample images: one grid per release (its first seed's), captioned with what each row is and its
PSNR; without grids (a fresh clone with only committed results) one sentence that says so and how to recompute them."""

from __future__ import annotations

import html
import re

from PIL import Image

from nonxfer_bench.rendering.provenance import Source
from nonxfer_bench.rendering.report import SampleGrid, write_report
from tests.synthetic import MODELS, ladder_cells

PSNR = {"blur": 24.04, "patch_mean": 30.0, "subspace_patch": 18.0, "finetune": None, "oracle_projection": 41.0}


def measured_cells() -> list:
    """The ladder's clean and patch releases with attacked PSNR (patch_mean's three budgets at 30, 31 and 32 dB), and
    the patch release's seed 1 as a group of its own."""
    cells = []
    for index, cell in enumerate(ladder_cells()):
        psnr = PSNR.get(cell.attack)
        psnr = (
            psnr + cell.budget_released % 7 if cell.attack == "patch_mean" else psnr
        )  # budgets 1, 10, 100: +1, +3, +2 dB
        cells.append(cell.model_copy(update={"attacked_psnr": psnr, "key": f"{cell.key}-{index}"}))
    seed_one = [
        cell.model_copy(update={"seed": 1, "group": "g-patch-seed1", "key": cell.key + "-seed1"})
        for cell in cells
        if cell.encoder == "patch"
    ]
    return cells + seed_one


def grid(tmp_path, name: str, shade: int) -> SampleGrid:
    path = tmp_path / "grids" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    Image.new("L", (40, 30), shade).save(path)
    return SampleGrid(f"a/{name}/seed0", f"g-{name}", path)


def figures(page: str) -> list[tuple[str, str]]:
    return [
        (source, html.unescape(caption))
        for source, caption in re.findall(r'<img src="(samples/[^"]+)".*?<figcaption>(.*?)</figcaption>', page)
    ]


def test_without_sample_grids_the_report_says_so_in_one_sentence_with_the_command_that_recomputes_them(tmp_path):
    index, shown = write_report(
        "ladder", ladder_cells(), MODELS, [], tmp_path, source=Source(suite_file="suites/ladder.yaml")
    )
    page = index.read_text()
    section = page.split("<h2>Sample images</h2>")[1].split("<script>")[0]
    (sentence,) = re.findall(r"<p>(.*?)</p>", section)
    assert shown == 0 and not figures(page) and not (tmp_path / "samples").exists()
    assert sentence.startswith("No sample images") and sentence.count(". ") == 0 and sentence.endswith(".")
    assert "<code>nonxfer-bench report suites/ladder.yaml --samples</code>" in sentence


def test_one_grid_per_release_its_first_seed_captioned_with_its_rows_and_their_psnr(tmp_path):
    cells = measured_cells()
    seed_one = SampleGrid("a/patch@20/seed1", "g-patch-seed1", grid(tmp_path, "patch-seed1", 200).path)
    grids = [
        seed_one,
        grid(tmp_path, "patch", 100),
        grid(tmp_path, "clean", 50),
        grid(tmp_path, "nocells", 10),
    ]  # no cells: not shown
    index, shown = write_report("ladder", cells, MODELS, grids, tmp_path / "report")
    shown_figures = figures(index.read_text())
    assert shown == 2 and [source for source, _ in shown_figures] == [
        "samples/a_clean_seed0.png",
        "samples/a_patch_seed0.png",
    ]
    assert (tmp_path / "report" / "samples" / "a_patch_seed0.png").read_bytes() == grids[
        1
    ].path.read_bytes()  # seed 0's, not seed 1's
    clean, patch = (caption for _, caption in shown_figures)
    assert "the clean images again (no encoding)" in clean
    assert patch.startswith(
        "a: patch 20, seed 0. Rows, top to bottom: the clean images; the released images, patch 20 (20.0 dB); "
    )
    assert "blur@0.5: 24.0 dB" in patch and "oracle_projection@1: 41.0 dB" in patch and "finetune@1: inf dB" in patch
    assert "patch_mean@1: 31.0 to 33.0 dB" in patch  # three budgets share one row: their range
    assert "subspace_patch@0.75: 18.0 dB" in patch and "identity" not in patch  # the no-attack step is no row
    assert patch.endswith("mean over the run's 200 images.")


def test_a_recomputed_grid_says_so_and_captions_only_the_rows_it_has(tmp_path):
    cells = measured_cells()
    recomputed = SampleGrid(
        "a/patch@20/seed0", "g-patch", grid(tmp_path, "patch", 100).path, images=8, rows=("clean", "patch", "blur@0.5")
    )
    index, _ = write_report("ladder", cells, MODELS, [recomputed], tmp_path / "report")
    ((_, caption),) = figures(index.read_text())
    assert "recomputed on 8 images by `nonxfer-bench report --samples`" in caption
    assert "(blur@0.5: 24.0 dB)" in caption and "finetune" not in caption
