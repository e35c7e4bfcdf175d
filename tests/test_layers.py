"""The package's layers (pyproject's import-linter contracts) hold, and a new upward import would fail CI.

import-linter reads the package from disk, so the check runs on a copy of the source laid out as it is
installed: ``attacks/`` inside ``nonxfer_bench/`` (setuptools' ``package-dir`` maps it there).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(folder: Path) -> Path:
    """The package as installed, plus pyproject.toml, under ``folder``."""
    shutil.copytree(ROOT / "nonxfer_bench", folder / "nonxfer_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "attacks", folder / "nonxfer_bench" / "attacks", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", script, "--no-cache"],
        cwd=folder,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_import_points_down(tmp_path: Path) -> None:
    done = lint_imports(installed_layout(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    folder = installed_layout(tmp_path)
    zoo = folder / "nonxfer_bench" / "zoo.py"
    zoo.write_text(zoo.read_text() + "\nfrom nonxfer_bench.execution import runner  # noqa: E402,F401\n")
    done = lint_imports(folder)
    assert done.returncode != 0
    assert "nonxfer_bench.zoo -> nonxfer_bench.execution.runner" in done.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path: Path) -> None:
    folder = installed_layout(tmp_path)
    hashing = folder / "nonxfer_bench" / "core" / "hashing.py"
    hashing.write_text(hashing.read_text() + "\nfrom nonxfer_bench.core import registry  # noqa: E402,F401\n")
    registry = folder / "nonxfer_bench" / "core" / "registry.py"
    registry.write_text(registry.read_text() + "\nfrom nonxfer_bench.core import hashing  # noqa: E402,F401\n")
    assert lint_imports(folder).returncode != 0
