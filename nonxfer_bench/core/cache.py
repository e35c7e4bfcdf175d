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

The cache deletes only what it wrote. Keys are hex digests, and eviction and the orphan sweep look only at
the names the cache makes (``<key>.npy``, ``<key>.json`` and their ``.<key>.npy.<random>.partial``
temporaries); any other file in its folders is never touched. A kind folder the cache creates gets a
``CACHEDIR.TAG`` (https://bford.info/cachedir/, so backup tools skip it); ``NXB_CACHE`` itself gets none,
as it may be a folder of the user's (``NXB_CACHE=/data``). A kind folder that exists without the tag is
adopted (tagged) only if it holds nothing but such names (a cache of an earlier version, or an empty
folder); one that holds anything else is refused with one line, before any work: it is someone else's
folder, and sharing it would mix hundreds of cache files into it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nonxfer_bench.core.environment import cache_root, gigabytes
from nonxfer_bench.core.errors import UserError, excerpt

ORPHAN_SECONDS = 3600  # a temporary file or an array without metadata younger than this may be another writer's
KINDS = ("datasets", "attacked", "operator")  # the package's kind folders, all checked when any cache opens
KEY = re.compile(r"[0-9a-f]{16,64}")  # a hex digest: stable_hash (16) or sha256 prefixes (32)
ENTRY = re.compile(r"(?P<key>[0-9a-f]{16,64})\.(?:npy|json)")
PARTIAL = re.compile(r"\.[0-9a-f]{16,64}\.(?:npy|json)\.[a-z0-9_]{8}\.partial")  # tempfile's 8 random characters
TAG = "CACHEDIR.TAG"
TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a cache written by nonxfer-bench; it may be "
    "deleted (entries are recomputed).\n# For information about cache directory tags see "
    "https://bford.info/cachedir/\n"
)

__all__ = ["ArrayCache", "cache_root", "cache_limit_bytes"]


def cache_limit_bytes() -> int:
    return int(gigabytes("NXB_CACHE_MAX_GB") * 1e9)


class ArrayCache:
    """Arrays keyed by a hex digest; ``get`` memory-maps (read-only), ``put`` is atomic and enforces the size
    limit. Opening one checks that its folder and the package's other kind folders are the cache's own."""

    def __init__(self, kind: str, root: Path | None = None, limit_bytes: int | None = None) -> None:
        root = root or cache_root()
        self.folder = root / kind
        self.limit = cache_limit_bytes() if limit_bytes is None else limit_bytes
        for folder in dict.fromkeys([self.folder, *(root / k for k in KINDS)]):
            _claim(folder)

    def __contains__(self, key: str) -> bool:
        return (self.folder / f"{_key(key)}.json").is_file()

    def get(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The entry, memory-mapped (it stays readable if evicted later), or None if it is missing or damaged."""
        meta = self.folder / f"{_key(key)}.json"
        try:
            data = json.loads(meta.read_text())
            array = np.load(self.folder / f"{key}.npy", mmap_mode="c")  # copy-on-write: torch wants writable arrays
            _touch(meta)  # least recently *used* is what eviction drops
        except (OSError, ValueError):  # evicted by another process, or a damaged entry: recompute it
            return None
        return array, data

    def put(self, key: str, array: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        self._make()
        key = _key(key)
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
        self._make()
        key = _key(key)
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

    def _make(self) -> None:
        """The kind folder, made and tagged as the cache's own if it is not there yet."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _tag(self.folder)

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
        """Drop old orphans (partial files, an array or metadata without the other) and the least recently used
        entries over the limit, looking only at the names the cache makes; files that another process removes
        meanwhile are skipped."""
        names = [path.name for path in self.folder.iterdir()]
        entries = []
        for name in names:
            if (match := ENTRY.fullmatch(name)) and name.endswith(".json"):
                meta = self.folder / name
                try:
                    meta_stat, array_stat = meta.stat(), (self.folder / f"{match['key']}.npy").stat()
                except FileNotFoundError:
                    continue
                entries.append((meta_stat.st_mtime, meta, array_stat.st_size + meta_stat.st_size))
        complete = {meta.stem for _, meta, _ in entries}
        now = time.time()
        for name in names:
            entry = ENTRY.fullmatch(name)
            if PARTIAL.fullmatch(name) or (entry and entry["key"] not in complete):
                path = self.folder / name
                try:
                    if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime > ORPHAN_SECONDS:
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


def _key(key: str) -> str:
    """``key`` if it is a hex digest: only such names are the cache's own (a programming error otherwise)."""
    if not KEY.fullmatch(key):
        raise ValueError(f"cache key {key!r} is not a hex digest of 16 to 64 characters")
    return key


def _own(name: str) -> bool:
    return name == TAG or bool(ENTRY.fullmatch(name) or PARTIAL.fullmatch(name))


def _tag(folder: Path) -> None:
    if not (folder / TAG).is_file():
        (folder / TAG).write_text(TAG_TEXT)  # every writer writes the same text: a race is harmless


def _claim(folder: Path) -> None:
    """Check that ``folder`` is the cache's to write and evict in: absent (made and tagged on the first
    write), tagged, or holding only names the cache makes (then tagged now); refused with one line otherwise."""
    if (folder / TAG).is_file() or not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(
            f"{folder}: a file where the cache keeps its {folder.name}/ folder; point NXB_CACHE at a new or empty "
            "folder"
        )
    foreign = list(itertools.islice((path.name for path in folder.iterdir() if not _own(path.name)), 4))
    if foreign:
        raise UserError(
            f"NXB_CACHE={excerpt(str(folder.parent))}: {folder.name}/ holds files the cache did not write "
            f"({', '.join(excerpt(name, 40) for name in foreign[:3])}{', ...' if len(foreign) > 3 else ''}) and no "
            f"{TAG}; the cache deletes old entries in its folders, so point NXB_CACHE at a new or empty folder"
        )
    _tag(folder)


def _touch(path: Path) -> None:
    """Mark an entry used now, at the clock's full resolution (a file system's own timestamps can be coarse)."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except FileNotFoundError:  # evicted by another process meanwhile: nothing to mark
        pass
