"""Batches of the decoded uint8 cache on their way to the device, prefetched so the device never waits on data.

A background thread slices the (memory-mapped) uint8 images batch by batch, into pinned memory when the
target is a CUDA device, while the caller computes on the previous batch; copies to the device are
non-blocking. Conversion to float [0, 1] happens on the device (a quarter of the bytes cross the bus).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

_DONE = object()


def prefetch_batches(images: torch.Tensor, batch_size: int, device: torch.device, depth: int = 2) -> Iterator[torch.Tensor]:
    """Float [0, 1] batches of uint8 ``images`` (N x C x H x W) on ``device``, read ahead by up to ``depth`` batches.

    An exception in the reading thread is raised in the caller; stopping early (``break``) ends the thread.
    """
    pin = device.type == "cuda"
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size].contiguous()  # from a memory map: this is the disk read
                item = batch.pin_memory() if pin else batch
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put(error)

    thread = threading.Thread(target=read, name="nxb-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item.to(device, non_blocking=pin).float().div_(255.0)
    finally:
        stop.set()
        thread.join()
