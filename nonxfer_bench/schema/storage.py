"""Storage format names for releases (the suite key ``storage``, ``encode --format``): what each name means.

The files themselves are written and read by :mod:`nonxfer_bench.storage.formats`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FORMATS = ("float32", "png16", "png8", "jpeg")
FORMAT_HELP = "float32, png16, png8, jpeg (quality 95) or jpeg<Q> with Q in 1..100, e.g. jpeg90"
DEFAULT_JPEG_QUALITY = 95
SUFFIXES = {"float32": ".npy", "png16": ".png", "png8": ".png", "jpeg": ".jpg"}


@dataclass(frozen=True)
class StorageFormat:
    kind: str  # one of FORMATS
    quality: int | None = None  # jpeg only

    @property
    def name(self) -> str:
        return f"jpeg{self.quality}" if self.kind == "jpeg" and self.quality != DEFAULT_JPEG_QUALITY else self.kind

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.kind]


def parse_format(name: str | StorageFormat) -> StorageFormat:
    """``float32``, ``png16``, ``png8``, ``jpeg`` or ``jpeg<Q>``; ValueError (one line) otherwise."""
    if isinstance(name, StorageFormat):
        return name
    text = str(name).strip().lower()
    if text in ("float32", "png16", "png8"):
        return StorageFormat(text)
    match = re.fullmatch(r"jpe?g(\d+)?", text)
    if match:
        quality = int(match.group(1)) if match.group(1) else DEFAULT_JPEG_QUALITY
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality {quality} is outside 1..100")
        return StorageFormat("jpeg", quality)
    raise ValueError(f"unknown storage format {name!r}; valid: {FORMAT_HELP}")


def canonical_format(name: str) -> str:
    """The canonical spelling of a format name (``jpeg95`` -> ``jpeg``), for keys and labels."""
    return parse_format(name).name
