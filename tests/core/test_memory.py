"""Freed memory goes back to the system between batches, without changing how allocations are made."""

from nonxfer_bench.core import memory


def test_the_heap_is_trimmed_through_glibc_where_there_is_one(monkeypatch):
    calls = []

    class Libc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(memory, "_libc", lambda: Libc())
    memory.return_freed_memory()
    assert calls == [0]


def test_without_glibc_nothing_happens(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    memory.return_freed_memory()  # no error: another C library keeps its own policy


def test_a_group_returns_freed_memory_after_every_batch(tmp_path, digits_zoo, monkeypatch):
    from nonxfer_bench.execution import group
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite
    from tests.helpers import digits_suite

    calls = []
    monkeypatch.setattr(group, "return_freed_memory", lambda: calls.append(1))
    suite = load_suite(
        digits_suite(tmp_path, digits_zoo, encoders=[{"name": "patch", "strengths": [0.0]}])
    )  # 120 images, batch 50
    Runner(suite).run()
    assert len(calls) == 2 * 3  # two groups (clean, patch 0) of three batches each
