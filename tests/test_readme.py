"""The README and the docs' glossary and numbers hold: a newcomer reads any leaderboard with the glossary alone."""

import csv
import re
from pathlib import Path

import pandas as pd
import pytest

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.rendering.tables import attack_table, effect_table
from nonxfer_bench.rendering.verdict import verdict_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GLOSSARY = (
    (ROOT / "docs" / "tutorial" / "leaderboard.md")
    .read_text()
    .split("\n## Reading a leaderboard: the columns\n")[1]
    .split("\n## ")[0]
)
PSNR_PAGE = (ROOT / "docs" / "concepts" / "psnr.md").read_text()
QUICKSTART = ROOT / "results" / "quickstart"


def _explained() -> set[str]:
    """Every backticked name in the glossary."""
    return set(re.findall(r"`([^`]+)`", GLOSSARY))


def _table_headers(markdown: str) -> list[str]:
    """The header cells of every table in ``markdown``."""
    lines = markdown.splitlines()
    return [
        cell.strip()
        for i, line in enumerate(lines[:-1])
        if line.startswith("|") and lines[i + 1].startswith("|---")
        for cell in line.strip("|").split("|")
    ]


def _quickstart_frame() -> pd.DataFrame:
    """The committed quickstart cells as the results frame, with a second seed and a bf16 run on a GPU so the seed,
    precision and device columns appear."""
    cells = list(CellStore(results_cells(QUICKSTART), writable=False).cells.values())
    seed = [cell.model_copy(update={"seed": cell.seed + 1, "key": cell.key + "-seed"}) for cell in cells]
    bf16 = [
        cell.model_copy(update={"precision": "bf16", "device": "cuda", "key": cell.key + "-bf16"}) for cell in cells
    ]
    return results_frame(cells + seed + bf16)


@pytest.mark.slow
def test_the_glossary_explains_every_column_the_leaderboard_and_cells_csv_have():
    frame = _quickstart_frame()
    models = set(frame["model"])
    ranking = verdict_table(verdicts(frame), frame, "accuracy")
    produced = (
        set(effect_table(frame, sorted(models)).columns) | set(attack_table(frame).columns) | set(ranking.columns)
    )  # what the code writes now
    committed = set(
        _table_headers((QUICKSTART / "leaderboard.md").read_text().split("## Theory")[0])
    )  # the Theory table explains itself
    with open(QUICKSTART / "cells.csv") as handle:
        columns = (produced | committed | set(next(csv.reader(handle)))) - models
    assert columns - _explained() == set()


def test_the_psnr_conversion_examples_are_the_committed_fashion_full_numbers():
    psnr: dict[tuple[str, float], list[float]] = {}
    with open(ROOT / "results" / "fashion-full" / "cells.csv") as handle:
        for row in csv.DictReader(handle):
            if row["encoder"] == "reference" and row["attack"] == "identity":
                psnr.setdefault((row["authorized"], float(row["strength"])), []).append(float(row["encoded_psnr"]))
    psnr = {key: sum(values) / len(values) for key, values in psnr.items()}  # the mean over NE keys (seeds) and models
    text = " ".join(PSNR_PAGE.split())
    assert (
        f"{psnr[('resnet', 0.0)]:.1f} dB for the Fashion zoo's `resnet`, {psnr[('vit_a', 0.0)]:.1f} dB for `vit_a`"
        in text
    )
    assert f"at nominal 30: {psnr[('resnet', 30.0)]:.1f} and {psnr[('vit_a', 30.0)]:.1f} dB" in text


def test_the_fast_subset_the_readme_names_exists():
    assert "pytest -m 'not slow'" in README
    import tomllib

    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(marker.startswith("slow:") for marker in markers)
    assert any("@pytest.mark.slow" in path.read_text() for path in (ROOT / "tests").glob("test_*.py"))


def test_the_readme_is_short_and_its_headline_quotes_the_findings():
    assert len(README.splitlines()) < 200
    headline = " ".join(README.split("\n## Headline result\n")[1].split("\n## ")[0].split())
    findings = " ".join((ROOT / "results" / "FINDINGS.md").read_text().split())
    intervals = re.findall(r"[-+]?\d+\.\d \[[-+]?\d+\.\d, [-+]?\d+\.\d\]", headline)
    assert len(intervals) >= 7 and [interval for interval in intervals if interval not in findings] == []
    assert [number for number in re.findall(r"\d+\.\d+", headline) if number not in findings] == []
    assert "n = 10,000" in headline and "results/FINDINGS.md" in headline
