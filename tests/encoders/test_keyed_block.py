"""The keyed block-wise encoder: the transformed authorized model is exact, keys follow the generator's seed, and the
scheme applies only where it folds into the first layer (refused at suite load elsewhere)."""

import functools
from pathlib import Path

import pytest
import torch

from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.encoders.keyed_block import BlockKey, KeyedBlockParams
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import ZooModel, build_model, model_structure

ROOT = Path(__file__).resolve().parents[2]
ONLY = {  # each transform alone, and all three (the default)
    "shuffle": {"flip": False, "scramble": False},
    "flip": {"shuffle": False, "scramble": False},
    "scramble": {"shuffle": False, "flip": False},
    "all": {},
}


@functools.cache
def fashion_specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_zoo(ROOT / "suites/zoo/fashion.yaml").models}


@functools.cache
def model(name: str) -> ZooModel:
    """A Fashion zoo model (trained weights), or ``tiny_vit``: a random 3-channel ViT (16 px, 4 px patches) whose
    channels normalize differently, so shuffling moves values between channels of other mean and std, and whose
    parameters are all drawn at scale 0.5 (timm's small init makes its logits nearly constant in the input)."""
    if name != "tiny_vit":
        return build_model(fashion_specs()[name])
    kwargs = {
        "img_size": 16,
        "patch_size": 4,
        "in_chans": 3,
        "embed_dim": 12,
        "depth": 2,
        "num_heads": 2,
        "num_classes": 10,
    }
    preprocess = {"input_size": [3, 16, 16], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]}
    vit = build_model(
        ModelSpec(name="tiny_vit", arch="vit_tiny_patch16_224", kwargs=kwargs, preprocess=preprocess, seed=0)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.normal_(0, 0.5, generator=generator)
    return vit


def images(zoo_model: ZooModel, count: int = 6) -> torch.Tensor:
    return torch.rand(count, *zoo_model.input_size, generator=torch.Generator().manual_seed(0))


def logits(zoo_model: ZooModel, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return zoo_model(batch)


@pytest.mark.parametrize("transform", ONLY)
@pytest.mark.parametrize("name", ["tiny_vit", "vit_a"])
def test_the_transformed_model_on_encrypted_images_gives_the_plain_models_logits(name, transform):
    plain_model, encoder = model(name), ENCODERS.create("keyed_block", ONLY[transform])
    clean = images(plain_model)
    released = encoder.encode(clean, plain_model, 0.0, keyed_generator("release")).images
    deployed = encoder.authorized_view(plain_model, keyed_generator("release"))
    plain = logits(plain_model, clean)
    assert float((logits(deployed, released) - plain).abs().max()) < 1e-5
    assert float((logits(plain_model, released) - plain).abs().max()) > 1e-2, (
        "the plain model reads the release as it reads the clean images"
    )


@pytest.mark.parametrize("transform", ["shuffle", "flip"])
def test_a_patchify_cnn_stem_takes_shuffling_and_flips_exactly_but_scrambling_is_refused(transform):
    convnext, encoder = model("convnext"), ENCODERS.create("keyed_block", ONLY[transform])
    clean = images(convnext)
    released = encoder.encode(clean, convnext, 0.0, keyed_generator("release")).images
    deployed = encoder.authorized_view(convnext, keyed_generator("release"))
    assert float((logits(deployed, released) - logits(convnext, clean)).abs().max()) < 1e-5
    scrambling = ENCODERS.create("keyed_block")
    assert "scramble: false" in scrambling.check_model(model_structure(fashion_specs()["convnext"]))
    with pytest.raises(ValueError, match="VisionTransformer"):
        scrambling.authorized_view(convnext, keyed_generator("release"))


@pytest.mark.parametrize("stem", ["resnet", "resnet_deep", "mobilenet"])
def test_overlapping_stems_are_refused_by_name(stem):
    spec = fashion_specs()[stem]
    problem = ENCODERS.create("keyed_block", {"scramble": False}).check_model(model_structure(spec))
    assert "non-overlapping patch embedding" in problem and (spec.first_conv or "conv") in problem


def test_one_generator_seed_is_one_key_for_every_batch_and_other_seeds_are_other_keys():
    vit, encoder = model("vit_a"), ENCODERS.create("keyed_block")
    clean = images(vit)
    generator = keyed_generator("release")
    first = encoder.encode(clean[:3], vit, 0.0, generator).images
    torch.rand(5, generator=generator)  # draws in between change nothing: the key is the seed's
    second = encoder.encode(clean[3:], vit, 0.0, generator).images
    whole = encoder.encode(clean, vit, 0.0, keyed_generator("release")).images
    assert torch.equal(torch.cat([first, second]), whole)
    other = encoder.encode(clean, vit, 0.0, keyed_generator("other")).images
    assert not torch.equal(other, whole)
    keys = [encoder.key(vit, vit.input_size, keyed_generator(seed)) for seed in ("release", "other")]
    assert not torch.equal(keys[0].shuffle, keys[1].shuffle) and not torch.equal(keys[0].scramble, keys[1].scramble)
    assert not torch.equal(keys[0].flip, keys[1].flip)


def test_switching_one_transform_off_keeps_the_others_keys():
    vit = model("vit_a")
    full = ENCODERS.create("keyed_block").key(vit, vit.input_size, keyed_generator("release"))
    no_flip = ENCODERS.create("keyed_block", {"flip": False}).key(vit, vit.input_size, keyed_generator("release"))
    assert torch.equal(full.shuffle, no_flip.shuffle) and torch.equal(full.scramble, no_flip.scramble)
    assert full.flip.any() and not no_flip.flip.any()


def test_the_release_stays_in_unit_range_reports_its_real_psnr_and_decrypts_back():
    vit, encoder = model("vit_a"), ENCODERS.create("keyed_block")
    clean = images(vit)
    encoding = encoder.encode(clean, vit, 30.0, keyed_generator("release"))  # strength is ignored
    assert torch.equal(encoding.images, encoder.encode(clean, vit, 5.0, keyed_generator("release")).images)
    assert 0 <= float(encoding.images.min()) and float(encoding.images.max()) <= 1
    assert torch.equal(encoding.achieved_psnr, psnr_per_image(clean, encoding.images))
    assert float(encoding.achieved_psnr.max()) < 15  # a scrambled image is far from the clean one
    assert torch.allclose(
        encoder.key(vit, vit.input_size, keyed_generator("release")).decrypt(encoding.images), clean, atol=1e-6, rtol=0
    )


def test_pixels_outside_the_whole_blocks_are_released_unchanged():
    key = BlockKey.draw(7, (4, 4), 2, 16, KeyedBlockParams())  # 18 x 17 images: 4 x 4 whole blocks, then a remainder
    clean = torch.rand(2, 2, 18, 17, generator=torch.Generator().manual_seed(1))
    released = key.encrypt(clean)
    assert torch.equal(released[..., 16:, :], clean[..., 16:, :]) and torch.equal(
        released[..., :, 16:], clean[..., :, 16:]
    )
    assert not torch.equal(released[..., :16, :16], clean[..., :16, :16])
    assert torch.allclose(key.decrypt(released), clean, atol=1e-6, rtol=0)


def test_the_deployed_model_encodes_under_its_own_key_whatever_the_generator():
    """The owner's labelled release (an attacker's ``context.encode(images, context.authorized)``) uses the release's
    key; a plain model with another generator gets another key (an attacker's own)."""
    vit, encoder = model("vit_a"), ENCODERS.create("keyed_block")
    clean = images(vit)
    deployed = encoder.authorized_view(vit, keyed_generator("release"))
    release = encoder.encode(clean, vit, 0.0, keyed_generator("release")).images
    assert torch.equal(encoder.encode(clean, deployed, 0.0, keyed_generator("attacker")).images, release)
    assert not torch.equal(encoder.encode(clean, vit, 0.0, keyed_generator("attacker")).images, release)
