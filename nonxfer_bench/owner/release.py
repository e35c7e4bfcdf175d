"""The data owner's commands: ``encode`` an image folder into a release of NE files, ``verify`` one."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.schema.storage import parse_format
from nonxfer_bench.storage.formats import apply_storage, is_16bit, read_image, write_image

MANIFEST = "manifest.json"


def decode_source(path: Path, size: int, crop_pct: float, channels: int, interpolation: str) -> tuple[torch.Tensor, list[str]]:
    """A source image as the authorized model's input (C x size x size float in [0, 1]) and notes.

    8-bit images go through :func:`nonxfer_bench.datasets.base.decode_image` (exactly timm's eval transform);
    16-bit PNGs keep their depth: resized (antialiased, in torch) and center-cropped the same way."""
    from PIL import Image

    from nonxfer_bench.datasets.base import decode_image

    notes: list[str] = []
    if is_16bit(path):
        image, notes = read_image(path)
        notes.append("16-bit source")
        if image.shape[0] != channels:
            image = image.mean(0, keepdim=True) if channels == 1 else image.expand(3, -1, -1)
        short = max(size, math.floor(size / crop_pct))
        height, width = image.shape[-2:]
        new = (int(short * height / width), short) if width <= height else (short, int(short * width / height))
        if new != (height, width):
            mode = interpolation if interpolation in ("bilinear", "bicubic") else "nearest"
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            image = F.interpolate(image[None], size=new, mode=mode, **kwargs)[0].clamp(0, 1)
        top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        return image[:, top : top + size, left : left + size].contiguous(), notes
    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                notes.append("alpha dropped")
    except Exception:
        pass  # decode_image reports the unreadable file
    return decode_image(path, size=size, crop_pct=crop_pct, channels=channels, interpolation=interpolation).float() / 255.0, notes


# ---------------------------------------------------------------------------------------------------
# encode / verify


def key_id(seed_key: str) -> str:
    """A public identifier of a secret seed key (never the key itself)."""
    return hashlib.sha256(b"nonxfer-bench seed key\x00" + seed_key.encode()).hexdigest()[:16]


def model_identity_hash(spec) -> str:
    from nonxfer_bench.core.hashing import stable_hash

    return stable_hash(spec.identity())


def load_models(path: Path) -> list:
    """Zoo models from a zoo file (top-level ``models``) or a suite file (its ``zoo``)."""
    from nonxfer_bench.loading import load_suite, load_zoo
    from nonxfer_bench.schema.files import read_yaml

    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict) and "models" in data:
        return load_zoo(path).models
    if isinstance(data, dict) and "zoo" in data:
        return load_suite(path, require_weights=False).models
    raise UserError(f"{path}: neither a zoo file (key 'models') nor a suite file (key 'zoo')")


def _pick(models: list, name: str, path: Path):
    for model in models:
        if model.name == name:
            return model
    raise UserError(f"{path}: no model {name!r}; valid: {', '.join(m.name for m in models)}")


def list_sources(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), relative to it."""
    from nonxfer_bench.datasets.base import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: input folder not found")
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


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
) -> dict:
    """Encode every image under ``source`` into NE files under ``output`` (same relative layout) plus
    ``manifest.json``; returns the manifest."""
    from tqdm import tqdm

    import nonxfer_bench
    from nonxfer_bench.core.hashing import keyed_generator
    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.metrics.image_quality import psnr_per_image
    from nonxfer_bench.zoo import build_model, dataset_preprocessing

    try:
        storage = parse_format(fmt)
    except ValueError as error:
        raise UserError(f"--format: {error}") from None
    if not seed_key:
        raise UserError("no seed key: give --seed-key or set NXB_SEED_KEY (keep it secret; the manifest holds only its hash)")
    spec = _pick(load_models(zoo), model_name, Path(zoo))
    encoder = ENCODERS.create(encoder_name, params or {})
    files = list_sources(source)
    output = Path(output)
    if output.resolve() == Path(source).resolve():
        raise UserError(f"{output}: output folder must differ from the input folder")
    targets: dict[Path, Path] = {}
    for relative in files:
        target = relative.with_suffix(storage.suffix)
        if target in targets:
            raise UserError(f"{source}: {targets[target]} and {relative} would both be written as {target}; rename one")
        targets[target] = relative
    model = build_model(spec)
    decode = dataset_preprocessing(model.preprocessing)
    channels = model.input_size[0]
    entries, notes = [], {}
    bar = tqdm(total=len(files), desc=f"encode {model_name}/{encoder_name}@{strength:g} -> {storage.name}", unit="img", disable=not progress)
    for batch_index, start in enumerate(range(0, len(files), batch_size)):
        batch_files = files[start : start + batch_size]
        decoded = []
        for relative in batch_files:
            image, image_notes = decode_source(Path(source) / relative, decode["size"], decode["crop_pct"], channels, decode["interpolation"])
            for note in image_notes:
                notes[note] = notes.get(note, 0) + 1
            decoded.append(image)
        clean = model.prepare(torch.stack(decoded))
        with torch.no_grad():
            encoding = encoder.encode(clean, model, strength, keyed_generator(seed_key, "encode", batch_index))
        stored = apply_storage(encoding.images, storage)
        psnr = psnr_per_image(clean, stored)
        for relative, image, encoded_psnr, stored_psnr in zip(batch_files, stored, encoding.achieved_psnr, psnr):
            target = (output / relative).with_suffix(storage.suffix)
            write_image(target, image, storage)
            entries.append(
                {
                    "file": target.relative_to(output).as_posix(),
                    "source": relative.as_posix(),
                    "encoded_psnr": _round(encoded_psnr),
                    "psnr": _round(stored_psnr),
                }
            )
        bar.update(len(batch_files))
    bar.close()
    finite = [e["psnr"] for e in entries if e["psnr"] is not None]
    manifest = {
        "nonxfer_bench": nonxfer_bench.__version__,
        "format": storage.name,
        "encoder": {
            "name": encoder_name,
            "params": encoder.params.model_dump(mode="json"),
            "version": type(encoder).version,
            "strength": strength,
            "strength_unit": type(encoder).strength_unit,
        },
        "model": {"name": spec.name, "arch": spec.arch, "identity_hash": model_identity_hash(spec)},
        "key_id": key_id(seed_key),
        "decode": {**decode, "channels": channels},
        "release_size": list(model.input_size),
        "psnr_mean": round(sum(finite) / len(finite), 4) if finite else None,
        "psnr_min": min(finite) if finite else None,
        "notes": notes,
        "images": entries,
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _round(value: torch.Tensor) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def read_manifest(release: Path) -> dict:
    path = Path(release) / MANIFEST
    if not path.is_file():
        raise UserError(f"{release}: no {MANIFEST} (not a folder written by `nonxfer-bench encode`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def verify_release(
    release: Path,
    zoo: Path,
    model_names: list[str] | None = None,
    originals: Path | None = None,
    labels_from_folders: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Read a release back and score each model on it: agreement with the model's prediction on the
    originals (when given) and accuracy when labels come from the first folder of each source path
    (sorted folder names = class indices, the ImageNet-val layout). Writes ``verify.json``."""
    from tqdm import tqdm

    from nonxfer_bench.zoo import build_model

    release = Path(release)
    manifest = read_manifest(release)
    models = load_models(zoo)
    names = model_names or [m.name for m in models]
    specs = [_pick(models, name, Path(zoo)) for name in names]
    entries = manifest["images"]
    images = []
    for entry in tqdm(entries, desc="read release", unit="img", disable=not progress):
        image, _ = read_image(release / entry["file"])
        images.append(image)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise UserError(f"{release}: released images differ in shape ({', '.join(map(str, sorted(shapes)))})")
    released = torch.stack(images)
    clean = None
    if originals is not None:
        decode = manifest["decode"]
        clean = torch.stack(
            [
                decode_source(Path(originals) / e["source"], decode["size"], decode["crop_pct"], decode["channels"], decode["interpolation"])[0]
                for e in tqdm(entries, desc="read originals", unit="img", disable=not progress)
            ]
        )
    labels = None
    classes: list[str] = []
    if labels_from_folders:
        folders = [Path(e["source"]).parts[0] if len(Path(e["source"]).parts) > 1 else None for e in entries]
        if any(f is None for f in folders):
            raise UserError(f"{release}: --labels needs every source image inside a class folder (root/<class>/<image>)")
        classes = sorted(set(folders))
        labels = torch.tensor([classes.index(f) for f in folders])
    rows = []
    for spec in tqdm(specs, desc="verify models", unit="model", disable=not progress):
        model = build_model(spec)
        predictions = model.predict(released, batch_size)
        row: dict[str, Any] = {
            "model": spec.name,
            "role": "authorized" if model_identity_hash(spec) == manifest["model"]["identity_hash"] else "unauthorized",
            "n": len(predictions),
        }
        clean_predictions = model.predict(clean, batch_size) if clean is not None else None
        if clean_predictions is not None:
            row["agreement"] = float((predictions == clean_predictions).double().mean())
        if labels is not None:
            row["accuracy"] = float((predictions == labels).double().mean())
            if clean_predictions is not None:
                row["clean_accuracy"] = float((clean_predictions == labels).double().mean())
        rows.append(row)
    result = {
        "release": str(release),
        "format": manifest["format"],
        "encoder": manifest["encoder"],
        "authorized": manifest["model"],
        "key_id": manifest["key_id"],
        "psnr_mean": manifest.get("psnr_mean"),
        "classes": classes,
        "models": rows,
    }
    (release / "verify.json").write_text(json.dumps(result, indent=1))
    return result


def format_table(rows: list[dict]) -> str:
    columns = ["model", "role", "n", "agreement", "accuracy", "clean_accuracy"]
    columns = [c for c in columns if any(c in r for r in rows)]

    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        if value is None:
            return ""
        return f"{100 * value:.1f}" if column in ("agreement", "accuracy", "clean_accuracy") else str(value)

    table = [columns] + [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table)
