"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from nonxfer_bench.core import faults


def save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file so that a killed run never leaves a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".partial")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(temporary))
    faults.point("cache_write")
    os.replace(temporary, path)
