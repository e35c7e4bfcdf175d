"""The one exception type that the CLI turns into a one-line message and exit code 2, :func:`excerpt`,
which keeps any value echoed into such a message short, :func:`printable`, which keeps any text the CLI prints
from steering the terminal, :func:`one_line`, an error message as one bounded line, and :func:`shown_path`, how a path
is shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

EXCERPT = 80
# C0 controls but newline (ESC starts ANSI/OSC sequences; CR, BS and TAB move the cursor), DEL, the C1 controls
# (U+009B is a one-character CSI) and the bidirectional overrides and isolates, which reorder the text shown
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character but newline written as its Python escape (ESC as ``\\x1b``), so a
    value from a suite, a path or an error cannot move the cursor, recolour, retitle or clear the terminal."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def one_line(message: str, limit: int = 1000) -> str:
    """``message`` as one bounded line: line breaks and runs of whitespace as one space, control characters escaped
    (:func:`printable`), cut to about ``limit`` characters; a megabyte message is cut before it is looked at."""
    text = printable(" ".join(str(message)[: 4 * limit].split()))
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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


def io_error(error: OSError) -> str:
    """An I/O error (a full disk, a read-only folder) as the text of one error line: the path(s) and what failed."""
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    return (
        f"{where + ': ' if where else ''}{error.strerror or error} (check the path, its permissions and free disk "
        "space)"
    )
