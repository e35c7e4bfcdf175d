"""Atomic writes: a killed process leaves the old file (or folder) or the new one, never half of one.

Every temporary name is unique (``tempfile``), so two processes writing the same target never share a
temporary file; a folder is built beside its target and swapped in only when complete, and only onto a
folder the command may replace (absent, empty, or proved to be its own: :func:`staged_folder`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import save_file

from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import file_sha256

MARKER = (
    "WRITTEN_BY.json"  # a folder's ownership marker: the command that wrote it and the sha256 of each file it wrote
)
MAX_MARKER_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary path beside ``path`` (same suffix, so writers pick the right format), renamed onto
    ``path`` when the block ends without an error and removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    temporary.chmod(0o666 & ~_umask())  # mkstemp's 0600 would make the file unreadable to others where open() would not
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file, fsynced, then renamed into place."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file so that a killed run never leaves a half-written one."""
    with atomic_path(path) as temporary:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(temporary))
        faults.point("cache_write")


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: the only way the OS offers)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _entries(folder: Path) -> Iterator[Path]:
    """Every file, symbolic link and other non-folder under ``folder`` (links are never followed), lazily."""
    for parent, folders, files in os.walk(folder):
        for name in [*files, *(f for f in folders if os.path.islink(os.path.join(parent, f)))]:
            yield Path(parent, name)


def write_marker(folder: Path, command: str) -> Path:
    """Record that ``command`` (as a user types it, e.g. ``nonxfer-bench train diffusion``) wrote ``folder``:
    :data:`MARKER` names the command and the sha256 of every file now in it. Call it last, when the folder is
    complete."""
    files = {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(_entries(folder))
        if path != folder / MARKER
    }
    return atomic_write(folder / MARKER, json.dumps({"written_by": command, "files": files}, indent=1) + "\n")


def written_by(command: str) -> Callable[[Path], None]:
    """The check for :func:`staged_folder` that a folder is ``command``'s own: its :data:`MARKER` names the
    command, and every file in it is one the marker lists, unchanged since."""

    def check(folder: Path) -> None:
        why = _not_written_by(folder, command)
        if why:
            raise UserError(
                f"{folder}: not a folder that `{command}` wrote ({why}), so it is not replaced; give a new or empty "
                "folder, or move this one away"
            )

    return check


def _not_written_by(folder: Path, command: str) -> str | None:
    """Why ``folder`` is not provably ``command``'s (None when it is); stops at the first foreign file."""
    marker = folder / MARKER
    if not marker.is_file() or marker.is_symlink():
        return f"it holds no {MARKER}"
    try:
        if marker.stat().st_size > MAX_MARKER_BYTES:
            raise ValueError("too large")
        data = json.loads(marker.read_bytes())
        owner, files = data["written_by"], data["files"]
        if not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return f"its {MARKER} is damaged"
    if owner != command:
        return f"its {MARKER} names {excerpt(owner, 60)}"
    for path in _entries(folder):
        name = path.relative_to(folder).as_posix()
        if path == marker:
            continue
        if path.is_symlink() or not path.is_file() or name not in files:
            return f"it holds {excerpt(name, 60)}, which {MARKER} does not list"
        if file_sha256(path) != files[name]:
            return f"{excerpt(name, 60)} changed since it was written"
    return None


def check_replaceable(target: Path, replaceable: Callable[[Path], None]) -> None:
    """Refuse (UserError) a target that is not absent, an empty folder, or a folder ``replaceable`` accepts."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(
            f"{target}: exists and is not a folder, so it is not replaced; give a new or empty folder, or move it away"
        )
    if target.is_dir() and any(target.iterdir()):
        replaceable(target)


def _stale(target: Path) -> Iterator[Path]:
    """Staging and old folders that :func:`staged_folder` made beside ``target`` in a process now gone: exactly
    its own names (``.<name>.staging-<pid>-<8 mkdtemp characters>``, ``.<name>.old-...``), folders only."""
    own = re.compile(rf"\.{re.escape(target.name)}\.(?:staging|old)-(\d+)-[a-z0-9_]{{8}}")
    for path in target.parent.iterdir():
        if (
            (match := own.fullmatch(path.name))
            and path.is_dir()
            and not path.is_symlink()
            and not _alive(int(match[1]))
        ):
            yield path


@contextlib.contextmanager
def staged_folder(target: Path, replaceable: Callable[[Path], None]) -> Iterator[Path]:
    """A new empty folder beside ``target`` to build its next contents in.

    ``target`` may only be absent, an empty folder, or a folder that ``replaceable(target)`` accepts (it raises
    :class:`UserError` otherwise, e.g. :func:`written_by`): checked before the block runs (before any work)
    and again just before the swap. When the block ends without an error the folder replaces ``target`` (two
    renames, then the old contents are deleted); on an error it is deleted and ``target`` is untouched. A kill
    leaves ``target`` as it was plus a hidden ``.<name>.staging-<pid>-*`` folder, which the next staging of the
    same target removes once its process is gone.
    """
    check_replaceable(target, replaceable)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale(target):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-{os.getpid()}-"))
    staging.chmod(0o777 & ~_umask())  # the folder that becomes the target gets mkdir's mode, not mkdtemp's 0700
    try:
        yield staging
        check_replaceable(target, replaceable)  # the target may have changed while the block ran
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-{os.getpid()}-"))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
