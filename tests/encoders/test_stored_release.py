"""The ``stored_release`` encoder: a release folder as it lies on disk, in a suite (``nonxfer-bench attack``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from nonxfer_bench.app.attack import AttackRequest, attack_suite
from nonxfer_bench.cli import main
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_suite, load_zoo
from nonxfer_bench.storage.formats import read_image
from nonxfer_bench.storage.release import manifest_sha256, read_manifest
from nonxfer_bench.zoo import build_model
from tests.helpers import encode_args, write_yaml
from tests.hostile.test_releases import make_images
from tests.owner.conftest import NE_V1


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


def test_an_original_edited_after_encode_is_refused(stored, digits_zoo, tmp_path):
    """A rerun of the attack suite (``nonxfer-bench run``) on an original changed after encode under the same name: the
    released file made from the old image was returned for the new one's pixels."""
    source, release = stored
    source = shutil.copytree(source, tmp_path / "photos")
    edited = source / "0" / "img0.png"
    with Image.open(edited) as image:
        ImageOps.invert(image.convert("L")).save(edited)
    zoo = models(digits_zoo)
    images = zoo["vit_a"].prepare(originals(source, release, [0, 1]))
    with pytest.raises(UserError, match=f"{edited}: differs from the image encode read"):
        encoder(source, release).encode(images, zoo["vit_a"], 20.0, keyed_generator("attacker"))


def test_a_release_and_its_originals_moved_elsewhere_draw_the_same_numbers(stored, digits_zoo, tmp_path):
    """Its draws are keyed on the manifest (what the folders hold), not on where they lie; its cell keys keep the paths,
    so a moved release is computed into a run of its own."""
    source, release = stored
    moved = shutil.copytree(release, tmp_path / "there" / "moved"), shutil.copytree(source, tmp_path / "there" / "pics")
    plans = []
    for folder, originals in ((release, source), moved):
        request = AttackRequest(folder, originals, digits_zoo, NE_V1, ensemble="fast")
        suite, _ = attack_suite(request, read_manifest(folder))
        planned = plan_suite(load_suite(write_yaml(tmp_path / f"{folder.name}.yaml", suite)))
        plans.append(next(group for group in planned if group.encoder.name == "stored_release"))
    here, there = plans
    assert there.draw_key == here.draw_key and there.key != here.key
    assert set(there.cells.values()).isdisjoint(here.cells.values())
