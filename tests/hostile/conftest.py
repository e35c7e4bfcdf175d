"""The hostile campaign's harness: run the CLI and check how it refuses.

Every case ends in exactly one stderr line ``nonxfer-bench: error: ...`` with exit code 2 and no traceback,
and no case may change a file the repository commits (checked around every test). Cases where a hang or
a memory blow-up is the risk (bombs, silent servers, kills, huge allocations) run the CLI in a subprocess
(``isolate=True``) under ``TIME_LIMIT`` seconds (a hang is a failure, the process group is killed) and
``MEMORY_LIMIT`` bytes of address space; the others call ``main`` in-process, which is several seconds
faster per case (no torch import).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TIME_LIMIT = 60.0
MEMORY_LIMIT = 6 << 30  # address space: torch's import needs about 3 GiB of it, a bomb needs far more
MAX_LINE = 1000  # an error line echoes at most ~80 characters of any value, so a long line is a leak
COMMITTED = (REPO / "suites", REPO / "results")
# tqdm's progress bar ("desc:  40%|####  | 2/5 [00:01<00:01, 2.0img/s]"), drawn in-process (TQDM_DISABLE only
# takes effect in a fresh process); it is not an error line
PROGRESS = re.compile(r"[^\r\n]*?\d+%\|[^|\r\n]*\|[^\]\r\n]*\]")
# a run's plan line ("digits: plan: 3 encodings x ...") and its timestamped progress lines: not error lines
PLAN = re.compile(r"^\S+: plan: |^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+: ")


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
    "import os, resource, sys; limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'nonxfer_bench.cli', *sys.argv[2:]])"
)


def run_cli(
    *args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIME_LIMIT, isolate: bool = False
) -> Outcome:
    """``nonxfer-bench ARGS`` with ``cwd`` as working directory and ``env`` added to the environment; in a
    subprocess of its own session under the limits with ``isolate`` (the test fails if it outlives
    ``timeout``), else in this process."""
    cwd.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in args]
    if not isolate:
        return _in_process(argv, cwd, env or {})
    environment = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-c", LAUNCHER, str(MEMORY_LIMIT), *argv]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"hang: `nonxfer-bench {' '.join(argv)[:300]}` ran past {timeout:.0f} s; stderr: {err[-500:]}")
    return Outcome(argv, process.returncode, out, err, time.monotonic() - started)


def _in_process(argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
    from nonxfer_bench.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        os.environ.update({"TQDM_DISABLE": "1", **env})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse
                code = exit_.code if isinstance(exit_.code, int) else 2
            except Exception:  # noqa: BLE001 - an escaped exception is what the campaign looks for
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Outcome(argv, code, out.getvalue(), err.getvalue(), time.monotonic() - started)


def error_line(outcome: Outcome, *expected: str) -> str:
    """Assert a clean refusal: exit 2, one short ``nonxfer-bench: error:`` line containing ``expected``, no
    traceback."""
    lines = [
        line for line in re.split(r"[\r\n]", PROGRESS.sub("", outcome.err)) if line.strip() and not PLAN.match(line)
    ]
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


def suite_with_zoo(tmp_path: Path, digits_zoo: Path, models: list[dict], **overrides: object) -> Path:
    """A digits suite whose zoo is the inline list ``models`` (``digits_suite`` takes its zoo as a file)."""
    from tests.helpers import digits_suite, write_yaml

    path = digits_suite(tmp_path, digits_zoo, **overrides)
    return write_yaml(path, {**yaml.safe_load(path.read_text()), "zoo": models})


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
