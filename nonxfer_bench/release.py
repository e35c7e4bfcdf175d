"""Releasable NEs: how an encoded batch is stored, and the ``encode`` / ``verify`` commands.

A released NE is a file, not a tensor. Storage formats (the suite key ``storage`` and
``nonxfer-bench encode --format``):

| format | file | what it keeps |
|---|---|---|
| ``float32`` | ``.npy`` (C x H x W float32) | everything, bit for bit, unclipped values included |
| ``png16`` | 16-bit PNG (pypng; PIL cannot write 16-bit RGB) | clipped to [0, 1], within 1/65535 |
| ``png8`` | 8-bit PNG | clipped to [0, 1], within 1/255 |
| ``jpeg`` / ``jpeg<Q>`` | JPEG at quality Q (default 95; PIL/libjpeg, 4:4:4 chroma) | clipped, lossy |

:func:`apply_storage` is the store-and-reload round trip on a batch (what a model sees after the
release is written and read back); :func:`write_image` / :func:`read_image` are the file writer and
reader, and reading a written file gives exactly :func:`apply_storage`'s result.

Input images for ``encode``: 8-bit files (any PIL mode) are decoded with :func:`nonxfer_bench.data.decode_image`
(timm's eval resize + center crop); 16-bit PNGs are read at full depth with pypng and resized and cropped
the same way in torch (antialiased); an alpha channel is dropped (not composited) and counted in the
manifest's ``notes``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nonxfer_bench.errors import UserError

FORMATS = ("float32", "png16", "png8", "jpeg")
FORMAT_HELP = "float32, png16, png8, jpeg (quality 95) or jpeg<Q> with Q in 1..100, e.g. jpeg90"
DEFAULT_JPEG_QUALITY = 95
SUFFIXES = {"float32": ".npy", "png16": ".png", "png8": ".png", "jpeg": ".jpg"}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StorageFormat:
    kind: str  # one of FORMATS
    quality: int | None = None  # jpeg only

    @property
    def name(self) -> str:
        return f"jpeg{self.quality}" if self.kind == "jpeg" and self.quality != DEFAULT_JPEG_QUALITY else self.kind

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.kind]


def parse_format(name: str | StorageFormat) -> StorageFormat:
    """``float32``, ``png16``, ``png8``, ``jpeg`` or ``jpeg<Q>``; ValueError (one line) otherwise."""
    if isinstance(name, StorageFormat):
        return name
    text = str(name).strip().lower()
    if text in ("float32", "png16", "png8"):
        return StorageFormat(text)
    match = re.fullmatch(r"jpe?g(\d+)?", text)
    if match:
        quality = int(match.group(1)) if match.group(1) else DEFAULT_JPEG_QUALITY
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality {quality} is outside 1..100")
        return StorageFormat("jpeg", quality)
    raise ValueError(f"unknown storage format {name!r}; valid: {FORMAT_HELP}")


def canonical_format(name: str) -> str:
    """The canonical spelling of a format name (``jpeg95`` -> ``jpeg``), for keys and labels."""
    return parse_format(name).name


def _check_batch(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected B x C x H x W images with 1 or 3 channels, got {tuple(images.shape)}")


def _jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    data = io.BytesIO()
    _to_pil8(image).save(data, format="JPEG", quality=quality, subsampling=0)
    data.seek(0)
    with Image.open(data) as decoded:
        return _from_array(np.asarray(decoded), 255.0, image.shape[0])


def apply_storage(images: torch.Tensor, fmt: str | StorageFormat) -> torch.Tensor:
    """The batch as it comes back after being stored in ``fmt`` and read again (float32, [0, 1] units)."""
    fmt = parse_format(fmt)
    _check_batch(images)
    images = images.detach().float().cpu()
    if fmt.kind == "float32":
        return images.clone()
    clipped = images.clamp(0.0, 1.0)
    if fmt.kind == "png16":
        return (clipped * 65535.0).round() / 65535.0
    if fmt.kind == "png8":
        return (clipped * 255.0).round() / 255.0
    return torch.stack([_jpeg_round_trip(image, fmt.quality) for image in clipped])


# ---------------------------------------------------------------------------------------------------
# files


def _to_pil8(image: torch.Tensor):
    from PIL import Image

    array = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0), mode="RGB")


def _from_array(array: np.ndarray, peak: float, channels: int | None = None) -> torch.Tensor:
    """H x W (x C) integer array to C x H x W float in [0, 1]."""
    array = array[..., None] if array.ndim == 2 else array
    tensor = torch.from_numpy(array.astype(np.float32) / peak).permute(2, 0, 1).contiguous()
    if channels == 1 and tensor.shape[0] == 3:
        tensor = tensor.mean(0, keepdim=True)
    return tensor


def write_image(path: Path, image: torch.Tensor, fmt: str | StorageFormat) -> Path:
    """Write one C x H x W image (C = 1 or 3, [0, 1] units) in ``fmt``; returns the path written."""
    fmt = parse_format(fmt)
    _check_batch(image.unsqueeze(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image.detach().float().cpu()
    if fmt.kind == "float32":
        np.save(path, image.numpy().astype(np.float32), allow_pickle=False)
    elif fmt.kind == "png16":
        import png

        channels, height, width = image.shape
        array = (image.clamp(0, 1) * 65535.0).round().to(torch.int32).numpy().astype(np.uint16)
        rows = array.transpose(1, 2, 0).reshape(height, width * channels)
        writer = png.Writer(width, height, greyscale=channels == 1, bitdepth=16)
        with open(path, "wb") as handle:
            writer.write(handle, rows.tolist())
    elif fmt.kind == "png8":
        _to_pil8(image).save(path, format="PNG")
    else:
        _to_pil8(image).save(path, format="JPEG", quality=fmt.quality, subsampling=0)
    return path


def read_image(path: Path) -> tuple[torch.Tensor, list[str]]:
    """Read any released or source image at full depth: C x H x W float32 in [0, 1] (C = 1 or 3, never
    resized) and notes (alpha dropped). ``.npy`` float arrays come back bit for bit. UserError if unreadable."""
    path = Path(path)
    notes: list[str] = []
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim != 3 or array.shape[0] not in (1, 3):
                raise ValueError(f"expected a C x H x W array with 1 or 3 channels, got shape {array.shape}")
            return torch.from_numpy(array.astype(np.float32)), notes
        if path.suffix.lower() == ".png":
            import png

            width, height, rows, info = png.Reader(filename=str(path)).asDirect()
            planes, depth = info["planes"], info["bitdepth"]
            array = np.vstack([np.asarray(row, dtype=np.uint32) for row in rows]).reshape(height, width, planes)
            if info.get("alpha"):
                notes.append("alpha dropped")
                array = array[..., :-1]
            return _from_array(array, float(2**depth - 1)), notes
        from PIL import Image

        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                notes.append("alpha dropped")
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                return _from_array(np.asarray(image), 65535.0), notes
            gray = image.mode in ("L", "LA", "1")
            return _from_array(np.asarray(image.convert("L" if gray else "RGB")), 255.0), notes
    except UserError:
        raise
    except Exception as error:  # corrupt files surface as many exception types (PIL, pypng, numpy)
        raise UserError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None


def _is_16bit(path: Path) -> bool:
    if path.suffix.lower() != ".png":
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
        return head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16
    except OSError:
        return False


def decode_source(path: Path, size: int, crop_pct: float, channels: int, interpolation: str) -> tuple[torch.Tensor, list[str]]:
    """A source image as the authorized model's input (C x size x size float in [0, 1]) and notes.

    8-bit images go through :func:`nonxfer_bench.data.decode_image` (exactly timm's eval transform);
    16-bit PNGs keep their depth: resized (antialiased, in torch) and center-cropped the same way."""
    from PIL import Image

    from nonxfer_bench.data import decode_image

    notes: list[str] = []
    if _is_16bit(path):
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
    from nonxfer_bench.suite import stable_hash

    return stable_hash(spec.identity())


def load_models(path: Path) -> list:
    """Zoo models from a zoo file (top-level ``models``) or a suite file (its ``zoo``)."""
    from nonxfer_bench.suite import _read_yaml, load_suite, load_zoo

    path = Path(path)
    data = _read_yaml(path)
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
    from nonxfer_bench.data import IMAGE_SUFFIXES

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
    from pydantic import ValidationError
    from tqdm import tqdm

    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.metrics import psnr_per_image
    from nonxfer_bench.runner import keyed_generator
    from nonxfer_bench.zoo import build_model, dataset_preprocessing

    import nonxfer_bench

    try:
        storage = parse_format(fmt)
    except ValueError as error:
        raise UserError(f"--format: {error}") from None
    if not seed_key:
        raise UserError("no seed key: give --seed-key or set NXB_SEED_KEY (keep it secret; the manifest holds only its hash)")
    spec = _pick(load_models(zoo), model_name, Path(zoo))
    try:
        encoder = ENCODERS.create(encoder_name, params or {})
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"encoder {encoder_name!r}: parameter {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    check = getattr(type(encoder), "check_strengths", None)
    if check is not None:
        try:
            check([strength])
        except ValueError as error:
            raise UserError(f"--strength: {error}") from None
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
