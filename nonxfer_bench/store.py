"""Finished cells, one JSON line each, appended and fsynced: a killed run loses at most the line it was writing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class CellStore:
    """Append-only JSONL store of finished cells keyed by their hash; a torn last line is dropped on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # a torn final line from a killed writer
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        for line in complete.decode().splitlines():
            if line.strip():
                cell = json.loads(line)
                self.cells[cell["key"]] = cell

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def add(self, cells: list[dict[str, Any]]) -> None:
        """Append finished cells durably."""
        if not cells:
            return
        text = "".join(json.dumps(cell, sort_keys=True) + "\n" for cell in cells)
        with open(self.path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for cell in cells:
            self.cells[cell["key"]] = cell
