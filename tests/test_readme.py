"""The README's glossary and numbers hold for the committed results: a newcomer reads any leaderboard with it alone."""

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GLOSSARY = README.split("### Reading a leaderboard: the columns")[1].split("\n## ")[0].split("\nThe report folder")[0]
QUICKSTART = ROOT / "results" / "quickstart"


def _explained() -> set[str]:
    """Every backticked name in the glossary tables' first column and in its prose."""
    return set(re.findall(r"`([^`]+)`", GLOSSARY))


def _table_headers(markdown: str) -> list[str]:
    """The header cells of every table in ``markdown``."""
    lines = markdown.splitlines()
    return [cell.strip() for i, line in enumerate(lines[:-1]) if line.startswith("|") and lines[i + 1].startswith("|---")
            for cell in line.strip("|").split("|")]  # fmt: skip


def test_the_glossary_explains_every_column_of_the_committed_leaderboard_and_cells_csv():
    board = (QUICKSTART / "leaderboard.md").read_text().split("## Theory")[0]  # the Theory table explains itself
    with open(QUICKSTART / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    models = {row["model"] for row in cells}
    columns = {column for column in _table_headers(board) if column not in models} | set(cells[0])
    assert columns - _explained() == set()


def test_the_psnr_conversion_examples_are_the_committed_quickstart_numbers():
    with open(QUICKSTART / "cells.csv") as handle:
        psnr = {(row["authorized"], float(row["strength"])): float(row["encoded_psnr"]) for row in csv.DictReader(handle)
                if row["encoder"] == "reference" and row["attack"] == "identity"}  # fmt: skip
    text = " ".join(README.split())
    assert f"{psnr[('resnet', 0.0)]:.1f} dB for the quickstart `resnet`, {psnr[('vit_a', 0.0)]:.1f} dB for `vit_a`" in text
    assert f"at nominal 30: {psnr[('resnet', 30.0)]:.1f} and {psnr[('vit_a', 30.0)]:.1f} dB" in text


def test_the_fast_subset_the_readme_names_exists():
    assert "pytest -m 'not slow'" in README
    assert 'markers = ["slow:' in (ROOT / "pyproject.toml").read_text()
    assert any("@pytest.mark.slow" in path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
