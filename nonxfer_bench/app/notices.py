"""Library notices on the terminal: what the package logs at INFO and above (the operator encoder's one-time solve,
a basis loaded from the cache) as one line each, above any progress bar, and in a run's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from nonxfer_bench.core.errors import printable


class _NoticeLine(logging.Handler):
    """A library notice as one line on standard output, written above any progress bar (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(printable(self.format(record)), file=sys.stdout)


@contextlib.contextmanager
def notices(line_format: str, log_file: Path | None = None) -> Iterator[None]:
    """Within the block, what the package logs at INFO and above (logger ``nonxfer_bench``: e.g. the operator
    encoder's one-time solve and its estimate, or a basis loaded from the cache) is printed as a line in
    ``line_format`` and, when given, appended to ``log_file``."""
    logger = logging.getLogger("nonxfer_bench")
    formatter = logging.Formatter(line_format, datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [_NoticeLine()] + (
        [logging.FileHandler(log_file, delay=True)] if log_file else []
    )
    previous = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous)
