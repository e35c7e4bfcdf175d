"""The hostile campaign's harness: run the CLI under a time and a memory limit and check how it refuses.

Every case ends in exactly one stderr line ``nonxfer-bench: error: ...`` with exit code 2, no traceback,
within ``TIME_LIMIT`` seconds (a hang is a failure, the process group is killed) and ``MEMORY_LIMIT``
bytes of address space; and no case may change a file the repository commits (checked around every test).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIME_LIMIT = 60.0
MEMORY_LIMIT = 6 << 30  # address space: torch's import needs about 3 GiB of it, a bomb needs far more
MAX_LINE = 1000  # an error line echoes at most ~80 characters of any value, so a long line is a leak
COMMITTED = (REPO / "suites", REPO / "results")


@dataclass
class Outcome:
    """What one CLI process did."""

    argv: list[str]
    code: int
    out: str
    err: str
    seconds: float


# The limit is set by a tiny launcher that then execs the CLI (a preexec_fn is unsafe in a threaded test process).
LAUNCHER = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "limit and resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'nonxfer_bench.cli', *sys.argv[2:]])"
)


def run_cli(
    *args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIME_LIMIT, memory: bool = True
) -> Outcome:
    """``nonxfer-bench ARGS`` in a subprocess of its own session; fails the test if it outlives ``timeout``."""
    cwd.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    argv = [sys.executable, "-c", LAUNCHER, str(MEMORY_LIMIT if memory else 0), *map(str, args)]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"hang: `nonxfer-bench {' '.join(argv[4:])[:300]}` ran past {timeout:.0f} s; stderr: {err[-500:]}")
    return Outcome(argv[4:], process.returncode, out, err, time.monotonic() - started)


def error_line(outcome: Outcome, *expected: str) -> str:
    """Assert a clean refusal: exit 2, one short ``nonxfer-bench: error:`` line containing ``expected``, no traceback."""
    lines = [line for line in re.split(r"[\r\n]", outcome.err) if line.strip()]
    context = f"`nonxfer-bench {' '.join(outcome.argv)[:300]}` -> exit {outcome.code}\n{outcome.err[-3000:]}"
    assert "Traceback" not in outcome.err, context
    assert outcome.code == 2, context
    assert len(lines) == 1 and lines[0].startswith("nonxfer-bench: error: "), context
    assert len(lines[0]) <= MAX_LINE, f"error line of {len(lines[0])} characters: {lines[0][:300]}..."
    for text in expected:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    return lines[0]


def refused(*args: object, cwd: Path, expected: tuple[str, ...] = (), **kwargs) -> str:
    """Run the CLI and require a clean refusal (see :func:`error_line`)."""
    return error_line(run_cli(*args, cwd=cwd, **kwargs), *expected)


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (relative path -> digest), for "nothing changed" checks."""
    digests = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(autouse=True)
def committed_paths_unchanged():
    """No hostile case may change, add or remove a file the repository commits (suites, weights, results)."""
    status, digest = _git_status(), tree_digest(*COMMITTED)
    yield
    assert tree_digest(*COMMITTED) == digest, "a committed file under suites/ or results/ changed"
    assert _git_status() == status, "the working tree changed"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """An empty working directory for the CLI: relative paths that escape their folder land here."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def refused_here(argv: list[object], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """In-process variant of :func:`refused` for cases that fail during validation (no time or memory at risk)."""
    from nonxfer_bench.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    return error_line(Outcome([str(a) for a in argv], code, captured.out, captured.err, 0.0), *expected)
