"""``verdict.png``: the protocol verdict drawn as a release x knowledge-tier matrix, captioned with what it rests on."""

from __future__ import annotations

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.rendering.figures import read_caption
from nonxfer_bench.rendering.verdict_plot import FILE, _needed, write_verdict_plot
from tests.rendering.test_ranking import CLEAN, STRONG, WEAK, N, release


def frame_of(*releases: list) -> object:
    return results_frame([cell for cells in releases for cell in cells])


def test_the_matrix_is_written_with_its_caption_and_the_same_cells_give_the_same_bytes(tmp_path):
    frame = frame_of(release("clean", 0.0, CLEAN), release("patch", 20.0, STRONG), release("gaussian", 10.0, WEAK))
    first = write_verdict_plot(frame, tmp_path / "one")
    second = write_verdict_plot(frame, tmp_path / "two")
    assert [p.name for p in first] == [FILE]
    assert first[0].read_bytes() == second[0].read_bytes()
    text = read_caption(first[0])
    assert (
        "not a protocol verdict" in text and f"n = {N - N // 5} report images" in text and "95 % intervals" in text
    )  # a fifth tunes


def test_no_release_with_a_verdict_writes_no_matrix(tmp_path):
    assert write_verdict_plot(frame_of(release("clean", 0.0, CLEAN)), tmp_path) == []
    assert not (tmp_path / FILE).exists()


def test_tiers_above_the_breaking_one_are_not_needed_and_the_others_are():
    broken = {
        ("identity", "a"): 0.9,
        ("identity", "b"): 0.9,
        ("blur", "a"): 0.9,
        ("blur", "b"): 0.9,
    }  # b as good as clean
    found = verdicts(frame_of(release("clean", 0.0, CLEAN), release("patch", 20.0, broken)))
    assert found[0].broken_at == "none"
    assert _needed(found[0], "none") and not _needed(found[0], "method") and not _needed(found[0], "white_box")
    held = verdicts(frame_of(release("clean", 0.0, CLEAN), release("patch", 20.0, STRONG)))[0]
    assert held.broken_at is None and _needed(held, "labelled_nes") and _needed(held, "white_box")


def test_a_matrix_cut_to_its_row_limit_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("nonxfer_bench.rendering.verdict_plot.MAX_ROWS", 1)
    frame = frame_of(release("clean", 0.0, CLEAN), release("patch", 20.0, STRONG), release("gaussian", 10.0, WEAK))
    [path] = write_verdict_plot(frame, tmp_path)
    assert "the first 1 of 2 releases (leaderboard.md ranks them all)" in read_caption(path)
