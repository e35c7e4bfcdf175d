"""The cell store: durable appends of typed cells, old (schema 1) stores still readable, damaged lines refused."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonxfer_bench.cells.cell import SCHEMA, Cell, Outcomes, pack_bits
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.core.errors import UserError


def cell(key: str, accuracy: float, attack: str = "blur", **extra) -> Cell:
    return Cell(key=key, suite="s", group="g", authorized="a", encoder="patch", strength=10.0, seed=0, attack=attack,
                attack_strength=0.5, baseline=attack == "identity", model="b", role="unauthorized", n=4,
                accuracy=accuracy, agreement=accuracy, **extra)  # fmt: skip


def test_cells_survive_reopening(tmp_path):
    store = CellStore(tmp_path / "cells.jsonl")
    store.add([cell("a", 0.5), cell("b", 1.0)])
    again = CellStore(tmp_path / "cells.jsonl")
    assert again.cells == {"a": cell("a", 0.5), "b": cell("b", 1.0)}


def test_per_image_outcomes_round_trip_as_packed_bits(tmp_path):
    correct = np.array([True, False, True, True, False])
    outcomes = Outcomes(images=5, ids="x", correct=[pack_bits(correct)], agree=[pack_bits(~correct)])
    CellStore(tmp_path / "cells.jsonl").add([cell("a", 0.6, outcomes=outcomes)])
    read = CellStore(tmp_path / "cells.jsonl").cells["a"].outcomes
    assert read.correct_bits().tolist() == correct.tolist() and read.agree_bits().tolist() == (~correct).tolist()
    assert read.labeled_bits().all()


def test_a_schema_1_store_is_read_with_its_bound_numbers_and_the_identity_as_baseline(tmp_path):
    old = {"key": "k", "suite": "s", "group": "g", "authorized": "a", "encoder": "patch", "strength": 10.0, "seed": 0,
           "attack": "identity", "attack_strength": 1.0, "attack_param": {}, "model": "a", "role": "authorized", "n": 4,
           "accuracy": 0.5, "agreement": 1.0, "encoded_psnr": 9.9, "encoded_psnr_min": 9.8, "storage": "float32",
           "stored_psnr": 9.9, "attacked_psnr": 9.9, "attacked_ssim": 0.2, "draws": 1, "encoder_info": {"k": 3},
           "bound/sigma_s": 0.0}  # fmt: skip
    (tmp_path / "cells.jsonl").write_text(json.dumps(old) + "\n")
    read = CellStore(tmp_path / "cells.jsonl").cells["k"]
    assert read.baseline and read.bounds == {"bound/sigma_s": 0.0} and read.outcomes is None
    assert read.record() == old | {"schema": SCHEMA, "baseline": True}


def test_a_line_with_only_a_key_is_not_a_finished_cell(tmp_path):
    path = tmp_path / "cells.jsonl"
    CellStore(path).add([cell("a", 0.5)])
    with open(path, "a") as handle:
        handle.write('{"key": "b"}\n')
    with pytest.raises(UserError, match=r"cells.jsonl: line 2 is not a finished cell"):
        CellStore(path)


def test_a_torn_final_line_is_dropped_and_the_file_stays_appendable(tmp_path):
    path = tmp_path / "cells.jsonl"
    CellStore(path).add([cell("a", 0.5)])
    with open(path, "a") as handle:
        handle.write('{"key": "b", "accur')
    store = CellStore(path)
    assert set(store.cells) == {"a"}
    store.add([cell("c", 0.1)])
    assert set(CellStore(path).cells) == {"a", "c"}


def test_a_gzipped_copy_reads_as_the_store_and_the_same_cells_give_the_same_bytes(tmp_path):
    from nonxfer_bench.cells.store import gzipped_lines

    cells = [cell("a", 0.5), cell("b", 1.0)]
    (tmp_path / "cells.jsonl.gz").write_bytes(gzipped_lines(cells))
    assert CellStore(tmp_path / "cells.jsonl.gz", writable=False).cells == {"a": cells[0], "b": cells[1]}
    assert gzipped_lines(cells) == gzipped_lines(
        list(cells)
    )  # no time stamp: a rebuilt results folder is unchanged in git
    with pytest.raises(AssertionError, match="read-only"):
        CellStore(tmp_path / "cells.jsonl.gz")


def test_a_damaged_or_oversized_gzipped_store_is_one_line(tmp_path, monkeypatch):
    import gzip

    from nonxfer_bench.cells import store

    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"bad.jsonl.gz: not a readable gzip file .*; restore it from git"):
        CellStore(tmp_path / "bad.jsonl.gz", writable=False)
    (tmp_path / "bomb.jsonl.gz").write_bytes(gzip.compress(b"\n" * 5000))
    monkeypatch.setattr(store, "MAX_STORE_BYTES", 4096)
    with pytest.raises(UserError, match=r"bomb.jsonl.gz: decompresses to more than"):
        CellStore(tmp_path / "bomb.jsonl.gz", writable=False)


def test_a_results_folder_written_before_gzip_is_still_read(tmp_path):
    from nonxfer_bench.cells.results import results_cells

    assert results_cells(tmp_path) == tmp_path / "cells.jsonl.gz"  # where a leaderboard writes
    (tmp_path / "cells.jsonl").write_text("")
    assert results_cells(tmp_path) == tmp_path / "cells.jsonl"
    (tmp_path / "cells.jsonl.gz").write_bytes(b"")
    assert results_cells(tmp_path) == tmp_path / "cells.jsonl.gz"


def test_a_gzipped_copy_with_a_torn_last_line_is_damaged_not_shorter(tmp_path):
    import gzip

    from nonxfer_bench.cells.store import lines

    text = lines([cell("a", 0.5), cell("b", 1.0)])
    (tmp_path / "cells.jsonl.gz").write_bytes(gzip.compress(text[:-20].encode()))  # a results file is written whole
    with pytest.raises(UserError, match=r"cells.jsonl.gz: line 2 is not a finished cell"):
        CellStore(tmp_path / "cells.jsonl.gz", writable=False)


def test_rebuilding_a_results_folder_keeps_its_cells_file_when_the_cells_are_the_same(tmp_path):
    import gzip

    from nonxfer_bench.cells.results import write_results_cells
    from nonxfer_bench.cells.store import lines

    cells = [cell("a", 0.5), cell("b", 1.0)]
    other_zlib = gzip.compress(lines(cells).encode(), compresslevel=1)  # another zlib's bytes for the same text
    (tmp_path / "cells.jsonl.gz").write_bytes(other_zlib)
    write_results_cells(tmp_path / "cells.jsonl.gz", cells)
    assert (tmp_path / "cells.jsonl.gz").read_bytes() == other_zlib  # unchanged: nothing to commit
    write_results_cells(tmp_path / "cells.jsonl.gz", cells[:1])
    assert CellStore(tmp_path / "cells.jsonl.gz", writable=False).cells == {"a": cells[0]}  # other cells: rewritten


def test_a_leaderboard_written_into_the_run_folder_leaves_the_cell_store_alone(tmp_path):
    from nonxfer_bench.rendering.leaderboard import write_leaderboard
    from tests.rendering.test_ranking import CLEAN, MODELS, release

    store = CellStore(tmp_path / "cells.jsonl")  # e.g. `leaderboard --out runs/<suite>`, or output.results = output.dir
    store.add(release("clean", 0.0, CLEAN))
    before = (tmp_path / "cells.jsonl").read_bytes()
    write_leaderboard("s", list(store.cells.values()), MODELS, tmp_path)
    assert (tmp_path / "cells.jsonl").read_bytes() == before and (tmp_path / "cells.jsonl.gz").is_file()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    text=st.lists(st.sampled_from(["", " ", "\t\r", "{}", " x y ", "line"]), max_size=12).map("\n".join),
    piece=st.integers(1, 8),
    gz=st.booleans(),
)
def test_store_lines_are_the_non_blank_lines_whatever_the_piece_size(tmp_path_factory, text, piece, gz):
    """Read in pieces of any size, the lines are those of splitlines (numbered from 1, leading blanks dropped),
    blank ones skipped, and only an unterminated last line is marked so."""
    import gzip

    from nonxfer_bench.cells import store

    data = text.encode()
    path = tmp_path_factory.mktemp("lines") / ("cells.jsonl.gz" if gz else "cells.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    lines = data.split(b"\n")
    expected = [(number, line.lstrip(), True) for number, line in enumerate(lines[:-1], 1) if line.strip()]
    if lines[-1]:
        expected.append((len(lines), lines[-1], False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "PIECE", piece)
        assert list(store.store_lines(path)) == expected
