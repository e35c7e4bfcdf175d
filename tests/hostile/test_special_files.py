"""Special files and bombs where a cell store belongs (issue 23): a FIFO, ``/dev/zero`` (or a symlink to either) or a
folder at ``runs/<suite>/cells.jsonl``, and gzipped results stores that expand to a gigabyte of newlines or one
gigantic line. Each is one line (exit 2) within the harness's time and memory limits: never a hang, never a
1 GiB buffer. The CLI runs isolated (a subprocess under ``TIME_LIMIT`` and ``MEMORY_LIMIT``)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from tests.helpers import digits_suite
from tests.hostile.conftest import refused

MIB = 1 << 20


def special(path: Path, kind: str) -> Path:
    """Make ``path`` the special file ``kind``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "fifo symlink":
        os.mkfifo(path.with_name("pipe"))
        path.symlink_to(path.with_name("pipe"))
    elif kind == "/dev/zero symlink":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("fifo", "leaderboard"),
        ("fifo", "run"),
        ("fifo symlink", "report"),
        ("/dev/zero symlink", "leaderboard"),
        ("folder", "leaderboard"),
    ],
)
def test_a_special_file_as_the_run_store(tmp_path: Path, cwd: Path, digits_zoo: Path, kind: str, command: str) -> None:
    suite = digits_suite(tmp_path, digits_zoo)
    store = special(tmp_path / "runs" / "digits" / "cells.jsonl", kind)
    args = [command, suite] + (["--no-tracking"] if command == "run" else [])
    what = {"fifo": "FIFO", "fifo symlink": "FIFO", "/dev/zero symlink": "character device", "folder": "folder"}[kind]
    # a FIFO hangs a reader, /dev/zero fills its memory: isolated; a folder risks neither
    refused(*args, cwd=cwd, isolate=kind != "folder", expected=(str(store), what, "not a regular file"))


def gzip_members(path: Path, *parts: tuple[bytes, int]) -> Path:
    """A gzip file of concatenated members (``gzip`` reads them as one stream): each part ``(text, times)`` is
    compressed once and repeated, so a gigabyte of text takes a few megabytes and no time to write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for text, times in parts:
            member = gzip.compress(text, 9, mtime=0)
            for _ in range(times):
                handle.write(member)
    return path


@pytest.mark.slow
def test_a_gzipped_store_of_a_gigabyte_of_newlines(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """The campaign's case: a few MB of gzip that expand to just under the 1 GiB bound, all newlines. Blank lines
    cost a scan: the store holds no cells, which is the usual one line."""
    suite = digits_suite(tmp_path, digits_zoo)
    gzip_members(tmp_path / "results" / "digits" / "cells.jsonl.gz", (b"\n" * MIB, 1023))
    refused("leaderboard", suite, cwd=cwd, isolate=True, timeout=120, expected=("no finished cells",))


def test_a_gzipped_store_of_one_gigantic_line(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """100 MiB of JSON on one line (a list of zeros, which json.loads would hold as 50 million list entries):
    refused at the per-line bound before it is parsed."""
    suite = digits_suite(tmp_path, digits_zoo)
    store = gzip_members(
        tmp_path / "results" / "digits" / "cells.jsonl.gz", (b'{"key": [', 1), (b"0," * (MIB // 2), 100), (b"0]}\n", 1)
    )
    refused("leaderboard", suite, cwd=cwd, isolate=True, expected=(str(store), "line 1 is longer than"))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero symlink", "folder"])
def test_a_special_file_as_the_suite(tmp_path: Path, cwd: Path, kind: str) -> None:
    """read_yaml: one line saying what the path is (it said "file not found" for a FIFO or a device)."""
    suite = special(tmp_path / "suite.yaml", kind)
    what = {"fifo": "FIFO", "/dev/zero symlink": "character device", "folder": "folder"}[kind]
    refused("run", suite, cwd=cwd, expected=(str(suite), what, "not a regular file"))
