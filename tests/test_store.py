"""The cell store: durable appends, and a torn last line from a killed writer is dropped, not fatal."""

from nonxfer_bench.execution.store import CellStore


def cell(key: str, accuracy: float) -> dict:
    """A finished cell with the fields every reader relies on (the store refuses lines without them)."""
    return {
        "key": key, "group": "g", "authorized": "a", "encoder": "patch", "strength": 10.0, "seed": 0, "attack": "identity",
        "attack_strength": 1.0, "model": "m", "role": "unauthorized", "n": 4, "accuracy": accuracy, "agreement": 1.0,
    }


def test_cells_survive_reopening(tmp_path):
    store = CellStore(tmp_path / "cells.jsonl")
    store.add([cell("a", 0.5), cell("b", 1.0)])
    again = CellStore(tmp_path / "cells.jsonl")
    assert again.cells == {"a": cell("a", 0.5), "b": cell("b", 1.0)}


def test_a_torn_final_line_is_dropped_and_the_file_stays_appendable(tmp_path):
    path = tmp_path / "cells.jsonl"
    CellStore(path).add([cell("a", 0.5)])
    with open(path, "a") as handle:
        handle.write('{"key": "b", "accur')
    store = CellStore(path)
    assert set(store.cells) == {"a"}
    store.add([cell("c", 0.1)])
    assert set(CellStore(path).cells) == {"a", "c"}
