"""Finished cells, one JSON line each (:meth:`Cell.record`), appended and fsynced: a killed run loses at most the line
it was writing.

Every line is validated against the cell schema when the store is opened (a line with only a key is not a
cell); stores written before cells were typed (schema 1) are read as they are. Readers that only look
(leaderboard, report) open it read-only, and can read a gzipped copy (``.gz``: a results folder's cells, 8 to
14 times smaller). Whatever sits at the store's path is read within bounds: only a regular file (a FIFO or
``/dev/zero`` would hang or never end), line by line in 1 MiB pieces, at most :data:`MAX_STORE_BYTES` of text and
:data:`MAX_LINE_BYTES` per line, and blank lines cost a scan, not a Python object each (a 5 MB gzip of newlines is
a gigabyte of them).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from pydantic import ValidationError

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error
from nonxfer_bench.core.reading import open_regular

MAX_STORE_BYTES = (
    2**30
)  # a store's text (a gzipped one's decompressed): the full ImageNet suite with outcomes is about 60 MB
MAX_LINE_BYTES = 2**24  # one cell's line: per-image outcomes take about 17 KB per draw for 50,000 images
PIECE = 1 << 20
NOT_BLANK = re.compile(
    rb"[^\s][^\n]*"
)  # a line from its first character that is not white space: a blank line has none
EXPECTED = "a cell store is a file of JSON lines written by `nonxfer-bench run` (restore it or delete it)"


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
        tail: tuple[bytes, int] | None = None  # a last line without its newline, and its number
        for number, line, ended in store_lines(self.path):
            if not ended:
                tail = (line, number)
                continue
            cell = self._parse(line, number)
            self.cells[cell.key] = cell
        if tail is None:
            return
        # a gzipped copy is written whole, never appended to: a torn line means a damaged copy
        cell = self._parse(*tail, strict=self.path.suffix == ".gz")
        if cell is not None:  # a finished cell that only lacks its newline (an editor, a copy)
            self.cells[cell.key] = cell
            if self.writable:
                with open(self.path, "ab") as handle:
                    handle.write(b"\n")
        elif self.writable:  # a torn final line from a killed writer
            with open(self.path, "r+b") as handle:
                handle.truncate(handle.seek(0, os.SEEK_END) - len(tail[0]))

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
            f"{self.path}: line {number} is not a finished cell ({excerpt(reason, 160)}); the file was edited or "
            "damaged: restore it, delete that line (its cell is recomputed) or delete the file"
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


def store_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, whether a newline ends it) of each line of a store that is not blank, read in
    :data:`PIECE` pieces (decompressed if ``path`` ends in ``.gz``); only a last line lacks its newline. Past
    :data:`MAX_STORE_BYTES` of text, or a line past :data:`MAX_LINE_BYTES`, reading stops with one line."""
    try:
        with _opened(path) as handle:
            number = size = held = 0
            partial: list[bytes] = []  # the pieces of a line that no newline has ended yet
            while piece := handle.read(PIECE):
                size += len(piece)
                if size > MAX_STORE_BYTES:
                    holds = "decompresses to" if path.suffix == ".gz" else "holds"
                    raise UserError(
                        f"{path}: {holds} more than {MAX_STORE_BYTES / 2**30:.1f} GiB of text; a cell store is far "
                        f"smaller ({EXPECTED})"
                    )
                end = piece.rfind(b"\n") + 1
                if not end:
                    partial.append(piece)
                    held += len(piece)
                    _check_length(path, number + 1, held)
                    continue
                whole = b"".join([*partial, piece[:end]])  # whole lines only
                position = 0
                for match in (
                    NOT_BLANK.finditer(whole) if whole.strip() else ()
                ):  # strip: a piece of blank lines, 4x faster
                    number += whole.count(b"\n", position, match.start())
                    position = match.start()
                    _check_length(path, number + 1, len(match.group()))
                    yield number + 1, match.group(), True
                number += whole.count(b"\n", position)
                partial, held = [piece[end:]], len(piece) - end
            if held:
                yield number + 1, b"".join(partial), False
    except (OSError, EOFError, zlib.error) as error:
        if path.suffix != ".gz":
            raise
        raise UserError(f"{path}: not a readable gzip file ({excerpt(str(error))}); restore it from git") from None


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    """The store's bytes, decompressed if its name ends in ``.gz``; only a regular file is opened."""
    with open_regular(path, EXPECTED) as handle:
        yield gzip.GzipFile(fileobj=handle, mode="rb") if path.suffix == ".gz" else handle


def _check_length(path: Path, number: int, length: int) -> None:
    if length > MAX_LINE_BYTES:
        raise UserError(
            f"{path}: line {number} is longer than {MAX_LINE_BYTES >> 20} MiB; a cell's line is far shorter "
            f"({EXPECTED})"
        )


def gunzipped(path: Path, limit: int) -> bytes:
    """A gzipped regular file's text, read in :data:`PIECE` pieces up to ``limit`` bytes: a decompression bomb, a
    damaged file or a truncated one is one line."""
    pieces, size = [], 0
    try:
        with _opened(path) as handle:
            while piece := handle.read(PIECE):
                size += len(piece)
                if size > limit:
                    raise UserError(
                        f"{path}: decompresses to more than {limit:,} bytes; a results folder's cells are far smaller"
                    )
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
                f"{run_dir} is in use by another run (pid {handle.read().strip() or '?'}); wait for it to finish, or "
                "give this run another output.dir"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def draws(cells: Iterable[Cell]) -> str | None:
    """The draws (``cpu`` or ``cuda``) ``cells`` were computed with, from the device type each records: ``cuda``
    if any was computed there (CPU-only attacks record ``cpu`` on a GPU run too), None if none records one."""
    devices = {cell.device for cell in cells} - {None}
    return "cuda" if "cuda" in devices else "cpu" if devices else None
