"""The ``stored_release`` encoder: a release folder as it lies on disk, in a suite (``nonxfer-bench attack``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nonxfer_bench.cli import main
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.storage.formats import read_image
from nonxfer_bench.storage.release import manifest_sha256
from nonxfer_bench.zoo import build_model
from tests.helpers import encode_args
from tests.hostile.test_releases import make_images


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> tuple[Path, Path]:
    """Six 20 px images released for vit_a by patch at 20 dB in png8 (clipped and rounded: not what patch returns)."""
    root = tmp_path_factory.mktemp("stored")
    source = make_images(root / "photos")
    options = dict(format="png8", seed_key="k", threads=1)
    assert main(encode_args(source, root / "release", digits_zoo, "vit_a", "patch", 20, **options)) == 0
    return source, root / "release"


def models(zoo: Path) -> dict:
    return {spec.name: build_model(spec) for spec in load_zoo(zoo).models}


def encoder(source: Path, release: Path):
    return ENCODERS.create(
        "stored_release",
        {"release": str(release), "originals": str(source), "manifest_sha256": manifest_sha256(release)},
    )


def originals(source: Path, release: Path, order: list[int]) -> torch.Tensor:
    """The originals as a suite's dataset gives them (image_folder decoded as the manifest says), in ``order``."""
    decode = json.loads((release / "manifest.json").read_text())["decode"]
    data = DATASETS.create("image_folder", {"root": str(source), **decode}).load()
    return data.images[order].float() / 255.0


def test_the_originals_come_back_as_the_stored_files_in_any_order(stored, digits_zoo):
    source, release = stored
    zoo, manifest = models(digits_zoo), json.loads((release / "manifest.json").read_text())
    files = {entry["source"]: read_image(release / entry["file"])[0] for entry in manifest["images"]}
    order = [4, 0, 5, 2]
    images = zoo["vit_a"].prepare(originals(source, release, order))
    encoded = encoder(source, release).encode(images, zoo["vit_a"], 20.0, keyed_generator("attacker"))
    expected = torch.stack([files[name] for name in [sorted(files)[i] for i in order]])
    assert torch.equal(encoded.images, expected)


def test_other_images_or_another_model_are_encoded_by_the_releases_own_encoder(stored, digits_zoo):
    source, release = stored
    zoo = models(digits_zoo)
    images = zoo["vit_a"].prepare(originals(source, release, [0, 1]))
    own = ENCODERS.create("patch", json.loads((release / "manifest.json").read_text())["encoder"]["params"])
    for batch, model in ((1.0 - images, "vit_a"), (images, "vit_b")):
        got = encoder(source, release).encode(batch, zoo[model], 20.0, keyed_generator("attacker"))
        assert torch.equal(got.images, own.encode(batch, zoo[model], 20.0, keyed_generator("attacker")).images)


def test_a_release_encoded_again_after_planning_is_refused(stored, digits_zoo, tmp_path):
    source, release = stored
    planned = manifest_sha256(release)
    copy = tmp_path / "release"
    assert (
        main(encode_args(source, copy, digits_zoo, "vit_a", "patch", 30, format="png8", seed_key="k", threads=1)) == 0
    )
    with pytest.raises(UserError, match="not the manifest this run was planned on"):
        ENCODERS.create("stored_release", {"release": str(copy), "originals": str(source), "manifest_sha256": planned})
