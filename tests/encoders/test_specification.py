"""The encoder specification (``nonxfer_bench.encoders.testing``): every registered encoder meets it on the CPU and on
pretend CUDA, and each check fails on an encoder that breaks what it checks."""

from __future__ import annotations

import re

import pytest
import torch

from nonxfer_bench.encoders import ENCODERS, Encoder, Encoding
from nonxfer_bench.encoders.base import STANDARD_PSNR
from nonxfer_bench.encoders.clean import CleanEncoder
from nonxfer_bench.encoders.gaussian import GaussianEncoder
from nonxfer_bench.encoders.keyed_block import KeyedBlockEncoder
from nonxfer_bench.encoders.patch import PatchEncoder
from nonxfer_bench.encoders.reference import ReferenceEncoder
from nonxfer_bench.encoders.testing import CHECKS, check
from nonxfer_bench.metrics.image_quality import psnr_per_image
from tests.helpers import encoders_with_defaults
from tests.test_cuda_path import PretendCuda

NAMES = encoders_with_defaults()  # stored_release: tests/encoders/test_stored_release.py


@pytest.mark.parametrize("check_name", CHECKS)
@pytest.mark.parametrize("name", NAMES)
def test_every_registered_encoder_meets_the_specification(name, check_name):
    CHECKS[check_name](name)


@pytest.mark.slow
@pytest.mark.parametrize("check_name", [name for name in CHECKS if name != "declarations"])
@pytest.mark.parametrize("name", NAMES)
def test_every_registered_encoder_meets_the_specification_on_pretend_cuda(name, check_name):
    with PretendCuda():
        CHECKS[check_name](name, device="cuda")


def test_the_keyed_transform_is_checked_with_and_without_scrambling():
    check("keyed_block", {"scramble": False})


# --- encoders that break one promise each: the check that covers it fails, naming the case ---------------------------


class LiesAboutPsnr(GaussianEncoder):
    """Reports the target as achieved while releasing at half the noise."""

    def encode(self, images, model, strength, generator):
        encoding = super().encode(images, model, strength, generator)
        encoding.images = images + (encoding.images - images) / 2
        return encoding


class DrawsGlobally(GaussianEncoder):
    """Draws from torch's global generator."""

    def encode(self, images, model, strength, generator):
        noise = torch.randn(images.shape) * 0.1
        return Encoding(images=images + noise, achieved_psnr=psnr_per_image(images, images + noise))


class ChangesItsInput(GaussianEncoder):
    """Adds the noise to the images in place."""

    def encode(self, images, model, strength, generator):
        encoding = super().encode(images, model, strength, generator)
        return Encoding(images=images.add_(encoding.images - images), achieved_psnr=encoding.achieved_psnr)


class SaysUnkeyed(GaussianEncoder):
    """Declares that the key is ignored, but draws from it."""

    keyed = False


class SaysKeyed(CleanEncoder):
    """Declares that it uses the key, but releases the images as they are."""

    keyed = True


class SaysInRange(GaussianEncoder):
    """Declares releases in [0, 1], but does not clip."""

    in_unit_range = True


class SaysStandardPsnr(CleanEncoder):
    """Declares a standard-PSNR target, but ignores the strength."""

    strength_unit = STANDARD_PSNR


class OwnUnitIgnored(CleanEncoder):
    """Declares its own strength unit, but ignores the strength."""

    strength_unit = "nominal decibels of its own"


class ClaimsPatchSubspace(GaussianEncoder):
    """White noise, declared as drawn from the patch subspace."""

    def noise_subspace(self, model):
        return PatchEncoder(PatchEncoder.Params()).noise_subspace(model)


class ReadsWeights(GaussianEncoder):
    """Refuses a model by its weight values (absent at suite load)."""

    def check_model(self, model):
        return "weights on the meta device" if model.first_conv.weight.is_meta else None


class RefusesOnTwoLines(GaussianEncoder):
    """Refuses ResNets with a reason on two lines."""

    def check_model(self, model):
        return "overlapping stem\nuse a ViT" if model.geometry.overlapping else None


class RefusesEverything(GaussianEncoder):
    """Protects no model."""

    def check_model(self, model):
        return "no model is supported"


class TransformsInPlace(KeyedBlockEncoder):
    """Folds the key into the model it is given instead of a copy."""

    def authorized_view(self, model, generator):
        with torch.no_grad():
            model.first_conv.weight.mul_(2)
        return model


class WrongShape(GaussianEncoder):
    """Releases the images' transpose."""

    def encode(self, images, model, strength, generator):
        encoding = super().encode(images, model, strength, generator)
        return Encoding(images=encoding.images.transpose(-1, -2).contiguous(), achieved_psnr=encoding.achieved_psnr)


class NoSecret(Encoder):
    """Declares no threat model."""

    def encode(self, images, model, strength, generator):
        return Encoding(images=images.clone(), achieved_psnr=torch.full((len(images),), float("inf")))


class DrawsOnTheCpu(GaussianEncoder):
    """Draws its noise on the CPU whatever the images' device."""

    def encode(self, images, model, strength, generator):
        noise = 0.1 * torch.randn(images.shape, generator=generator)
        return Encoding(images=images + noise, achieved_psnr=psnr_per_image(images, images + noise))


class SaysPng8KeepsIt(ReferenceEncoder):
    """Declares that 8-bit PNGs keep its unclipped release working."""

    storage_formats = ("float32", "png8")


class NamesNoFormat(GaussianEncoder):
    """Declares a storage format that does not exist."""

    storage_formats = ("float32", "png")


BROKEN = {
    "lies_about_psnr": (LiesAboutPsnr, "achieved_psnr", "the release's standard PSNR"),
    "draws_globally": (DrawsGlobally, "determinism_under_a_key", "drew from torch's global generator"),
    "changes_its_input": (ChangesItsInput, "release_shape_and_range", "changed the images it was given"),
    "says_unkeyed": (
        SaysUnkeyed,
        "determinism_under_a_key",
        "declares keyed = False, but another seed gave another release",
    ),
    "says_keyed": (SaysKeyed, "determinism_under_a_key", "another seed gave the same release"),
    "says_in_range": (SaysInRange, "release_shape_and_range", "declares in_unit_range"),
    "says_standard_psnr": (SaysStandardPsnr, "achieved_psnr", "a standard-PSNR target, released at [inf"),
    "own_unit_ignored": (OwnUnitIgnored, "achieved_psnr", "gave one release (declare strength_unit = IGNORED)"),
    "claims_patch_subspace": (ClaimsPatchSubspace, "noise_subspace", "outside the declared subspace"),
    "reads_weights": (ReadsWeights, "check_model", "must not read weights"),
    "refuses_on_two_lines": (RefusesOnTwoLines, "check_model", "not one line"),
    "refuses_everything": (RefusesEverything, "release_shape_and_range", "refuses every model of the specification"),
    "transforms_in_place": (TransformsInPlace, "authorized_view", "changed the model it was given"),
    "wrong_shape": (WrongShape, "release_shape_and_range", "(3, 1, 24, 20) torch.float32 for (3, 1, 20, 24)"),
    "no_secret": (NoSecret, "declarations", "declare `secret`"),
    "says_png8_keeps_it": (
        SaysPng8KeepsIt,
        "storage_formats",
        "declares storage format png8, but stored in it the release keeps",
    ),
    "names_no_format": (NamesNoFormat, "declarations", "unknown storage format 'png'"),
}


@pytest.fixture
def broken(monkeypatch):
    """The encoders of :data:`BROKEN`, registered for one test."""
    ENCODERS.names()
    monkeypatch.setattr(ENCODERS, "_classes", dict(ENCODERS._classes))
    for name, (cls, _, _) in BROKEN.items():
        monkeypatch.setattr(cls, "name", name, raising=False)
        ENCODERS._classes[name] = cls


@pytest.mark.parametrize("name", BROKEN)
def test_the_specification_catches_an_encoder_that_breaks_a_promise(broken, name):
    _, check_name, message = BROKEN[name]
    with pytest.raises(AssertionError, match=f"{name}.*{re.escape(message)}"):
        CHECKS[check_name](name)


def test_the_specification_catches_an_encoder_that_draws_on_the_cpu_for_cuda_images(broken, monkeypatch):
    monkeypatch.setattr(DrawsOnTheCpu, "name", "draws_on_the_cpu", raising=False)
    ENCODERS._classes["draws_on_the_cpu"] = DrawsOnTheCpu
    CHECKS["release_shape_and_range"]("draws_on_the_cpu")  # fine on the CPU
    with PretendCuda(), pytest.raises(RuntimeError, match="same device"):
        CHECKS["release_shape_and_range"]("draws_on_the_cpu", device="cuda")
