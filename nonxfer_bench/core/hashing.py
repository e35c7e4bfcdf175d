"""Content hashes and keyed random generators: what makes a cell's identity and its draws reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch


def stable_hash(data: Any) -> str:
    """Short hash of JSON-serializable data, independent of dict order."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keyed_generator(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from a key, so every draw is a function of the cell's identity."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))
