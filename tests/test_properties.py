"""Property-based tests (hypothesis): encoders and attacks on random image sizes, channel counts,
strengths and seeds keep shapes, dtypes and value ranges, are deterministic, and the encoders that
promise an exact standard PSNR achieve it.

Examples are derandomized, so CI sees the same cases every time, and floats are drawn without subnormals
(the CLI turns on flush-to-zero for the whole process); the fixed-size specification of every attack
is ``tests/attacks/test_registry.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model

PROPERTY = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Attacks that need no fitted context and no generative model (the reconstruction attacks, which load or
# train one: tests/attacks/test_reconstruction.py). They take [0, 1] images to [0, 1] images: filters
# that average, codecs and quantizers that clip, occlusion with black.
PLAIN_ATTACKS = [
    n
    for n in ATTACKS.names()
    if ATTACKS.get(n).fit is Attack.fit and not ATTACKS.get(n).__module__.endswith(".reconstruction")
]
EXACT_PSNR_ENCODERS = ["patch", "gaussian", "operator"]  # "standard PSNR ... exactly" in their docstrings
ENCODER_PARAMS = {"operator": {"k": 4}}  # few directions: the eigensolver stays fast on every size


@functools.cache
def model(arch: str, channels: int, height: int, width: int):
    """A small random-weight zoo model at this input size: a ViT (non-overlapping 4x4 stem) or a ResNet (7x7/2)."""
    preprocess = {"input_size": [channels, height, width], "mean": [0.4] * channels, "std": [0.3] * channels}
    if arch == "vit":
        kwargs = {
            "img_size": [height, width],
            "patch_size": 4,
            "in_chans": channels,
            "embed_dim": 12,
            "depth": 1,
            "num_heads": 2,
            "num_classes": 5,
        }
        return build_model(ModelSpec(name="vit", arch="vit_tiny_patch16_224", kwargs=kwargs, preprocess=preprocess))
    kwargs = {"in_chans": channels, "layers": [1, 1, 1, 1], "channels": [4, 4, 4, 4], "num_classes": 5}
    return build_model(ModelSpec(name="res", arch="resnet18", kwargs=kwargs, preprocess=preprocess))


@st.composite
def image_batches(draw, multiple: int = 1) -> torch.Tensor:
    """Random [0, 1] float32 batches: 1-3 images, 1 or 3 channels, sides 8-40 (multiples of ``multiple``)."""
    count = draw(st.integers(1, 3))
    channels = draw(st.sampled_from([1, 3]))
    height = multiple * draw(st.integers(-(-8 // multiple), 40 // multiple))
    width = multiple * draw(st.integers(-(-8 // multiple), 40 // multiple))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.rand(count, channels, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", PLAIN_ATTACKS)
@PROPERTY
@given(
    images=image_batches(),
    strength=st.floats(0.0, 1.0, allow_subnormal=False),
    seed=st.integers(0, 2**31 - 1),
)
def test_an_attack_keeps_shape_dtype_and_the_unit_range_and_is_deterministic(name, images, strength, seed):
    attack = ATTACKS.create(name)
    first = attack(images, strength, torch.Generator().manual_seed(seed))
    again = attack(images, strength, torch.Generator().manual_seed(seed))
    assert first.shape == images.shape and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize("name", PLAIN_ATTACKS)
@PROPERTY
@given(
    images=image_batches(),
    spread=st.floats(1.0, 50.0, allow_subnormal=False),
    strength=st.floats(0.0, 1.0, allow_subnormal=False),
)
def test_an_attack_takes_an_unclipped_release_and_returns_finite_images_of_its_shape(name, images, spread, strength):
    released = (images - 0.5) * spread + 0.5  # the reference encoder releases unclipped floats far outside [0, 1]
    attacked = ATTACKS.create(name)(released, strength, torch.Generator().manual_seed(0))
    assert attacked.shape == released.shape and attacked.dtype == torch.float32
    assert torch.isfinite(attacked).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", EXACT_PSNR_ENCODERS + ["reference", "clean"])
@PROPERTY
@given(
    arch=st.sampled_from(["vit", "res"]),
    images=image_batches(multiple=4),
    strength=st.floats(5.0, 50.0, allow_subnormal=False),
    seed=st.integers(0, 2**31 - 1),
)
def test_an_encoder_keeps_shape_and_dtype_is_deterministic_and_hits_its_psnr(name, arch, images, strength, seed):
    authorized = model(arch, *images.shape[1:])
    encoder = ENCODERS.create(name, ENCODER_PARAMS.get(name))
    first = encoder.encode(images, authorized, strength, torch.Generator().manual_seed(seed))
    again = encoder.encode(images, authorized, strength, torch.Generator().manual_seed(seed))
    assert first.images.shape == images.shape and first.images.dtype == torch.float32
    assert torch.equal(first.images, again.images)
    assert torch.isfinite(first.images).all()
    assert first.achieved_psnr.shape == (len(images),)
    if name in EXACT_PSNR_ENCODERS:
        torch.testing.assert_close(
            first.achieved_psnr, torch.full((len(images),), strength), atol=1e-2, rtol=0, check_dtype=False
        )
        torch.testing.assert_close(psnr_per_image(images, first.images), first.achieved_psnr)  # it reports what it did
    if name == "clean":
        assert torch.equal(first.images, images)


@PROPERTY
@given(
    images=image_batches(multiple=4),
    strength=st.floats(5.0, 50.0, allow_subnormal=False),
    seeds=st.lists(st.integers(0, 2**31 - 1), min_size=2, max_size=2, unique=True),
)
def test_different_seeds_give_different_noise(images, strength, seeds):
    authorized = model("vit", *images.shape[1:])
    encoder = ENCODERS.create("patch")
    first, second = (
        encoder.encode(images, authorized, strength, torch.Generator().manual_seed(s)).images for s in seeds
    )
    assert not torch.equal(first, second)
