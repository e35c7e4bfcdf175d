"""The prefetching reader: the same batches as slicing, the next one read ahead, read errors raised to the caller."""

import pytest
import torch

from nonxfer_bench.execution.loader import PrefetchingReader


def images(count: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_batches_equal_the_float_images_in_any_order():
    data = images()
    reader = PrefetchingReader(data, torch.device("cpu"))
    batches = list(reader.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), data.float() / 255.0)
    assert torch.equal(reader.batch(8, 2), data[8:].float() / 255.0)  # random access: not the batch read ahead
    assert torch.equal(reader.batch(0, 3), data[:3].float() / 255.0)
    reader.close()


class Counting:
    """uint8 images that count their reads and fail from index ``fail`` on."""

    def __init__(self, fail: int = 99) -> None:
        self.data, self.reads, self.fail = images(12), [], fail

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: slice) -> torch.Tensor:
        if index.start >= self.fail:
            raise OSError(5, "Input/output error", "cache.npy")
        self.reads.append(index.start)
        return self.data[index]


def test_the_next_batch_is_read_ahead_once():
    source = Counting()
    reader = PrefetchingReader(source, torch.device("cpu"))
    reader.batch(0, 4)
    reader._ahead[2].result()  # the read-ahead of batch 4 has happened before anyone asked for it
    assert source.reads == [0, 4]
    reader.batch(4, 4)
    reader.batch(8, 4)
    assert source.reads == [0, 4, 8]  # each batch read once
    reader.close()


def test_a_read_error_reaches_the_caller():
    reader = PrefetchingReader(Counting(fail=8), torch.device("cpu"))
    reader.batch(0, 4)
    reader.batch(4, 4)
    with pytest.raises(OSError, match="Input/output error"):
        reader.batch(8, 4)
    reader.close()


@pytest.mark.cuda
def test_pinned_batches_reach_the_gpu_equal():
    data = images()
    reader = PrefetchingReader(data, torch.device("cuda"))
    batches = list(reader.batches(4))
    assert all(b.is_cuda for b in batches)
    assert torch.equal(torch.cat(batches).cpu(), data.float() / 255.0)
    reader.close()
