"""A size-bounded on-disk cache of arrays, safe against partial writes, read back memory-mapped.

Entries live under ``$NXB_CACHE`` (default ``~/.cache/nonxfer-bench``) in one folder per kind
(``datasets``, ``attacked``). An entry is ``<key>.npy`` (the array) plus ``<key>.json`` (metadata), each
written to a temporary file, fsynced and renamed into place, the metadata last: an entry counts only
when its metadata exists, so a run killed mid-write leaves no entry, only an orphan that a later write of
that kind removes (temporary files once they are an hour old, since another process may be writing one). After each write the least recently used entries are dropped until the kind's folder is
under its limit (``NXB_CACHE_MAX_GB``, default 20).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nonxfer_bench.core.errors import UserError


def cache_root() -> Path:
    return Path(os.environ.get("NXB_CACHE", Path.home() / ".cache" / "nonxfer-bench"))


def cache_limit_bytes() -> int:
    value = os.environ.get("NXB_CACHE_MAX_GB", "20")
    try:
        limit = float(value)
    except ValueError:
        raise UserError(f"environment variable NXB_CACHE_MAX_GB={value!r}: expected a number of GB, e.g. 20") from None
    return int(limit * 1e9)


class ArrayCache:
    """Arrays keyed by a hash; ``get`` memory-maps (read-only), ``put`` is atomic and enforces the size limit."""

    def __init__(self, kind: str, root: Path | None = None, limit_bytes: int | None = None) -> None:
        self.folder = (root or cache_root()) / kind
        self.limit = cache_limit_bytes() if limit_bytes is None else limit_bytes

    def __contains__(self, key: str) -> bool:
        return (self.folder / f"{key}.json").is_file()

    def get(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        meta = self.folder / f"{key}.json"
        if not meta.is_file():
            return None
        array = np.load(self.folder / f"{key}.npy", mmap_mode="c")  # copy-on-write: torch wants writable arrays
        _touch(meta)  # least recently *used* is what eviction drops
        return array, json.loads(meta.read_text())

    def put(self, key: str, array: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.folder / f"{key}.npy", lambda handle: np.save(handle, np.ascontiguousarray(array)))
        self._write(self.folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta or {}).encode()))
        _touch(self.folder / f"{key}.json")
        self._evict(keep=key)

    def put_filled(self, key: str, fill: Callable[[Callable[[tuple[int, ...]], np.ndarray]], dict[str, Any]]) -> None:
        """Like :meth:`put`, for a uint8 array written in place: ``fill(allocate)`` gets the entry's array from
        ``allocate(shape)``, memory-mapped on disk (never whole in memory), writes it and returns the
        metadata. Atomic like ``put``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {}

        def write(handle) -> None:
            arrays: list[np.memmap] = []

            def allocate(shape: tuple[int, ...]) -> np.ndarray:
                arrays.append(np.lib.format.open_memmap(handle.name, mode="w+", dtype=np.uint8, shape=shape))
                return arrays[-1]

            meta.update(fill(allocate))
            for array in arrays:
                array.flush()

        self._write(self.folder / f"{key}.npy", write)
        self._write(self.folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta).encode()))
        _touch(self.folder / f"{key}.json")
        self._evict(keep=key)

    def _write(self, path: Path, write) -> None:
        handle = tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{path.name}.", suffix=".partial", delete=False)
        try:
            with handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise

    def _evict(self, keep: str) -> None:
        """Drop orphans (arrays without metadata, partial files) and the oldest entries over the limit."""
        entries = []
        for meta in self.folder.glob("*.json"):
            array = meta.with_suffix(".npy")
            if array.is_file():
                entries.append((meta.stat().st_mtime, meta, array.stat().st_size + meta.stat().st_size))
        complete = {meta.stem for _, meta, _ in entries}
        now = time.time()
        for path in self.folder.iterdir():
            temporary = path.name.startswith(".")
            if (temporary and now - path.stat().st_mtime > 3600) or (not temporary and path.stem not in complete):
                path.unlink(missing_ok=True)
        total = sum(size for *_, size in entries)
        for _, meta, size in sorted(entries):
            if total <= self.limit:
                break
            if meta.stem == keep:
                continue
            meta.unlink(missing_ok=True)  # metadata first: the entry stops counting before its array goes
            meta.with_suffix(".npy").unlink(missing_ok=True)
            total -= size


def _touch(path: Path) -> None:
    """Mark an entry used now, at the clock's full resolution (a file system's own timestamps can be coarse)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))
