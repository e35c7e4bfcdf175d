"""Finished cells, one JSON line each, appended and fsynced: a killed run loses at most the line it was writing."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import UserError, excerpt

TEXT_FIELDS = ("key", "group", "authorized", "encoder", "attack", "model")
ROLES = ("authorized", "unauthorized", "control")


def cell_problem(cell: Any) -> str | None:
    """Why a stored line is not a finished cell (None if it is one): the fields every reader relies on must
    be there with sane types, so a line holding only a key can never pass for a result."""
    if not isinstance(cell, dict):
        return f"a JSON {type(cell).__name__}, not an object"
    for name in TEXT_FIELDS:
        if not isinstance(cell.get(name), str) or not cell[name]:
            return f"'{name}' is missing or not a text"
    if cell.get("role") not in ROLES:
        return f"'role' is {excerpt(cell.get('role'))}, not one of {', '.join(ROLES)}"
    for name in ("strength", "attack_strength"):
        value = cell.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"'{name}' is {excerpt(value)}, not a finite number"
    for name in ("seed", "n"):
        value = cell.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"'{name}' is {excerpt(value)}, not a count"
    for name in ("agreement", "accuracy"):
        value = cell.get(name)
        if value is None and name == "accuracy":  # unlabeled data
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return f"'{name}' is {excerpt(value)}, not a fraction in [0, 1]"
    return None


class CellStore:
    """Append-only JSONL store of finished cells keyed by their hash.

    Opened for writing (a run, holding the run lock), a torn last line from a killed writer is dropped and
    a whole last cell that only lacks its newline is completed. Opened read-only (``writable=False``:
    leaderboard, report), the file is never touched; such a torn last line is just not read.
    """

    def __init__(self, path: Path, writable: bool = True) -> None:
        self.path = path
        self.writable = writable
        self.cells: dict[str, dict[str, Any]] = {}
        if writable:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        tail = data[len(complete) :]
        if tail and self._parse(tail, complete.count(b"\n") + 1, strict=False) is not None:
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
                self.cells[cell["key"]] = cell

    def _parse(self, line: bytes, number: int, strict: bool = True) -> dict[str, Any] | None:
        """The cell on line ``number``; a line that is not one is one error line (or None if not ``strict``)."""
        try:
            cell = json.loads(line.decode())
            problem = cell_problem(cell)
        except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON
            problem = f"not JSON ({excerpt(str(error), 60)})"
        if problem is None:
            return cell
        if not strict:
            return None
        raise UserError(
            f"{self.path}: line {number} is not a finished cell: {problem}; the file was edited or damaged: restore it, "
            "delete that line (its cell is recomputed) or delete the file"
        )

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def add(self, cells: list[dict[str, Any]]) -> None:
        """Append finished cells durably."""
        assert self.writable, "the store was opened read-only"
        if not cells:
            return
        text = "".join(json.dumps(cell, sort_keys=True) + "\n" for cell in cells)
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
            self.cells[cell["key"]] = cell


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
