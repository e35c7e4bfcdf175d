"""A release folder as ``encode`` writes it: the released files, ``manifest.json`` that vouches for them, and the
files that commands add beside them later.

A release holds exactly the files its manifest lists plus, optionally, :data:`BESIDE` (``verify``'s scores and the
protection card) and the folder :data:`ATTACK` (an ``attack`` run on it). Anything else means the folder was changed
after ``encode``: :func:`vouched_files` refuses it, and ``encode --overwrite`` replaces only such a folder. Each
manifest entry records the file's SHA-256 (releases written since it was added), checked when a file is read
(:func:`read_released`), and its source image's SHA-256 (``source_sha256``, since it was added), against which
``verify``, ``attack`` and the ``stored_release`` encoder check the originals they are given (:func:`check_sources`):
an original changed after encode is refused, not scored in place of the one the release was made from. The reader here
is shared by ``verify``, ``attack`` and the ``stored_release`` encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nonxfer_bench.core.atomic import written_by
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error
from nonxfer_bench.schema.files import validate
from nonxfer_bench.schema.storage import parse_format
from nonxfer_bench.schema.suite import MAX_SIDE
from nonxfer_bench.storage.formats import read_image

MANIFEST = "manifest.json"
VERIFY = "verify.json"  # written by verify beside the manifest
CARD = "PROTECTION.md"  # the protection card, for people
CARD_DATA = "protection.json"  # the same card, for programs
BESIDE = (VERIFY, CARD, CARD_DATA)
ATTACK = "attack"  # the folder `attack` writes its run into, unless given another
ATTACK_COMMAND = "nonxfer-bench attack"  # names the command in the ownership marker of its run folder
SUITE_FILE = "suite.yaml"  # the run's suite, in its folder
HEADER = "# Written by `nonxfer-bench attack`"  # the first line of a suite file `attack` wrote
MAX_MANIFEST_BYTES = 256 << 20
CHUNK = 1 << 20  # files are hashed in chunks of this many bytes: memory stays bounded whatever their size

log = logging.getLogger(__name__)


class ManifestImage(BaseModel):
    """One released file: its path in the release and SHA-256, and the source image it came from (its path under the
    folder encode read and the SHA-256 of its bytes). Either hash is missing in releases written before it was
    recorded."""

    model_config = ConfigDict(extra="allow", strict=True)
    file: str = Field(min_length=1, max_length=4096)
    source: str = Field(min_length=1, max_length=4096)
    source_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ManifestModel(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arch: str
    identity_hash: str


class ManifestEncoder(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str
    strength: float
    params: dict[str, Any] = {}


class ManifestDecode(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    size: int = Field(ge=1, le=MAX_SIDE)
    crop_pct: float = Field(gt=0, le=1)
    channels: int = Field(ge=1, le=4)
    interpolation: Literal["bilinear", "bicubic", "nearest"]


class ManifestAgreement(BaseModel):
    """How often the authorized model kept its prediction after storage: ``kept`` of ``n`` images."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kept: int = Field(ge=0)
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _kept(self) -> ManifestAgreement:
        if self.kept > self.n:
            raise ValueError(f"kept {self.kept} is more than n {self.n}; give 0 <= kept <= n")
        return self


class Manifest(BaseModel):
    """What ``verify``, ``attack`` and the protection card rely on in ``manifest.json``; anything else is refused with
    one line."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    format: str
    encoder: ManifestEncoder
    model: ManifestModel
    key_id: str
    decode: ManifestDecode
    release_size: tuple[int, int, int] | None = None
    ssim_mean: float
    psnr_mean: float | None = None
    psnr_min: float | None = None
    authorized_agreement: ManifestAgreement
    images: list[dict[str, Any]] = Field(
        min_length=1, description="checked entry by entry (ManifestImage), stopping at the first bad one"
    )

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        parse_format(value)  # ValueError names the valid formats
        return value

    @field_validator("release_size")
    @classmethod
    def _size(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(1 <= v <= MAX_SIDE for v in value):
            raise ValueError(f"release_size {list(value)} is outside 1..{MAX_SIDE}")
        return value


def read_manifest(release: Path) -> dict:
    """``manifest.json`` of a release, checked against :class:`Manifest` (bounded size, one line on any problem)."""
    path = Path(release) / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise UserError(f"{Path(release).absolute()}: no {MANIFEST} (not a folder written by `nonxfer-bench encode`)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes; a manifest has at most {MAX_MANIFEST_BYTES:,}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: not valid JSON ({excerpt(str(error), 120)})") from None
    validate(Manifest, data, path)
    for i, entry in enumerate(data["images"]):  # one by one: a million bad entries fail at the first, fast
        try:
            ManifestImage.model_validate(entry)
        except ValidationError as error:
            key, message = describe_error(error, ManifestImage)
            raise UserError(f"{path}: key 'images[{i}]{'.' + key if key else ''}': {message}") from None
    return data


def manifest_sha256(release: Path) -> str:
    """The SHA-256 of a release's manifest: with each file's own hash in it, it names the release's contents."""
    return hashlib.sha256((Path(release) / MANIFEST).read_bytes()).hexdigest()


def inside(root: Path, name: str, what: str, where: str) -> Path:
    """``root / name`` for a relative POSIX path from the manifest that stays inside ``root``."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name or not relative.parts:
        raise UserError(
            f"{where}: {what} {excerpt(name)} is not a relative path inside the folder (no '..', not absolute)"
        )
    return root / relative


def vouched_files(release: Path, manifest: dict) -> list[Path]:
    """The release's image files in manifest order, refusing any listed file that is missing, duplicated,
    outside the release or a symbolic link, and any file in the release that the manifest does not list
    (besides :data:`BESIDE` and the :data:`ATTACK` folder). What reads the release needs no more; replacing it does
    (:func:`check_attack_run`)."""
    where = str(release / MANIFEST)
    files = [inside(release, e["file"], f"images[{i}].file", where) for i, e in enumerate(manifest["images"])]
    seen: set[Path] = set()
    for i, path in enumerate(files):
        if path in seen:
            raise UserError(f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is listed twice")
        if path.relative_to(release).parts[0] in (*BESIDE, ATTACK, MANIFEST):
            raise UserError(
                f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is a name a release keeps for "
                "its own files"
            )
        seen.add(path)
        if any(part.is_symlink() for part in (path, *path.parents) if part.is_relative_to(release) and part != release):
            raise UserError(
                f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is a symbolic link; a release "
                "holds plain files"
            )
        if not path.is_file():
            raise UserError(
                f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is missing from the release"
            )
    allowed = seen | {release / MANIFEST} | {release / name for name in BESIDE}
    attack = release / ATTACK
    extra = sorted(
        str(p.relative_to(release))
        for p in release.rglob("*")
        if (p.is_file() or p.is_symlink())
        and p not in allowed
        and not (p.is_relative_to(attack) and attack.is_dir() and not attack.is_symlink())
    )
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise UserError(
            f"{release}: files the manifest does not list: {', '.join(excerpt(e, 60) for e in extra[:3])}{more}; the "
            "release was changed after encode"
        )
    return files


def check_attack_run(folder: Path) -> None:
    """Refuse (UserError) a release's :data:`ATTACK` folder unless it is absent or provably an ``attack`` run: its
    :data:`SUITE_FILE` starts with :data:`HEADER` and its ownership marker (written when the run finished) lists every
    file in it, unchanged since."""
    if not folder.exists() and not folder.is_symlink():
        return
    suite = folder / SUITE_FILE
    if folder.is_symlink() or not folder.is_dir() or suite.is_symlink() or not suite.is_file():
        raise UserError(f"{folder}: holds no {SUITE_FILE} that `{ATTACK_COMMAND}` wrote; move the folder away")
    with open(suite, "rb") as handle:
        if handle.read(len(HEADER)) != HEADER.encode():
            raise UserError(f"{suite}: not a suite file that `{ATTACK_COMMAND}` wrote; move the folder away")
    written_by(ATTACK_COMMAND)(folder)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks of :data:`CHUNK`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_unchanged(files: list[Path], manifest: dict, where: str) -> None:
    """Refuse a release whose files are not those encode wrote (each file's SHA-256 against the manifest's, read in
    chunks): ``attack`` checks every file before any work, where a run would meet the first changed one midway."""
    for path, entry in zip(files, manifest["images"]):
        check_released(path, entry, where)


def check_released(path: Path, entry: dict, where: str) -> None:
    """Refuse the released file at ``path`` unless its SHA-256 is the one its manifest ``entry`` records (an entry
    written before encode recorded it is not checked)."""
    if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
        raise UserError(
            f"{where}: {excerpt(entry['file'])} is not the file encode wrote (its SHA-256 differs from the "
            "manifest's); the release was changed after encode"
        )


def check_source(path: Path, entry: dict) -> None:
    """Refuse the original at ``path`` unless it is the file encode read for the manifest ``entry`` (its SHA-256 against
    the entry's ``source_sha256``, read in chunks); an entry without one is not checked."""
    expected = entry.get("source_sha256")
    if not expected:
        return
    if not path.is_file():
        what = "not a regular file" if path.exists() else "not found"
        raise UserError(f"{path}: {what}, and it is a source of the release; give the folder encode read, as it was")
    found = file_sha256(path)
    if found != expected:
        raise UserError(
            f"{path}: differs from the image encode read for this release (SHA-256 {found[:12]}..., the manifest "
            f"records {expected[:12]}...): it was changed after encode; give the folder encode read, as it was, or "
            "encode again"
        )


def check_sources(originals: Path, manifest: dict, where: str) -> None:
    """Refuse originals that are not the files encode read (:func:`check_source`, every source before any work). A
    manifest written before sources were hashed cannot be checked by content: one notice says so."""
    entries = manifest["images"]
    unpinned = sum(not entry.get("source_sha256") for entry in entries)
    if 0 < unpinned < len(entries):  # encode hashes every source or (before it did) none
        raise UserError(
            f"{where}: records a source SHA-256 for {len(entries) - unpinned} of {len(entries)} images but not the "
            "others: encode writes all or none, so the manifest was edited after encode; encode again"
        )
    for i, entry in enumerate(entries):
        check_source(inside(originals, entry["source"], f"images[{i}].source", where), entry)
    if unpinned:
        log.warning(
            f"{where}: records no SHA-256 for {unpinned} of {len(entries)} source image(s) (written before encode "
            "recorded them): those originals are matched by name only, not checked by content; encode again to pin "
            "them"
        )


def read_released(path: Path, entry: dict, where: str) -> torch.Tensor:
    """One released file as C x H x W float in [0, 1] units, refused when its SHA-256 differs from the manifest's."""
    check_released(path, entry, where)
    return read_image(path)[0]
