"""Finished cells, one JSON line each (:meth:`Cell.record`), appended and fsynced: a killed run loses at most the line it was writing.

Every line is validated against the cell schema when the store is opened; stores written before cells were
typed (schema 1) are read as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from nonxfer_bench.core import faults
from nonxfer_bench.core.cell import Cell
from nonxfer_bench.core.errors import UserError


class CellStore:
    """Append-only JSONL store of finished cells keyed by their hash; a torn last line is dropped on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells: dict[str, Cell] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # a torn final line from a killed writer
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        for number, line in enumerate(complete.decode(errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    cell = Cell.from_record(json.loads(line))
                except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
                    reason = str(error).splitlines()[0][:160]
                    raise UserError(
                        f"{self.path}: line {number} is not a finished cell ({reason}); the file was edited "
                        "or damaged: restore it, delete that line (its cell is recomputed) or delete the file"
                    ) from None
                self.cells[cell.key] = cell

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def add(self, cells: list[Cell]) -> None:
        """Append finished cells durably."""
        if not cells:
            return
        text = "".join(json.dumps(cell.record(), sort_keys=True) + "\n" for cell in cells)
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
