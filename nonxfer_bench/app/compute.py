"""How a command that computes outside a suite (``train``, ``encode``, ``verify``, ``attack``) is set up before any
work: its device decided and checked, its precision, torch's CPU threads."""

from __future__ import annotations

import torch

from nonxfer_bench.core.device import Precision
from nonxfer_bench.schema.settings import RunSettings


def set_threads(threads: int | None) -> None:
    """torch's CPU threads, when given (None: torch's own default)."""
    if threads:
        torch.set_num_threads(threads)


def resolved_settings(device: str | None, precision: Precision | None, threads: int | None) -> RunSettings:
    """The run settings of ``--device`` (default ``auto``, decided here: a device this machine lacks is one line, exit
    2, before any work), ``--precision`` (default fp32) and ``--threads``, with torch's threads set."""
    settings = RunSettings(device=device or "auto", precision=precision or "fp32", threads=threads).resolved()
    set_threads(settings.threads)
    return settings
