"""Batch-size back-off: a forward that runs out of memory is retried on smaller chunks, along timm's steps."""

from __future__ import annotations

import pytest
import torch

from nonxfer_bench.execution.backoff import BatchBackOff


def fits_in(limit: int, calls: list[int]):
    def function(chunk: torch.Tensor) -> torch.Tensor:
        calls.append(len(chunk))
        if len(chunk) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk)} images")
        return chunk * 2

    return function


def test_an_out_of_memory_batch_is_split_into_chunks_that_fit_and_the_size_is_remembered(capsys):
    backoff, calls, batch = BatchBackOff(), [], torch.arange(64.0)
    assert torch.equal(backoff("m", fits_in(20, calls), batch), batch * 2)
    assert calls == [
        64,
        48,
        32,
        24,
        16,
        16,
        16,
        16,
    ]  # timm's decay_batch_step; each failing size fails on its first chunk
    assert backoff.sizes == {"m": 16} and "m: out of memory at batch 64, retrying with 48" in capsys.readouterr().err
    calls.clear()
    backoff("m", fits_in(20, calls), batch)
    assert calls == [16] * 4  # later batches start at the size that fitted
    calls.clear()
    backoff("other", fits_in(100, calls), batch)
    assert calls == [64]  # per model


def test_other_errors_and_memory_that_never_fits_are_raised():
    backoff = BatchBackOff()
    with pytest.raises(ValueError):
        backoff("m", lambda chunk: (_ for _ in ()).throw(ValueError("a bug")), torch.ones(8))
    with pytest.raises(torch.OutOfMemoryError):
        backoff("m", fits_in(0, []), torch.ones(8))
