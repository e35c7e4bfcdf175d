"""``site``: every bundle of a results folder merged into one static page in the HTML report's style, one row per
release with its protection gap linked to its bundle, rendered in headless Chromium; folders that are no bundle, or
whose files no longer match their manifest, add no row and are listed apart."""

from __future__ import annotations

import re
import shutil

import pytest

from nonxfer_bench.cli import main
from tests.bundles.tiny import tiny_bundle
from tests.test_dashboards import browser  # noqa: F401 - the headless Chromium fixture


def ranking(board: str) -> dict[str, str]:
    """encoding -> the gap with no knowledge (the tiny suites' attacks are all of tier none), from a leaderboard.md's
    protocol verdict."""
    section = board.split("## Protocol verdict", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[header.index("encoding")]: row[header.index("gap: none")] for row in rows[1:]}


@pytest.mark.slow
def test_the_site_of_every_bundle_renders_in_chromium_with_rows_linked_to_their_bundles(digits_zoo, browser, tmp_path):  # noqa: F811
    project = tmp_path / "project"
    first = tiny_bundle(project, digits_zoo)
    second = tiny_bundle(project, digits_zoo, name="tiny-gauss", encoders=[{"name": "gaussian", "strengths": [20.0]}])
    edited = shutil.copytree(first, project / "results" / "tiny-edited")
    (edited / "leaderboard.md").write_text(
        (edited / "leaderboard.md").read_text().replace("| 1 | vit_a |", "| 1 | vit_b |")
    )
    unbundled = shutil.copytree(second, project / "results" / "tiny-unbundled")
    (unbundled / "BUNDLE.json").unlink()
    (project / "results" / "notes").mkdir()  # a folder without results: not listed at all
    out = tmp_path / "site"
    assert main(["site", str(project / "results"), "--out", str(out)]) == 0
    assert main(["site", str(project / "results"), "--out", str(out)]) == 0  # its own folder: replaced

    page = browser.new_page()
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector("h1")
    assert page.inner_text("h1") == "Leaderboard of bundles"
    releases = page.locator("table").first
    header = [text.strip() for text in releases.locator("th").all_inner_texts()]
    assert header[:6] == ["suite", "dataset", "protocol", "rank", "authorized", "encoding"] and "gap: none" in header
    rows = releases.locator("tbody tr")
    assert rows.count() == 3  # patch 10 and reference 20 of tiny, gaussian 20 of tiny-gauss
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        link = rows.nth(i).locator("td a").first
        bundle = {"tiny": first, "tiny-gauss": second}[link.inner_text()]
        assert link.evaluate("a => a.href") == bundle.as_uri() + "/"
        assert cells[1] == "digits test (60 images)"
        assert cells[2] == "not a protocol verdict"  # the tiny suites run their own attacks only
        shown[(link.inner_text(), cells[header.index("encoding")])] = cells[header.index("gap: none")]
    expected = {
        (bundle.name, encoding): gap
        for bundle in (first, second)
        for encoding, gap in ranking((bundle / "leaderboard.md").read_text()).items()
    }
    assert shown == expected
    assert all(re.fullmatch(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]( broken)?", gap) for gap in shown.values())
    bundles = page.locator("xpath=//h2[.='Bundles']/following-sibling::table[1]")
    assert bundles.locator("tbody tr td:first-child").all_inner_texts() == ["tiny", "tiny-gauss"]
    left_out = page.locator("xpath=//h2[.='Left out']/following-sibling::ul[1]").inner_text()
    assert (
        "tiny-edited: its files do not match BUNDLE.json: leaderboard.md: its sha256 is not the one BUNDLE.json records"
        in left_out
    )
    assert "tiny-unbundled: no BUNDLE.json" in left_out and "notes" not in left_out
    column = header.index("gap: none")
    releases.locator("th").nth(column).click()
    values = [
        float(text.split(" ")[0]) for text in releases.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
    ]
    assert values == sorted(values)
    page.close()
