"""A size-bounded on-disk cache of arrays, safe against partial writes and shared by processes.

Entries live under ``$NXB_CACHE`` (default ``~/.cache/nonxfer-bench``) in one folder per kind
(``datasets``, ``attacked``). An entry is ``<key>.npy`` (the array) plus ``<key>.json`` (metadata), each
written to a uniquely named temporary file, fsynced and renamed into place, the metadata last: an entry
counts only when both exist, so a run killed mid-write leaves no entry. After each write the least
recently used entries are dropped until the kind's folder is under its limit (``NXB_CACHE_MAX_GB``,
default 20).

Several processes may share the folder. Eviction skips files that vanish under it and leaves temporary
files and arrays without metadata alone for an hour (another process may be between its two renames).
A reader holds an entry by mapping it (``get`` returns a memory map, and ``put_filled`` maps its array
before it is renamed into place): an entry evicted afterwards stays readable through that mapping, so a
running group never loses data it holds; an entry that vanished before it was mapped is a miss.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nonxfer_bench.core.environment import cache_root, gigabytes

ORPHAN_SECONDS = 3600  # a temporary file or an array without metadata younger than this may be another writer's

__all__ = ["ArrayCache", "cache_root", "cache_limit_bytes"]


def cache_limit_bytes() -> int:
    return int(gigabytes("NXB_CACHE_MAX_GB") * 1e9)


class ArrayCache:
    """Arrays keyed by a hash; ``get`` memory-maps (read-only), ``put`` is atomic and enforces the size limit."""

    def __init__(self, kind: str, root: Path | None = None, limit_bytes: int | None = None) -> None:
        self.folder = (root or cache_root()) / kind
        self.limit = cache_limit_bytes() if limit_bytes is None else limit_bytes

    def __contains__(self, key: str) -> bool:
        return (self.folder / f"{key}.json").is_file()

    def get(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The entry, memory-mapped (it stays readable if evicted later), or None if it is missing or damaged."""
        meta = self.folder / f"{key}.json"
        try:
            data = json.loads(meta.read_text())
            array = np.load(self.folder / f"{key}.npy", mmap_mode="c")  # copy-on-write: torch wants writable arrays
            _touch(meta)  # least recently *used* is what eviction drops
        except (OSError, ValueError):  # evicted by another process, or a damaged entry: recompute it
            return None
        return array, data

    def put(self, key: str, array: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.folder / f"{key}.npy", lambda handle: np.save(handle, np.ascontiguousarray(array)))
        self._write(self.folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta or {}).encode()))
        _touch(self.folder / f"{key}.json")
        self._evict(keep=key)

    def put_filled(
        self, key: str, fill: Callable[[Callable[[tuple[int, ...]], np.ndarray]], dict[str, Any]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Like :meth:`put`, for a uint8 array written in place: ``fill(allocate)`` gets the entry's array from
        ``allocate(shape)``, memory-mapped on disk (never whole in memory), writes it and returns the
        metadata. Atomic like ``put``; returns the entry as :meth:`get` would, mapped before it is renamed
        into place, so another process's eviction cannot take it away in between."""
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

        array = self._write(self.folder / f"{key}.npy", write, mapped=True)
        self._write(self.folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta).encode()))
        _touch(self.folder / f"{key}.json")
        self._evict(keep=key)
        return array, meta

    def _write(self, path: Path, write: Callable, mapped: bool = False) -> np.ndarray | None:
        """Write through a unique temporary file and rename it onto ``path``; ``mapped``: return the written
        array memory-mapped from the temporary file (before the rename)."""
        handle = tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{path.name}.", suffix=".partial", delete=False)
        try:
            with handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            array = np.load(handle.name, mmap_mode="c") if mapped else None
            os.replace(handle.name, path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        return array

    def _evict(self, keep: str) -> None:
        """Drop old orphans (partial files, arrays without metadata) and the least recently used entries over
        the limit; files that another process removes meanwhile are skipped."""
        entries = []
        for meta in self.folder.glob("*.json"):
            try:
                meta_stat, array_stat = meta.stat(), meta.with_suffix(".npy").stat()
            except FileNotFoundError:
                continue
            entries.append((meta_stat.st_mtime, meta, array_stat.st_size + meta_stat.st_size))
        complete = {meta.stem for _, meta, _ in entries}
        now = time.time()
        for path in self.folder.iterdir():
            if path.name.startswith(".") or path.stem not in complete:
                try:
                    if now - path.stat().st_mtime > ORPHAN_SECONDS:
                        path.unlink(missing_ok=True)
                except FileNotFoundError:
                    continue
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
    try:
        os.utime(path, ns=(now, now))
    except FileNotFoundError:  # evicted by another process meanwhile: nothing to mark
        pass
