"""``BUNDLE.json``: what a result bundle (a suite's results folder) claims about how its cells were made, and the
sha256 of every file beside it.

A bundle is ``results/<suite>/`` as the run wrote it plus this manifest: the suite as loaded (paths inside the project
folder written relative to it, so every clone writes the same bytes), each zoo model's identity (a weight file's
sha256 included: :meth:`~nonxfer_bench.schema.suite.ModelSpec.identity`), the image-list ids the cells record, each
dataset the suite reads with the checksums of its files, the code the cells record and the code that wrote the
manifest, the draws, devices and precisions of the cells, the Python packages and the machine of the process that
wrote the manifest (normally the run's own environment, right after it), and every file's size and sha256.

Reading one is bounded: the manifest itself (:data:`MAX_MANIFEST_BYTES`), the files it lists (:data:`MAX_FILES`,
:data:`MAX_FILE_BYTES` each, :data:`MAX_BUNDLE_BYTES` in all), a folder walked without following links. A bundle
holds only regular files and folders: a link (which could point out of the folder) or a special file is refused.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.store import draws
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import Strict, describe_error
from nonxfer_bench.core.reading import open_regular
from nonxfer_bench.core.version import code_version
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.loading import suite_datasets
from nonxfer_bench.schema.suite import Suite

BUNDLE = "BUNDLE.json"
FORMAT = 1
MAX_MANIFEST_BYTES = 16 << 20  # a manifest of the largest committed folder is a few KB
MAX_FILES = 10_000  # files in a bundle (a results folder holds about a dozen)
MAX_FILE_BYTES = 1 << 30  # one file (the full ImageNet suite's gzipped cells are about 10 MB)
MAX_BUNDLE_BYTES = 4 << 30  # every file together
MAX_DEPTH = 8  # folders inside a bundle
LISTED = 64  # a dataset's files are listed one by one up to this many; beyond, their count, size and one digest
PIECE = 1 << 20
PACKAGES = (
    "nonxfer-bench",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "kornia",
    "diffusers",
    "safetensors",
    "pydantic",
    "matplotlib",
)
Sha256 = Field(pattern=r"^[0-9a-f]{64}$")
EXPECTED = "a bundle is a results folder with the BUNDLE.json that `nonxfer-bench bundle SUITE` writes"


class FileEntry(Strict):
    """One file of a bundle (or of a dataset): its size and sha256."""

    bytes: int = Field(ge=0, le=MAX_FILE_BYTES)
    sha256: str = Sha256


class DataRecord(Strict):
    """A dataset the suite reads (its key in the suite: ``dataset``, ``public``, ``attacks[3].params.dataset``), where
    its images come from (:meth:`~nonxfer_bench.datasets.base.Dataset.source`) and its files: how many, their bytes,
    one sha256 over every ``name sha256`` line, and each file when there are at most :data:`LISTED`. ``files`` is
    None for a dataset that names no files."""

    key: str = Field(max_length=200)
    spec: dict[str, Any]
    source: list[str] = Field(max_length=64)
    files: int | None = Field(None, ge=0, le=10**9)
    bytes: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    listing: dict[str, FileEntry] = Field({}, max_length=LISTED)


class Environment(Strict):
    """Where the manifest was written: Python, the operating system, the machine, and the versions of
    :data:`PACKAGES` (None: not installed)."""

    python: str = Field(max_length=200)
    platform: str = Field(max_length=500)
    machine: str = Field(max_length=200)
    packages: dict[str, str | None] = Field(max_length=100)


def _safe_name(name: str) -> str:
    """A file's path inside the bundle: relative, POSIX, no ``..``, no empty part, not BUNDLE.json itself."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in parts)
        or name != "/".join(parts)
    ):
        raise ValueError(f"{excerpt(name)} is not a relative path inside the bundle (no '..', no absolute path)")
    if len(parts) > MAX_DEPTH + 1 or name == BUNDLE:
        raise ValueError(f"{excerpt(name)} cannot be a file of the bundle")
    return name


class Manifest(Strict):
    """The contents of ``BUNDLE.json`` (see the module docstring)."""

    format: Literal[1] = FORMAT
    suite: str = Field(max_length=128)
    suite_file: str = Field(
        max_length=1000, description="the suite file, relative to the project folder (the folder that holds results/)"
    )
    resolved_suite: dict[str, Any] = Field(
        description="Suite.model_dump(mode='json') of the loaded suite; paths inside the project relative to it"
    )
    models: dict[str, dict[str, Any]] = Field(
        max_length=10_000, description="each zoo model's identity (weight sha256 included), as cell keys hash it"
    )
    image_ids: list[str] = Field(
        max_length=1000, description="the outcomes.ids the cells record: which images, in which order"
    )
    datasets: list[DataRecord] = Field(max_length=1000)
    cells: int = Field(ge=0, le=10**9)
    groups: int = Field(ge=0, le=10**9)
    draws: Literal["cpu", "cuda"] | None
    devices: list[str] = Field(max_length=100)
    precisions: list[str] = Field(max_length=100)
    code: list[str] = Field(max_length=1000, description="the code the cells record (nonxfer_bench.core.version)")
    written_by: str = Field(max_length=500, description="the code that wrote this manifest")
    environment: Environment
    files: dict[str, FileEntry] = Field(max_length=MAX_FILES)

    @field_validator("suite_file")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if not value or value.startswith("/") or "\\" in value or ".." in parts:
            raise ValueError(f"{excerpt(value)} is not a path inside the project folder")
        return value

    @field_validator("files")
    @classmethod
    def _names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            _safe_name(name)
        return files

    @model_validator(mode="after")
    def _bounded(self) -> "Manifest":
        total = sum(entry.bytes for entry in self.files.values())
        if total > MAX_BUNDLE_BYTES:
            raise ValueError(f"'files' claims {total:,} bytes; a bundle holds at most {MAX_BUNDLE_BYTES:,}")
        return self


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the bundle ``folder``; anything that is not one is one line (a :class:`UserError`)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}; {EXPECTED}")
    path = folder / BUNDLE
    if path.is_symlink() or not path.exists():
        raise UserError(f"{folder}: no {BUNDLE}{' (a symbolic link)' if path.is_symlink() else ''}; {EXPECTED}")
    with open_regular(path, EXPECTED) as handle:
        text = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(text) > MAX_MANIFEST_BYTES:
        raise UserError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; {EXPECTED}")
    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise UserError(f"{path}: not JSON ({excerpt(str(error))}); {EXPECTED}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        key, message = describe_error(error, Manifest)
        raise UserError(f"{path}: key '{key or '(top)'}': {message}; {EXPECTED}") from None


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """``folder/BUNDLE.json`` (sorted keys, two-space indent, a final newline: the same manifest gives the same
    bytes)."""
    return atomic_write(folder / BUNDLE, json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


def folder_files(folder: Path) -> dict[str, int]:
    """Every regular file under ``folder`` but its top-level BUNDLE.json (path inside it -> bytes), walked without
    following links; a link, a special file, folders deeper than :data:`MAX_DEPTH` or more than :data:`MAX_FILES`
    entries are one line."""
    found: dict[str, int] = {}
    pending = [(folder, PurePosixPath())]
    entries = 0
    while pending:
        here, inside = pending.pop()
        with os.scandir(here) as listing:
            for entry in listing:
                entries += 1
                if entries > MAX_FILES:
                    raise UserError(
                        f"{folder}: more than {MAX_FILES:,} entries; a bundle holds a suite's results (about a dozen "
                        "files)"
                    )
                name = inside / entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise UserError(
                        f"{folder}: {name} is a symbolic link; a bundle holds only regular files (copy what it points "
                        "to into the folder)"
                    )
                if stat.S_ISDIR(mode):
                    if len(name.parts) > MAX_DEPTH:
                        raise UserError(
                            f"{folder}: {name} is nested deeper than {MAX_DEPTH} folders; a bundle is a results folder"
                        )
                    pending.append((Path(entry.path), name))
                elif stat.S_ISREG(mode):
                    if str(name) != BUNDLE:
                        found[str(name)] = entry.stat(follow_symlinks=False).st_size
                else:
                    raise UserError(
                        f"{folder}: {name} is a special file (a FIFO, a device or a socket); a bundle holds only "
                        "regular files"
                    )
    return dict(sorted(found.items()))


def file_entry(path: Path, size: int) -> FileEntry:
    """The size and sha256 of a regular file of ``size`` bytes (at most :data:`MAX_FILE_BYTES`), reading no more
    than that: a file that grows while it is read is one line."""
    if size > MAX_FILE_BYTES:
        raise UserError(f"{path}: {size:,} bytes; a bundle's file is at most {MAX_FILE_BYTES:,} bytes")
    digest, read = hashlib.sha256(), 0
    with open_regular(path, "a bundle holds only regular files") as handle:
        while piece := handle.read(min(PIECE, size + 1 - read)):
            read += len(piece)
            if read > size:
                raise UserError(f"{path}: grew while it was read; check a bundle no process is writing")
            digest.update(piece)
    return FileEntry(bytes=read, sha256=digest.hexdigest())


def hashed_files(folder: Path) -> dict[str, FileEntry]:
    """Every file of the bundle ``folder`` (:func:`folder_files`) with its size and sha256, within
    :data:`MAX_BUNDLE_BYTES`."""
    sizes = folder_files(folder)
    if sum(sizes.values()) > MAX_BUNDLE_BYTES:
        raise UserError(
            f"{folder}: {sum(sizes.values()):,} bytes of files; a bundle holds at most {MAX_BUNDLE_BYTES:,}"
        )
    return {name: file_entry(folder / name, size) for name, size in sizes.items()}


def relative_paths(value: Any, project: Path) -> Any:
    """``value`` (JSON data) with every absolute path inside ``project`` written relative to it: what a suite
    resolves to is then the same in every clone."""
    if isinstance(value, dict):
        return {key: relative_paths(item, project) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item, project) for item in value]
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(project):
        return Path(value).relative_to(project).as_posix()
    return value


def dataset_record(key: str, name: str, params: dict, spec: dict) -> DataRecord:
    """The record of one dataset a suite reads: its source and the checksums of the files it names."""
    dataset = DATASETS.create(name, params)
    named = dataset.data_files()
    if named is None:
        return DataRecord(key=key, spec=spec, source=list(dataset.source()))
    listing = {}
    for file_name, path in sorted(named.items()):
        if not path.is_file():
            raise UserError(
                f"dataset {key} ({name}): its file {path} is not there; a bundle records the checksums of the files "
                "the suite read"
            )
        listing[file_name] = file_entry(path, path.stat().st_size)
    digest = hashlib.sha256(
        "".join(f"{file_name} {entry.sha256}\n" for file_name, entry in listing.items()).encode()
    ).hexdigest()
    return DataRecord(
        key=key,
        spec=spec,
        source=list(dataset.source()),
        files=len(listing),
        bytes=sum(e.bytes for e in listing.values()),
        sha256=digest,
        listing=listing if len(listing) <= LISTED else {},
    )


def dataset_records(suite: Suite, suite_file: Path) -> list[DataRecord]:
    """A record per dataset the suite reads (:func:`~nonxfer_bench.loading.suite_datasets`)."""
    return [
        dataset_record(key, spec.name, spec.params, spec.model_dump(mode="json"))
        for key, spec in suite_datasets(suite, suite_file)
    ]


def environment() -> Environment:
    """This process's Python, operating system, machine and package versions."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return Environment(
        python=platform.python_version(), platform=platform.platform(), machine=platform.machine(), packages=versions
    )


def make_manifest(
    suite: Suite, suite_file: Path, project: Path, cells: list[Cell], groups: int, folder: Path
) -> Manifest:
    """The manifest of ``folder`` (``suite``'s results folder in ``project``) holding ``cells`` (every planned cell
    of ``groups`` encoding groups): every claim above, and the sha256 of every file there."""
    return Manifest(
        suite=suite.name,
        suite_file=suite_file.relative_to(project).as_posix(),
        resolved_suite=relative_paths(suite.model_dump(mode="json"), project),
        models={model.name: model.identity() for model in suite.models},
        image_ids=sorted({cell.outcomes.ids for cell in cells if cell.outcomes is not None}),
        datasets=dataset_records(suite, suite_file),
        cells=len(cells),
        groups=groups,
        draws=draws(cells),
        devices=sorted({cell.device for cell in cells if cell.device}),
        precisions=sorted({cell.precision for cell in cells}),
        code=sorted({cell.code or "not recorded" for cell in cells}),
        written_by=code_version(),
        environment=environment(),
        files=hashed_files(folder),
    )
