"""The data owner's commands: ``encode`` an image folder into a release of NE files, ``verify`` one."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nonxfer_bench.core import faults
from nonxfer_bench.core.atomic import atomic_write, check_replaceable, staged_folder
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error
from nonxfer_bench.schema.files import validate
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.storage import parse_format
from nonxfer_bench.schema.suite import MAX_SIDE
from nonxfer_bench.storage.formats import apply_storage, is_16bit, read_image, write_image

MANIFEST = "manifest.json"
VERIFY = "verify.json"  # written by verify beside the manifest
MAX_MANIFEST_BYTES = 256 << 20


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


def load_models(path: Path) -> tuple[list, list[str]]:
    """Zoo models and control names from a zoo file (top-level ``models``; no controls) or a suite file (its
    ``zoo`` and ``controls``)."""
    from nonxfer_bench.loading import load_suite, load_zoo
    from nonxfer_bench.schema.files import read_yaml

    path = Path(path).absolute()
    data = read_yaml(path)
    if isinstance(data, dict) and "models" in data:
        return load_zoo(path).models, []
    if isinstance(data, dict) and "zoo" in data:
        suite = load_suite(path, require_weights=False)
        return suite.models, list(suite.controls)
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
        raise UserError(f"{folder.absolute()}: input folder not found")
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
    overwrite: bool = False,
    settings: RunSettings = RunSettings(device="cpu"),
) -> dict:
    """Encode every image under ``source`` into NE files under ``output`` (same relative layout) plus
    ``manifest.json``; returns the manifest. An existing release at ``output`` is replaced only with
    ``overwrite``, and anything else there (:func:`_check_output`) never. The authorized model and the encoder run
    on ``settings.device``; the release's draws come from one generator keyed by ``seed_key`` (one key per release,
    whatever the batch size)."""
    from tqdm import tqdm

    import nonxfer_bench
    from nonxfer_bench.core.hashing import keyed_generator
    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.loading import encoder_refusal
    from nonxfer_bench.metrics.image_quality import psnr_per_image
    from nonxfer_bench.zoo import build_model, dataset_preprocessing

    try:
        storage = parse_format(fmt)
    except ValueError as error:
        raise UserError(f"--format: {error}") from None
    if not seed_key:
        raise UserError("no seed key: give --seed-key or set NXB_SEED_KEY (keep it secret; the manifest holds only its hash)")
    spec = _pick(load_models(zoo)[0], model_name, Path(zoo))
    encoder = ENCODERS.create(encoder_name, params or {})
    problem = encoder_refusal(encoder, spec)
    if problem:
        raise UserError(f"--encoder {encoder_name} cannot protect --model {model_name}: {problem}")
    files = list_sources(source)
    output = Path(output)
    _check_output(Path(source), output, overwrite)
    targets: dict[Path, Path] = {}
    for relative in files:
        target = relative.with_suffix(storage.suffix)
        if target in targets:
            raise UserError(f"{source}: {targets[target]} and {relative} would both be written as {target}; rename one")
        targets[target] = relative
    model = build_model(spec).to_device(torch.device(settings.device))
    decode = dataset_preprocessing(model.preprocessing)
    channels = model.input_size[0]
    generator = keyed_generator(seed_key, "encode")
    entries, notes = [], {}
    with staged_folder(output, _release) as staging:  # the new release appears whole (manifest last), or the old one stays
        bar = tqdm(total=len(files), desc=f"encode {model_name}/{encoder_name}@{strength:g} -> {storage.name}", unit="img", disable=not progress)
        for start in range(0, len(files), batch_size):
            batch_files = files[start : start + batch_size]
            decoded = []
            for relative in batch_files:
                image, image_notes = decode_source(Path(source) / relative, decode["size"], decode["crop_pct"], channels, decode["interpolation"])
                for note in image_notes:
                    notes[note] = notes.get(note, 0) + 1
                decoded.append(image)
            clean = model.prepare(torch.stack(decoded))
            with torch.no_grad():
                encoding = encoder.encode(clean.to(model.device), model, strength, generator)
            stored = apply_storage(encoding.images.cpu(), storage)
            psnr = psnr_per_image(clean, stored)
            for relative, image, encoded_psnr, stored_psnr in zip(batch_files, stored, encoding.achieved_psnr.cpu(), psnr):
                target = (staging / relative).with_suffix(storage.suffix)
                write_image(target, image, storage)
                faults.point("release_image_written")
                entries.append(
                    {
                        "file": target.relative_to(staging).as_posix(),
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
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _check_output(source: Path, output: Path, overwrite: bool) -> None:
    """The output folder neither contains nor lies inside the input folder (encode would read its own
    release, or mix it with the originals), and is new, empty, or (with ``overwrite``) a release: nothing
    else is ever replaced."""
    source_real, output_real = source.resolve(), output.resolve()
    if output_real == source_real or output_real.is_relative_to(source_real) or source_real.is_relative_to(output_real):
        raise UserError(f"{output}: the output folder and the input folder {source} must not contain each other; choose a folder outside the input")
    check_replaceable(output, _release)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(f"{output}: holds a release written by an earlier encode; pass --overwrite to replace it, or choose a new or empty folder")


def _release(folder: Path) -> None:
    """Refuse (UserError) to replace ``folder`` unless it is provably a release: a valid manifest that lists
    every file in it (besides itself and verify's ``verify.json``)."""
    try:
        vouched_files(folder, read_manifest(folder))
    except UserError as error:
        raise UserError(f"{folder}: not a release that encode may replace ({error}); choose a new or empty folder") from None


def _round(value: torch.Tensor) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


class ManifestImage(BaseModel):
    """One released file: its path in the release and the source image it came from."""

    model_config = ConfigDict(extra="allow", strict=True)
    file: str = Field(min_length=1, max_length=4096)
    source: str = Field(min_length=1, max_length=4096)


class ManifestModel(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arch: str
    identity_hash: str


class ManifestEncoder(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str
    strength: float


class ManifestDecode(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    size: int = Field(ge=1, le=MAX_SIDE)
    crop_pct: float = Field(gt=0, le=1)
    channels: int = Field(ge=1, le=4)
    interpolation: Literal["bilinear", "bicubic", "nearest"]


class Manifest(BaseModel):
    """What ``verify`` relies on in ``manifest.json``; anything else is refused with one line."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    format: str
    encoder: ManifestEncoder
    model: ManifestModel
    key_id: str
    decode: ManifestDecode
    release_size: tuple[int, int, int] | None = None
    images: list[dict[str, Any]] = Field(min_length=1, description="checked entry by entry (ManifestImage), stopping at the first bad one")

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


def _inside(root: Path, name: str, what: str, where: str) -> Path:
    """``root / name`` for a relative POSIX path from the manifest that stays inside ``root``."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name or not relative.parts:
        raise UserError(f"{where}: {what} {excerpt(name)} is not a relative path inside the folder (no '..', not absolute)")
    return root / relative


def vouched_files(release: Path, manifest: dict) -> list[Path]:
    """The release's image files in manifest order, refusing any listed file that is missing, duplicated,
    outside the release or a symbolic link, and any file in the release that the manifest does not list."""
    where = str(release / MANIFEST)
    files = [_inside(release, e["file"], f"images[{i}].file", where) for i, e in enumerate(manifest["images"])]
    seen: set[Path] = set()
    for i, path in enumerate(files):
        if path in seen:
            raise UserError(f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is listed twice")
        seen.add(path)
        if any(part.is_symlink() for part in (path, *path.parents) if part.is_relative_to(release) and part != release):
            raise UserError(f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is a symbolic link; a release holds plain files")
        if not path.is_file():
            raise UserError(f"{where}: images[{i}].file {excerpt(manifest['images'][i]['file'])} is missing from the release")
    allowed = seen | {release / MANIFEST, release / VERIFY}
    extra = sorted(str(p.relative_to(release)) for p in release.rglob("*") if (p.is_file() or p.is_symlink()) and p not in allowed)
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise UserError(f"{release}: files the manifest does not list: {', '.join(excerpt(e, 60) for e in extra[:3])}{more}; the release was changed after encode")
    return files


def verify_release(
    release: Path,
    zoo: Path,
    model_names: list[str] | None = None,
    originals: Path | None = None,
    labels_from_folders: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    controls: list[str] | None = None,
    overwrite: bool = False,
    settings: RunSettings = RunSettings(device="cpu"),
) -> dict:
    """Read a release back and score each model on it (on ``settings.device``, in ``settings.precision``): agreement with the model's prediction on the
    originals (when given) and accuracy when labels come from the first folder of each source path
    (sorted folder names = class indices, the ImageNet-val layout); then the verdict
    (:mod:`nonxfer_bench.owner.verdict`). Writes ``verify.json``.

    Refused before any model runs: neither originals nor labels (nothing to score against), an existing
    ``verify.json`` without ``overwrite``, a zoo without the release's authorized model (by identity hash),
    and models whose input size differs from the released images. The authorized model is always scored;
    the suite file's ``controls`` and ``controls`` are labelled controls and never count as unauthorized."""
    from tqdm import tqdm

    from nonxfer_bench.owner.verdict import verdict
    from nonxfer_bench.zoo import build_model

    release = Path(release)
    if originals is None and not labels_from_folders:
        raise UserError(f"verify {release}: nothing to score against; pass --originals FOLDER (the input folder given to encode) and/or --labels (classes from its folders)")
    target = release / VERIFY
    if target.exists() and not overwrite:
        raise UserError(f"{target.absolute()}: exists (written by an earlier verify); pass --overwrite to replace it, or move it away first")
    manifest = read_manifest(release)
    models, suite_controls = load_models(zoo)
    authorized = _authorized_model(models, manifest["model"], Path(zoo))
    names = [authorized.name] + [name for name in (model_names or [m.name for m in models]) if name != authorized.name]
    specs = [_pick(models, name, Path(zoo)) for name in names]
    control_names = set(suite_controls) | set(controls or [])
    for name in sorted(control_names):
        if name == authorized.name or name not in {m.name for m in models}:
            raise UserError(f"{zoo}: control {name!r} is not an unauthorized zoo model; valid: {', '.join(m.name for m in models if m is not authorized)}")
    decode = manifest["decode"]
    size = tuple(manifest["release_size"] or (decode["channels"], decode["size"], decode["size"]))
    _check_input_sizes(specs, size, Path(zoo))
    entries = manifest["images"]
    images = [read_image(path)[0] for path in tqdm(vouched_files(release, manifest), desc="read release", unit="img", disable=not progress)]
    shapes = {tuple(i.shape) for i in images}
    if shapes != {size}:
        raise UserError(f"{release}: released images are {', '.join('x'.join(map(str, s)) for s in sorted(shapes))}; the manifest says {'x'.join(map(str, size))}")
    released = torch.stack(images)
    clean = None
    if originals is not None:
        clean = torch.stack(
            [
                decode_source(_inside(Path(originals), e["source"], f"images[{i}].source", str(release / MANIFEST)),
                              decode["size"], decode["crop_pct"], decode["channels"], decode["interpolation"])[0]
                for i, e in enumerate(tqdm(entries, desc="read originals", unit="img", disable=not progress))
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
        model = build_model(spec).to_device(torch.device(settings.device), settings.precision)
        predictions = model.predict(released, batch_size)
        role = "authorized" if spec is authorized else "control" if spec.name in control_names else "unauthorized"
        row: dict[str, Any] = {"model": spec.name, "role": role, "n": len(predictions)}
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
        "verdict": verdict(rows, "accuracy" if labels is not None else "agreement"),
    }
    atomic_write(target, json.dumps(result, indent=1))
    return result


def _authorized_model(models: list, authorized: dict, zoo: Path):
    """The zoo model the release was made for: the one whose identity hash is the manifest's (its name first)."""
    for spec in sorted(models, key=lambda m: m.name != authorized["name"]):
        if model_identity_hash(spec) == authorized["identity_hash"]:
            return spec
    named = any(m.name == authorized["name"] for m in models)
    why = "its model of that name has other weights or settings" if named else "it has no model of that name"
    raise UserError(
        f"{Path(zoo).absolute()}: does not hold the release's authorized model {authorized['name']!r} "
        f"(identity hash {excerpt(authorized['identity_hash'], 20)}): {why}; pass the zoo or suite file the release was encoded with"
    )


def _check_input_sizes(specs: list, released: tuple[int, ...], zoo: Path) -> None:
    """Every model to score takes images of the released size (channels x height x width); one line naming the others."""
    from nonxfer_bench.zoo import resolve_preprocessing

    wrong = [(spec.name, tuple(resolve_preprocessing(spec)["input_size"])) for spec in specs]
    wrong = [(name, size) for name, size in wrong if size != tuple(released)]
    if wrong:
        listed = ", ".join(f"{name!r} takes {'x'.join(map(str, size))}" for name, size in wrong)
        raise UserError(f"{Path(zoo).absolute()}: {listed}, but the release's images are {'x'.join(map(str, released))}; choose models of that input size with --models")


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
