"""``encode``: an image folder becomes a release of NE files for one authorized model, with its manifest and card."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import nonxfer_bench
from nonxfer_bench.core import faults
from nonxfer_bench.core.atomic import atomic_write, check_replaceable, staged_folder
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.encoders.base import Encoder
from nonxfer_bench.loading import encoder_refusal
from nonxfer_bench.metrics.image_quality import psnr_per_image, ssim_per_image
from nonxfer_bench.owner.card import write_card
from nonxfer_bench.owner.inputs import decode_source, list_sources, load_models, model_identity_hash, pick
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.storage import StorageFormat, parse_format
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.storage.formats import apply_storage, write_image
from nonxfer_bench.storage.release import (
    ATTACK,
    BESIDE,
    MANIFEST,
    check_attack_run,
    check_unchanged,
    file_sha256,
    read_manifest,
    vouched_files,
)
from nonxfer_bench.zoo import ZooModel, build_model, dataset_preprocessing

DRAWS = (
    "one generator keyed by the seed key draws every batch in file order: the same key, source files, settings and "
    "batch size give the same release (another batch size draws other noise)"
)
# the keys of the manifest encode_folder writes
WRITTEN_KEYS = frozenset(
    {"nonxfer_bench", "created", "format", "encoder", "forced_format", "model", "key_id", "batch_size", "draws",
     "decode", "release_size", "psnr_mean", "psnr_min", "ssim_mean", "authorized_agreement", "notes", "images"}
)  # fmt: skip
WRITTEN_ENTRY_KEYS = frozenset(
    {"file", "source", "source_sha256", "sha256", "encoded_psnr", "psnr", "ssim"}
)  # and of each of its images
CROP_PCT = 1.0  # no crop beyond what makes an image square: an image at the model's input size is taken as it is


def key_id(seed_key: str) -> str:
    """A public identifier of a secret seed key (never the key itself)."""
    return hashlib.sha256(b"nonxfer-bench seed key\x00" + seed_key.encode()).hexdigest()[:16]


def storage_refusal(encoder_name: str, encoder_class: type, fmt: str) -> str | None:
    """Why storing ``encoder_name``'s releases in ``fmt`` would break them (the encoder's ``storage_formats``), or
    None."""
    declared = [parse_format(name).name for name in encoder_class.storage_formats]
    if parse_format(fmt).name in declared:
        return None
    return (
        f"--format {fmt}: encoder {encoder_name} keeps working only in {', '.join(declared)} (its declared storage "
        f"formats; {fmt} would change what the authorized model sees); choose one of those, or pass --force to write "
        "it anyway"
    )


@dataclass(frozen=True)
class _Recipe:
    """What encodes and stores every batch of one release: the authorized model (as run and as the owner deploys it),
    the encoder at its strength drawing from the release's one keyed generator, the storage format, and the decode
    settings that make a source image the model's input."""

    model: ZooModel
    deployed: ZooModel
    encoder: Encoder
    strength: float
    generator: torch.Generator
    storage: StorageFormat
    decode: dict[str, Any]
    channels: int
    batch_size: int


def encode_folder(
    zoo: Path,
    model_name: str,
    encoder_name: str,
    strength: float,
    fmt: str,
    seed_key: str,
    source: Path,
    output: Path,
    params: dict[str, Any] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    force: bool = False,
    settings: RunSettings = RunSettings(device="cpu"),
) -> dict:
    """Encode every image under ``source`` into NE files under ``output`` (same relative layout) plus ``manifest.json``
    and the protection card (:mod:`nonxfer_bench.owner.card`, "not yet attacked"); returns the manifest.

    Images are decoded at the authorized model's input size with no crop beyond squaring (:data:`CROP_PCT`; the
    manifest's ``notes`` count images resized or cropped). A storage format the encoder does not declare
    (``Encoder.storage_formats``) is refused unless ``force``. An existing release at ``output`` is replaced only with
    ``overwrite``, and anything else there (:func:`_check_output`) never. The authorized model and the encoder run on
    ``settings.device``; the release's draws come from one generator keyed by ``seed_key`` (:data:`DRAWS`). The manifest
    records each file's SHA-256, PSNR and SSIM against its decoded source, the SHA-256 of each source as read (what
    ``verify`` and ``attack`` check the originals against), and how often the authorized model keeps its prediction
    after storage."""
    storage = _storage_format(fmt)
    _check_seed_key(seed_key)
    spec, encoder = _protection(zoo, model_name, encoder_name, params)
    refusal = storage_refusal(encoder_name, type(encoder), storage.name)
    if refusal and not force:
        raise UserError(refusal)
    files = list_sources(source)
    output = Path(output)
    _check_output(Path(source), output, overwrite)
    _check_targets(source, files, storage)
    recipe = _recipe(spec, encoder, strength, storage, seed_key, batch_size, settings)
    with staged_folder(
        output, _release
    ) as staging:  # the new release appears whole (manifest last), or the old one stays
        desc = f"encode {model_name}/{encoder_name}@{strength:g} -> {storage.name}"
        entries, notes, kept = _encode_images(recipe, Path(source), files, staging, desc, progress)
        manifest = _manifest(recipe, encoder_name, refusal, spec, seed_key, entries, notes, kept)
        write_card(staging, manifest)
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _storage_format(fmt: str) -> StorageFormat:
    """The storage format ``--format`` names, refused in one line when it names none."""
    try:
        return parse_format(fmt)
    except ValueError as error:
        raise UserError(f"--format: {error}") from None


def _check_seed_key(seed_key: str) -> None:
    """Refuse an empty seed key: every draw of the release comes from it."""
    if not seed_key:
        raise UserError(
            "no seed key: give --seed-key or set NXB_SEED_KEY (keep it secret; the manifest holds only its hash)"
        )


def _protection(
    zoo: Path, model_name: str, encoder_name: str, params: dict[str, Any] | None
) -> tuple[ModelSpec, Encoder]:
    """The zoo's ``model_name`` and the encoder ``encoder_name`` made with ``params``, refused when that encoder cannot
    protect that model (before any model is built)."""
    spec = pick(load_models(zoo)[0], model_name, Path(zoo))
    encoder = ENCODERS.create(encoder_name, params or {})
    problem = encoder_refusal(encoder, spec)
    if problem:
        raise UserError(f"--encoder {encoder_name} cannot protect --model {model_name}: {problem}")
    return spec, encoder


def _check_targets(source: Path, files: list[Path], storage: StorageFormat) -> None:
    """Refuse sources whose release file would take a name the release keeps for its own files, or that two sources
    would both be written as (same path but for the suffix): one file would silently replace another."""
    targets: dict[Path, Path] = {}
    for relative in files:
        target = relative.with_suffix(storage.suffix)
        if target.parts[0] in (*BESIDE, ATTACK, MANIFEST):
            raise UserError(
                f"{Path(source) / target.parts[0]}: a release keeps the name {target.parts[0]!r} for its own files; "
                "rename it"
            )
        if target in targets:
            raise UserError(f"{source}: {targets[target]} and {relative} would both be written as {target}; rename one")
        targets[target] = relative


def _recipe(
    spec: ModelSpec,
    encoder: Encoder,
    strength: float,
    storage: StorageFormat,
    seed_key: str,
    batch_size: int,
    settings: RunSettings,
) -> _Recipe:
    """Build the authorized model on ``settings.device`` and key the release's generator and the deployed model's
    (each a fresh generator from ``seed_key``, so neither shifts the other's draws)."""
    model = build_model(spec).to_device(torch.device(settings.device))
    decode = dataset_preprocessing(model.preprocessing) | {"crop_pct": CROP_PCT}
    generator = keyed_generator(seed_key, "encode")
    deployed = encoder.authorized_view(
        model, keyed_generator(seed_key, "encode")
    )  # as the owner deploys it (a keyed scheme's key)
    return _Recipe(model, deployed, encoder, strength, generator, storage, decode, model.input_size[0], batch_size)


def _encode_images(
    recipe: _Recipe, source: Path, files: list[Path], staging: Path, desc: str, progress: bool
) -> tuple[list[dict], dict[str, int], int]:
    """Encode ``files`` in batches of ``recipe.batch_size``, in file order (the order the generator's draws follow),
    into ``staging``; returns the manifest entry of each file, the count of each decode note, and how many images the
    deployed model still classifies as the authorized model does the decoded source."""
    model, batch_size = recipe.model, recipe.batch_size
    entries, notes, kept = [], {}, 0
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(files), batch_size):
        batch_files = files[start : start + batch_size]
        decoded, source_hashes = _decode_batch(recipe, source, batch_files, notes)
        clean = model.prepare(torch.stack(decoded))
        with torch.no_grad():
            encoding = recipe.encoder.encode(clean.to(model.device), model, recipe.strength, recipe.generator)
        stored = apply_storage(encoding.images.cpu(), recipe.storage)
        kept += int((recipe.deployed.predict(stored, batch_size) == model.predict(clean, batch_size)).sum())
        entries += _write_batch(
            recipe.storage, staging, batch_files, source_hashes, clean, stored, encoding.achieved_psnr.cpu()
        )
        bar.update(len(batch_files))
    bar.close()
    return entries, notes, kept


def _decode_batch(
    recipe: _Recipe, source: Path, batch_files: list[Path], notes: dict[str, int]
) -> tuple[list[torch.Tensor], list[str]]:
    """Decode ``batch_files`` (relative to ``source``) at the model's input size, counting each image's notes (resized,
    cropped, alpha dropped, ...) into ``notes``; returns the decoded images and the SHA-256 of each file, hashed just
    before it is decoded."""
    decode, decoded, hashes = recipe.decode, [], []
    for relative in batch_files:
        hashes.append(file_sha256(source / relative))
        image, image_notes = decode_source(
            source / relative, decode["size"], decode["crop_pct"], recipe.channels, decode["interpolation"]
        )
        for note in image_notes:
            notes[note] = notes.get(note, 0) + 1
        decoded.append(image)
    return decoded, hashes


def _write_batch(
    storage: StorageFormat,
    staging: Path,
    batch_files: list[Path],
    source_hashes: list[str],
    clean: torch.Tensor,
    stored: torch.Tensor,
    encoded_psnr: torch.Tensor,
) -> list[dict]:
    """Write each stored image under ``staging`` at its source's relative path (with the format's suffix); returns
    their manifest entries: the source's path and SHA-256, the SHA-256 of the file as written, and PSNR and SSIM against
    the decoded source."""
    psnr, ssim = psnr_per_image(clean, stored), ssim_per_image(clean, stored)
    entries = []
    rows = zip(batch_files, source_hashes, stored, encoded_psnr, psnr, ssim)
    for relative, source_sha256, image, image_psnr, stored_psnr, stored_ssim in rows:
        target = (staging / relative).with_suffix(storage.suffix)
        write_image(target, image, storage)
        faults.point("release_image_written")
        entries.append(
            {
                "file": target.relative_to(staging).as_posix(),
                "source": relative.as_posix(),
                "source_sha256": source_sha256,
                "sha256": file_sha256(target),
                "encoded_psnr": _round(image_psnr),
                "psnr": _round(stored_psnr),
                "ssim": _round(stored_ssim),
            }
        )
    return entries


def _manifest(
    recipe: _Recipe,
    encoder_name: str,
    refusal: str | None,
    spec: ModelSpec,
    seed_key: str,
    entries: list[dict],
    notes: dict[str, int],
    kept: int,
) -> dict:
    """The release's manifest (the keys of :data:`WRITTEN_KEYS`): what made it, how to decode its sources again, and
    its images with their quality and the authorized model's agreement after storage."""
    encoder, finite = recipe.encoder, [e["psnr"] for e in entries if e["psnr"] is not None]
    return {
        "nonxfer_bench": nonxfer_bench.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": recipe.storage.name,
        "encoder": {
            "name": encoder_name,
            "params": encoder.params.model_dump(mode="json"),
            "version": type(encoder).version,
            "strength": recipe.strength,
            "strength_unit": type(encoder).strength_unit,
        },
        "forced_format": refusal,  # None unless --force wrote a format the encoder does not declare
        "model": {
            "name": spec.name,
            "arch": spec.arch,
            "identity_hash": model_identity_hash(spec),
            "weights_sha256": spec.identity()["weights"].get("sha256"),
        },
        "key_id": key_id(seed_key),
        "batch_size": recipe.batch_size,
        "draws": DRAWS,
        "decode": {**recipe.decode, "channels": recipe.channels},
        "release_size": list(recipe.model.input_size),
        "psnr_mean": round(sum(finite) / len(finite), 4) if finite else None,
        "psnr_min": min(finite) if finite else None,
        "ssim_mean": round(sum(e["ssim"] for e in entries) / len(entries), 4),
        "authorized_agreement": {"kept": kept, "n": len(entries)},
        "notes": notes,
        "images": entries,
    }


def _check_output(source: Path, output: Path, overwrite: bool) -> None:
    """The output folder neither contains nor lies inside the input folder (encode would read its own
    release, or mix it with the originals), and is new, empty, or (with ``overwrite``) a release: nothing
    else is ever replaced."""
    source_real, output_real = source.resolve(), output.resolve()
    if output_real == source_real or output_real.is_relative_to(source_real) or source_real.is_relative_to(output_real):
        raise UserError(
            f"{output}: the output folder and the input folder {source} must not contain each other; choose a folder "
            "outside the input"
        )
    check_replaceable(output, _release)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(
            f"{output}: holds a release written by an earlier encode; pass --overwrite to replace it, or choose a new "
            "or empty folder"
        )


def _release(folder: Path) -> None:
    """Refuse (UserError) to replace ``folder`` unless it is provably a release encode wrote, unchanged: a manifest of
    only the keys encode writes, every entry with a SHA-256 that its file still has, no file it does not list besides
    verify's ``verify.json``, the protection card (:func:`~nonxfer_bench.storage.release.vouched_files`) and a finished
    ``attack`` run (:func:`~nonxfer_bench.storage.release.check_attack_run`)."""
    try:
        manifest = read_manifest(folder)
        _written_keys(manifest, folder / MANIFEST)
        check_unchanged(vouched_files(folder, manifest), manifest, str(folder / MANIFEST))
        check_attack_run(folder / ATTACK)
    except UserError as error:
        raise UserError(
            f"{folder}: not a release that encode may replace ({error}); choose a new or empty folder"
        ) from None


def _written_keys(manifest: dict, where: Path) -> None:
    """Refuse a manifest with a key encode does not write, or an entry without the SHA-256 that proves its file."""
    unknown = sorted(set(manifest) - WRITTEN_KEYS)
    if unknown:
        raise UserError(
            f"{where}: key {excerpt(unknown[0], 60)} is not one encode writes ({', '.join(sorted(WRITTEN_KEYS))})"
        )
    for i, entry in enumerate(manifest["images"]):
        unknown = sorted(set(entry) - WRITTEN_ENTRY_KEYS)
        if unknown:
            raise UserError(
                f"{where}: images[{i}] key {excerpt(unknown[0], 60)} is not one encode writes "
                f"({', '.join(sorted(WRITTEN_ENTRY_KEYS))})"
            )
        if not entry.get("sha256"):
            raise UserError(
                f"{where}: images[{i}] records no sha256, so nothing proves {excerpt(entry['file'], 60)} is the file "
                "encode wrote"
            )


def _round(value: torch.Tensor) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None
