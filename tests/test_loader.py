"""The prefetching loader: the same batches as slicing, read ahead in a thread that never outlives the consumer."""

import threading

import pytest
import torch

from nonxfer_bench.execution.loader import prefetch_batches


def images(count: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nxb-prefetch"]


def test_batches_equal_the_float_images_in_order():
    data = images()
    batches = list(prefetch_batches(data, 4, torch.device("cpu")))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), data.float() / 255.0)
    assert not prefetch_threads()


def test_stopping_early_ends_the_reading_thread():
    for batch in prefetch_batches(images(100), 4, torch.device("cpu"), depth=1):
        break
    assert len(batch) == 4 and not prefetch_threads()


class Failing:
    """Reads two batches, then the disk fails."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: slice) -> torch.Tensor:
        if index.start >= 8:
            raise OSError(5, "Input/output error", "cache.npy")
        return images(12)[index]


def test_a_read_error_reaches_the_consumer():
    seen = []
    with pytest.raises(OSError, match="Input/output error"):
        for batch in prefetch_batches(Failing(), 4, torch.device("cpu")):
            seen.append(batch)
    assert len(seen) == 2 and not prefetch_threads()


@pytest.mark.cuda
def test_pinned_batches_reach_the_gpu_equal():
    data = images()
    batches = list(prefetch_batches(data, 4, torch.device("cuda")))
    assert all(b.is_cuda for b in batches)
    assert torch.equal(torch.cat(batches).cpu(), data.float() / 255.0)
