"""Batch-size back-off on out-of-memory, after timm's ``validate.py`` (``decay_batch_step``).

A suite's ``batch_size`` may not fit a model on a smaller device. Rather than failing the run, a
forward that runs out of memory is repeated on chunks of the batch, the chunk size decayed along
timm's power-of-two steps (64, 48, 32, 24, ...) until it fits; the size that fitted is remembered per
model, so later batches start there. Predictions are per image, so chunking changes no cell (beyond
float rounding in the model's batched kernels).
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from timm.utils import check_batch_size_retry, decay_batch_step


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError saying an allocation failed (CPU or another device)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return (
        isinstance(error, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
        and check_batch_size_retry(text)
    )


class BatchBackOff:
    """Applies ``function`` to a batch in chunks small enough to fit, per ``name`` (a model)."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def __call__(
        self, name: str, function: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
    ) -> torch.Tensor:
        size = min(self.sizes.get(name, len(batch)), len(batch))
        while True:
            try:
                return torch.cat([function(batch[start : start + size]) for start in range(0, len(batch), size)])
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                smaller = decay_batch_step(size)
                if smaller == 0:
                    raise
                print(f"nonxfer-bench: {name}: out of memory at batch {size}, retrying with {smaller}", file=sys.stderr)
                self.sizes[name] = size = smaller
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
