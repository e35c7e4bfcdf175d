"""The one exception type that the CLI turns into a one-line message and exit code 2, :func:`excerpt`,
which keeps any value echoed into such a message short, and :func:`shown_path`, how a path is shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXCERPT = 80


class UserError(Exception):
    """Bad input from the user (a suite, a path, a name): says what is wrong and what would be valid."""


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters: an error names a bad value, it never
    copies a whole input (a megabyte string, an expanded YAML alias) into the message."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value):,} items>"
    text = repr(value).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text):,} characters)"


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (so a committed file names no machine),
    else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
