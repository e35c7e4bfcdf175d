"""Opening a user's file for reading: only a regular file, so a read can neither hang nor run forever.

A FIFO blocks its reader until something writes to it, a device such as ``/dev/zero`` never ends and a folder
cannot be read; any of them (or a symlink to one) where a file is expected is one line instead. The check is made
on the opened descriptor, so the name cannot be swapped for something else between the check and the read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from nonxfer_bench.core.errors import UserError

KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def open_regular(path: Path, expected: str) -> BinaryIO:
    """``path`` opened for binary reading; a :class:`UserError` naming it, what it is and ``expected`` (what belongs
    there) when it is not a regular file. Opening never blocks (``O_NONBLOCK``: a FIFO without a writer)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{path}: {KINDS.get(stat.S_IFMT(mode), 'a special file')}, not a regular file; {expected}")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
