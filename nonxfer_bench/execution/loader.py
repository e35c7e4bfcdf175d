"""Batches of the decoded uint8 cache on their way to the device, read ahead so the device never waits on data.

While the caller computes on one batch, a background thread reads the next from the (memory-mapped) uint8
images, into pinned memory when the target is a CUDA device; copies to the device are non-blocking and
the conversion to float [0, 1] happens there (a quarter of the bytes cross the bus). On the CPU a batch
equals ``images[start:start + size].float() / 255``, bit for bit.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch


class PrefetchingReader:
    """``batch(start, size)`` returns float batches on ``device``; after each it starts reading the one that follows."""

    def __init__(self, images: torch.Tensor, device: torch.device) -> None:
        self.images, self.device = images, device
        self.pin = device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nxb-prefetch")
        self._ahead: tuple[int, int, Future] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, start: int, size: int) -> torch.Tensor:
        batch = self.images[start : start + size]  # a view of the memory map: the copy below is the disk read
        return batch.pin_memory() if self.pin else batch.clone()

    def batch(self, start: int, size: int) -> torch.Tensor:
        ahead, self._ahead = self._ahead, None
        host = ahead[2].result() if ahead is not None and ahead[:2] == (start, size) else self._read(start, size)
        if start + size < len(self.images):
            self._ahead = (start + size, size, self._pool.submit(self._read, start + size, size))
        return host.to(self.device, non_blocking=self.pin).float().div_(255.0)

    def batches(self, size: int):
        """Every batch in order (what a full pass over the images reads)."""
        for start in range(0, len(self.images), size):
            yield self.batch(start, size)

    def close(self) -> None:
        self._ahead = None
        self._pool.shutdown(wait=True)
