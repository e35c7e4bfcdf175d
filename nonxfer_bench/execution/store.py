"""Finished cells, one JSON line each (:meth:`Cell.record`), appended and fsynced: a killed run loses at most the line it was writing.

Every line is validated against the cell schema when the store is opened (a line with only a key is not a
cell); stores written before cells were typed (schema 1) are read as they are. Readers that only look
(leaderboard, report) open it read-only, and can read a gzipped copy (``.gz``: a results folder's cells, 8 to
14 times smaller), decompressed to at most :data:`MAX_STORE_BYTES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Iterator

from pydantic import ValidationError

from nonxfer_bench.core import faults
from nonxfer_bench.core.cell import Cell
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error

MAX_STORE_BYTES = 2**30  # a gzipped store's text: the full ImageNet suite with outcomes is about 60 MB


class CellStore:
    """Append-only JSONL store of finished cells keyed by their hash.

    Opened for writing (a run, holding the run lock), a torn last line from a killed writer is dropped and
    a whole last cell that only lacks its newline is completed. Opened read-only (``writable=False``:
    leaderboard, report), the file is never touched; such a torn last line is just not read.
    """

    def __init__(self, path: Path, writable: bool = True) -> None:
        assert not (writable and path.suffix == ".gz"), "a gzipped store is read-only"
        self.path = path
        self.writable = writable
        self.cells: dict[str, Cell] = {}
        if writable:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = gunzipped(self.path) if self.path.suffix == ".gz" else self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        tail = data[len(complete) :]
        if tail and self.path.suffix == ".gz":  # written whole, never appended to: a torn line means a damaged copy
            self._parse(tail, complete.count(b"\n") + 1)
            complete = data
        elif tail and self._parse(tail, complete.count(b"\n") + 1, strict=False) is not None:
            complete = data  # a finished cell that only lacks its newline (an editor, a copy)
            if self.writable:
                with open(self.path, "ab") as handle:
                    handle.write(b"\n")
        elif tail and self.writable:  # a torn final line from a killed writer
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        for number, line in enumerate(complete.splitlines(), 1):
            if line.strip():
                cell = self._parse(line, number)
                self.cells[cell.key] = cell

    def _parse(self, line: bytes, number: int, strict: bool = True) -> Cell | None:
        """The cell on line ``number``; a line that is not a whole cell is one error line (None if not ``strict``)."""
        try:
            return Cell.from_record(json.loads(line.decode()))
        except ValidationError as error:
            key, message = describe_error(error, Cell)
            reason = f"'{key}': {message}" if key else message
        except (ValueError, TypeError, RecursionError) as error:  # bad UTF-8 or JSON, not an object
            reason = str(error)
        if not strict:
            return None
        raise UserError(
            f"{self.path}: line {number} is not a finished cell ({excerpt(reason, 160)}); the file was edited or damaged: "
            "restore it, delete that line (its cell is recomputed) or delete the file"
        )

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def add(self, cells: list[Cell]) -> None:
        """Append finished cells durably."""
        assert self.writable, "the store was opened read-only"
        if not cells:
            return
        text = lines(cells)
        faults.point("store_append")
        try:
            with open(self.path, "a") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:  # name the file: a failed fsync (a full disk) says only what went wrong
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        faults.point("store_appended")
        for cell in cells:
            self.cells[cell.key] = cell


def gunzipped(path: Path, limit: int | None = None) -> bytes:
    """A gzipped file's text, read in 1 MiB pieces up to ``limit`` (default :data:`MAX_STORE_BYTES`): a
    decompression bomb, a damaged file or a truncated one is one line."""
    limit = MAX_STORE_BYTES if limit is None else limit
    pieces, size = [], 0
    try:
        with gzip.open(path, "rb") as handle:
            while piece := handle.read(1 << 20):
                size += len(piece)
                if size > limit:
                    raise UserError(f"{path}: decompresses to more than {limit / 2**30:.1f} GiB; a results folder's cells are far smaller")
                pieces.append(piece)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: not a readable gzip file ({excerpt(str(error))}); restore it from git") from None
    return b"".join(pieces)


def lines(cells: list[Cell]) -> str:
    """Cells as the store writes them: one sorted-key JSON record per line."""
    return "".join(json.dumps(cell.record(), sort_keys=True) + "\n" for cell in cells)


def gzipped_lines(cells: list[Cell]) -> bytes:
    """:func:`lines` gzipped with no time stamp or file name, so the same cells always give the same bytes."""
    return gzip.compress(lines(cells).encode(), compresslevel=9, mtime=0)


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for one invocation (an OS lock, released even when the process is killed), so
    two runs can never append to the same cells.jsonl at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(
                f"{run_dir} is in use by another run (pid {handle.read().strip() or '?'}); wait for it to finish, "
                "or give this run another output.dir"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
