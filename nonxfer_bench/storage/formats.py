"""How an encoded batch is stored as files: the release storage formats.

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

Input images for ``encode``: 8-bit files (any PIL mode) are decoded with
:func:`nonxfer_bench.datasets.base.decode_image`
(timm's eval resize + center crop); 16-bit PNGs are read at full depth with pypng and resized and cropped
the same way in torch (antialiased); an alpha channel is dropped (not composited) and counted in the
manifest's ``notes``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import png
import torch
from PIL import Image

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.schema.storage import StorageFormat, parse_format

MAX_PIXELS = (
    2 * 89_478_485
)  # PIL refuses images above this (its DecompressionBombError threshold); so do the other readers


def _check_batch(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected B x C x H x W images with 1 or 3 channels, got {tuple(images.shape)}")


def _jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
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
    array = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return (
        Image.fromarray(array[0], mode="L")
        if array.shape[0] == 1
        else Image.fromarray(array.transpose(1, 2, 0), mode="RGB")
    )


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
            array = np.load(path, allow_pickle=False, mmap_mode="r")  # the header first: a huge shape is not allocated
            if array.ndim != 3 or array.shape[0] not in (1, 3) or array.shape[1] * array.shape[2] > MAX_PIXELS:
                raise ValueError(
                    f"expected a C x H x W array with 1 or 3 channels and at most {MAX_PIXELS:,} pixels, got shape "
                    f"{array.shape}"
                )
            return torch.from_numpy(np.array(array, dtype=np.float32)), notes
        if path.suffix.lower() == ".png":
            width, height, rows, info = png.Reader(filename=str(path)).asDirect()
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width} x {height} pixels; at most {MAX_PIXELS:,} are read (a decompression bomb?)")
            planes, depth = info["planes"], info["bitdepth"]
            array = np.vstack([np.asarray(row, dtype=np.uint32) for row in rows]).reshape(height, width, planes)
            if info.get("alpha"):
                notes.append("alpha dropped")
                array = array[..., :-1]
            return _from_array(array, float(2**depth - 1)), notes
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
        raise UserError(f"{path}: cannot read image ({type(error).__name__}: {excerpt(str(error), 160)})") from None


def is_16bit(path: Path) -> bool:
    if path.suffix.lower() != ".png":
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
        return head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16
    except OSError:
        return False
