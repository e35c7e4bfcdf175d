"""Where and in what precision models run: resolving ``auto|cpu|cuda|cuda:N`` and the autocast context.

``auto`` is the first CUDA device if there is one, else the CPU. ``fp32`` runs as written (no autocast,
so CPU results stay bit for bit what they were); ``bf16`` and ``fp16`` run the networks under
``torch.autocast`` on whichever device they sit (bf16 autocast works on CPU too).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import ContextManager, Literal

import torch

from nonxfer_bench.core.errors import UserError, excerpt

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# exactly the spellings torch takes as they are: ASCII digits without a leading zero ('cuda:01' and 'cuda:١' are
# torch errors), nothing before or after (re.match's $ also matches before a final newline: use fullmatch)
DEVICE_PATTERN = r"^(auto|cpu|cuda(:(0|[1-9][0-9]{0,3}))?)$"
DEVICE_SPELLINGS = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


def resolve_device(name: str) -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a :class:`UserError` when it is not there."""
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise UserError(f"device {excerpt(name)}: expected {DEVICE_SPELLINGS}")
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r}: CUDA is not available on this machine (torch {torch.__version__}); use --device "
                "cpu or auto"
            )
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise UserError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        device = torch.device("cuda", index)
    return device


def autocast(device: torch.device, precision: Precision) -> ContextManager:
    """The context a forward pass runs in: nothing for fp32, ``torch.autocast`` to bf16/fp16 otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def device_name(device: torch.device) -> str:
    """A human name for reports: the GPU's model for CUDA, ``cpu`` otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def draw_kind(device: str) -> str:
    """Which generators a run on ``device`` (a :data:`DEVICE_PATTERN` name) draws its noise from: ``cpu`` or ``cuda``.

    CPU and CUDA generators give different numbers for one seed, so cells computed on CUDA are other draws of the
    same experiment: their keys say ``draws: cuda`` (CPU keys are unchanged), and a store never mixes the two.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def make_deterministic(device: torch.device) -> None:
    """On CUDA, compute as the CPU does: fp32 convolutions and matrix products in fp32 (CUDA's default rounds
    them to TF32, 10 mantissa bits), deterministic cuDNN kernels, deterministic algorithms where torch has them
    (a warning where it has none), so that a group computed twice gives the same cells. Nothing on the CPU."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read when cuBLAS starts
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def generator_on(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator that draws on ``device``: ``generator`` itself when it is there (CPU draws stay exactly as
    they were), else one seeded by a draw from it, so keyed draws stay a function of the cell on every device
    (the same on every run on that kind of device, not across CPU and CUDA, whose generators differ)."""
    if generator.device.type == device.type and (device.type == "cpu" or generator.device.index == device.index):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)
