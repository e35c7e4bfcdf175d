"""The ``stored_release`` encoder: a release folder written by ``encode``, as it lies on disk, in a suite.

``nonxfer-bench attack`` runs a protocol on an owner's release through an ordinary suite: its dataset is the originals
(``image_folder`` over the folder ``encode`` read) and its encoder this one, so every attack, cache and table works as
for any suite. For a batch of clean images that are all originals of the release, encoded for the release's authorized
model, it returns the released files (read back in the release's own storage format, each checked against the SHA-256
in the manifest): a clean image is matched to its released file by its pixels (decoded as the manifest says, then
brought to the model's input as the runner brings the dataset's), whatever the dataset's order or batch size. Identical
originals share the released file of the first of them.

Any other batch (an attacker's own public images, or another model) is encoded with the release's own encoder, its
parameters and strength, under the generator given: an attacker who knows the method makes NEs of the release's kind
with a key of its own. The owner's secret key is not needed and never read. Releases of a keyed transform whose
authorized model is deployed with the owner's key (``keyed_block``) are refused: an attack run does not hold that key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import decode_image
from nonxfer_bench.encoders.base import ENCODERS, Encoder, Encoding
from nonxfer_bench.linalg.subspace import NoiseSubspace
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.storage.release import (
    MANIFEST,
    check_source,
    inside,
    manifest_sha256,
    read_manifest,
    read_released,
    vouched_files,
)
from nonxfer_bench.zoo import ZooModel

PATHS = ("release", "originals")  # the params that say where the folders lie, left out of the draws' identity
DEEP_SOURCE = "16-bit source"  # the manifest note of a source decoded at 16 bits, which no dataset reproduces


class StoredReleaseParams(Strict):
    release: Path = Field(description="the release folder (written by `nonxfer-bench encode`)")
    originals: Path = Field(description="the folder encode read: the suite's dataset decodes the same images")
    manifest_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the release's manifest.json: the release the run is about"
    )


@ENCODERS.register("stored_release")
class StoredRelease(Encoder):
    """A release folder as it lies on disk: its stored files for its originals, its own encoder for other images."""

    Params = StoredReleaseParams
    strength_unit = (
        "the release's own (its manifest's strength), used when attackers encode their own images with the release's "
        "encoder"
    )
    secret = (
        "What the release's own encoder keeps secret: the images are the owner's stored files, read from the release "
        "folder as they are."
    )
    storage_formats = ("float32",)  # what it returns is already the stored release: a run stores nothing again
    version = "2"  # 2: draws keyed on the manifest, not the folders' paths (draw_identity): other draws, other cells

    @classmethod
    def draw_identity(cls, base: dict[str, Any]) -> dict[str, Any]:
        """The group's identity without the folders' paths: the params ``release`` and ``originals``, and the dataset's
        ``root`` where it is the originals. ``manifest_sha256`` pins what they hold (the released files and the
        originals by the SHA-256 it records of each, checked before they are used; a release written before it recorded
        the originals' pins them by name only), so the same release and originals draw the same numbers wherever they
        lie."""
        encoder, dataset = base["encoder"], base["dataset"]
        params = {key: value for key, value in encoder["params"].items() if key not in PATHS}
        folder = dataset.get("params", {})
        if folder.get("root") is not None and Path(folder["root"]) == Path(encoder["params"]["originals"]):
            folder = {key: value for key, value in folder.items() if key != "root"}
        return base | {"encoder": encoder | {"params": params}, "dataset": dataset | {"params": folder}}

    def __init__(self, params: StoredReleaseParams) -> None:
        super().__init__(params)
        self.folder = Path(params.release)
        self.manifest = read_manifest(self.folder)
        where = self.folder / MANIFEST
        if manifest_sha256(self.folder) != params.manifest_sha256:
            raise UserError(
                f"{where}: not the manifest this run was planned on (SHA-256 differs): the release was encoded again; "
                "run `attack` again"
            )
        if self.manifest.get("notes", {}).get(DEEP_SOURCE):
            raise UserError(
                f"{where}: made from 16-bit sources, which a suite's dataset decodes at 8 bits: their released files "
                "cannot be matched"
            )
        self.files = vouched_files(self.folder, self.manifest)
        encoder = self.manifest["encoder"]
        self.own = ENCODERS.create(encoder["name"], encoder.get("params", {}))
        self._index: dict[bytes, int] | None = None  # pixels of a prepared original -> its entry
        self._authorized: dict[str, bool] = {}  # model name -> is the release's authorized model (by identity hash)

    def is_authorized(self, model: ZooModel) -> bool:
        """Whether ``model`` is the release's authorized model (its zoo entry's identity hash is the manifest's)."""
        if model.name not in self._authorized:
            self._authorized[model.name] = stable_hash(model.spec.identity()) == self.manifest["model"]["identity_hash"]
        return self._authorized[model.name]

    def check_model(self, model: ZooModel) -> str | None:
        encoder = self.manifest["encoder"]["name"]
        if type(self.own).authorized_view is not Encoder.authorized_view:
            return (
                f"the release's encoder {encoder} deploys the authorized model with the owner's key, which an attack "
                "run does not hold"
            )
        if not self.is_authorized(model):
            made_for = self.manifest["model"]
            return (
                f"the release in {self.folder} was made for the model {made_for['name']!r} (identity hash "
                f"{excerpt(made_for['identity_hash'], 20)})"
            )
        return self.own.check_model(model)

    def noise_subspace(self, model: ZooModel) -> NoiseSubspace | None:
        return self.own.noise_subspace(model)

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        found = [self.index(model).get(key) for key in _keys(images)] if self.is_authorized(model) else [None]
        if any(entry is None for entry in found):
            return self.own.encode(images, model, strength, generator)
        where = str(self.folder / MANIFEST)
        stored = torch.stack([read_released(self.files[i], self.manifest["images"][i], where) for i in found])
        stored = stored.to(device=images.device, dtype=images.dtype)
        return Encoding(images=stored, achieved_psnr=psnr_per_image(images, stored))

    def index(self, model: ZooModel) -> dict[bytes, int]:
        """Each original's pixels as the runner's dataset gives them (decoded as the manifest says, brought to the
        model's input) -> its entry; built once, each original refused unless it is the file encode read."""
        if self._index is None:
            decode, where = self.manifest["decode"], str(self.folder / MANIFEST)
            settings = {key: decode[key] for key in ("size", "crop_pct", "interpolation")}
            index: dict[bytes, int] = {}
            for i, entry in enumerate(self.manifest["images"]):
                path = inside(Path(self.params.originals), entry["source"], f"images[{i}].source", where)
                check_source(path, entry)
                clean = model.prepare(decode_image(path, channels=decode["channels"], **settings)[None].float() / 255.0)
                index.setdefault(_keys(clean)[0], i)
            self._index = index
        return self._index


def _keys(images: torch.Tensor) -> list[bytes]:
    """One key per image: the SHA-256 of its pixels rounded to 8 bits (exact for images decoded from 8-bit files)."""
    pixels = (images.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return [hashlib.sha256(image.numpy().tobytes()).digest() for image in pixels]
