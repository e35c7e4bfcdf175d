"""Atomic writes: a killed process leaves the old file (or folder) or the new one, never half of one.

Every temporary name is unique (``tempfile``), so two processes writing the same target never share a
temporary file; a folder is built beside its target and swapped in only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

from nonxfer_bench.core import faults


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary path beside ``path`` (same suffix, so writers pick the right format), renamed onto
    ``path`` when the block ends without an error and removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(handle)
    temporary = Path(name)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new empty folder beside ``target`` to build its next contents in.

    When the block ends without an error the folder replaces ``target`` (two renames, then the old contents
    are deleted); on an error it is deleted and ``target`` is untouched. A kill leaves ``target`` as it was
    plus a hidden ``.<name>.staging-<pid>-*`` folder, which the next staging of the same target removes
    once its process is gone.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*-*-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-{os.getpid()}-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-{os.getpid()}-"))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
