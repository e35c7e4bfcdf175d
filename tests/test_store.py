"""The cell store: durable appends, and a torn last line from a killed writer is dropped, not fatal."""

from nonxfer_bench.execution.store import CellStore


def test_cells_survive_reopening(tmp_path):
    store = CellStore(tmp_path / "cells.jsonl")
    store.add([{"key": "a", "accuracy": 0.5}, {"key": "b", "accuracy": 1.0}])
    again = CellStore(tmp_path / "cells.jsonl")
    assert again.cells == {"a": {"key": "a", "accuracy": 0.5}, "b": {"key": "b", "accuracy": 1.0}}


def test_a_torn_final_line_is_dropped_and_the_file_stays_appendable(tmp_path):
    path = tmp_path / "cells.jsonl"
    CellStore(path).add([{"key": "a", "accuracy": 0.5}])
    with open(path, "a") as handle:
        handle.write('{"key": "b", "accur')
    store = CellStore(path)
    assert set(store.cells) == {"a"}
    store.add([{"key": "c", "accuracy": 0.1}])
    assert set(CellStore(path).cells) == {"a", "c"}
