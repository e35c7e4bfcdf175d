"""Encoders: the published recipe reproduced (bit for bit, or to float rounding on tiling stems), exact PSNR,
determinism, subspace placement."""

import pytest
import torch
import torch.nn.functional as F

from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.linalg.subspace import pixel_space_subspace
from nonxfer_bench.zoo import build_model
from tests.encoders.stems import STEMS


@pytest.fixture(scope="module", params=sorted(STEMS))
def model(request):
    torch.manual_seed(0)
    return build_model(STEMS[request.param])


def images(count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def published_recipe(normalized: torch.Tensor, conv: torch.nn.Conv2d, nominal_psnr: float, tau: float):
    """A second, literal implementation of the published recipe, drawing from the global generator."""
    w = conv.weight.detach().flatten(1)
    m, d = w.shape
    _, s, vh = torch.linalg.svd(w, full_matrices=True)
    r = m if d > m else min(int((s > tau).sum()), d - 1)
    v_n = vh[r:].T
    kwargs = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    u = F.unfold(normalized, **kwargs)
    b, k = normalized.shape[0], v_n.shape[1]
    target = 255.0**2 / 10 ** (nominal_psnr / 10)
    z1 = torch.randn(b, k, 1)
    n1 = v_n @ z1
    mu2 = ((u + n1) ** 2).mean(dim=(1, 2))
    c = torch.sqrt(target / mu2).view(b, 1, 1)
    z2 = torch.randn(b, k, 1)
    u_encoded = u + v_n @ (c * z2)
    return F.fold(u_encoded, output_size=normalized.shape[-2:], **kwargs), u_encoded


@pytest.mark.parametrize("nominal_psnr", [0.0, 30.0])
def test_reference_equals_the_published_recipe(model, nominal_psnr):
    """From the same draws in the same order, equal to the literal recipe (unfold, add, fold) to float rounding."""
    x = images()
    torch.manual_seed(7)
    folded, patches = published_recipe(model.normalize(x), model.first_conv, nominal_psnr, tau=1e-5)
    published_state = torch.get_rng_state()
    generator = torch.Generator().manual_seed(7)
    encoding = ENCODERS.create("reference").encode(x, model, nominal_psnr, generator)
    assert torch.equal(generator.get_state(), published_state)  # the same draws, in the same order
    noise = folded - model.normalize(x)
    error = model.normalize(encoding.images) - folded
    assert error.abs().max() < 1e-5 * noise.abs().max()
    if model.geometry.overlapping:
        assert (encoding.flat_input.patches() - patches).abs().max() < 1e-5 * patches.abs().max()
        weight = model.first_conv.weight
        assert torch.allclose(
            encoding.flat_input.first_layer(weight),
            weight.flatten(1) @ patches,
            rtol=1e-4,
            atol=1e-4 * float((weight.flatten(1) @ patches).abs().max()),
        )
    else:
        assert encoding.flat_input is None


@pytest.mark.parametrize("name", ["patchify_null", "overlapping"])
def test_reference_never_unfolds_or_folds(monkeypatch, name):
    """Tiling stems add one broadcast tile, overlapping ones one strided add per kernel offset; the flat
    input's first-layer output needs no unfolded tensor either."""
    torch.manual_seed(0)
    model = build_model(STEMS[name])

    def refuse(*args, **kwargs):
        raise AssertionError("unfold/fold called by the encoder")

    monkeypatch.setattr(F, "unfold", refuse)
    monkeypatch.setattr(F, "fold", refuse)
    encoding = ENCODERS.create("reference").encode(images(), model, 0.0, torch.Generator().manual_seed(1))
    assert torch.isfinite(encoding.images).all()
    if encoding.flat_input is not None:
        assert torch.isfinite(encoding.flat_input.first_layer(model.first_conv.weight)).all()


def test_reference_matches_the_literal_recipe_when_the_patches_do_not_tile_the_image():
    """18 px is not a multiple of the 4 px patch: fold leaves the remainder at 0 in normalized space."""
    torch.manual_seed(0)
    vit = build_model(STEMS["patchify_null"])
    x = torch.rand(2, 1, 18, 18, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    folded, _ = published_recipe(vit.normalize(x), vit.first_conv, 10.0, tau=1e-5)
    encoding = ENCODERS.create("reference").encode(x, vit, 10.0, torch.Generator().manual_seed(3))
    assert torch.allclose(vit.normalize(encoding.images), folded, rtol=1e-5, atol=1e-5 * float(folded.abs().max()))
    assert torch.equal(vit.normalize(encoding.images)[..., 16:, :], torch.zeros_like(folded[..., 16:, :]))


def test_reference_flat_input_path_leaves_the_authorized_stem_unchanged_for_an_exact_null_space():
    torch.manual_seed(0)
    vit = build_model(STEMS["patchify_null"])
    x = images()
    encoding = ENCODERS.create("reference").encode(x, vit, 0.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(vit(encoding.images), vit(x), atol=1e-3)


@pytest.mark.parametrize("name", ["patch", "gaussian"])
@pytest.mark.parametrize("target", [0.0, 12.5, 40.0])
def test_standard_psnr_is_hit_exactly_per_image(model, name, target):
    x = images()
    encoding = ENCODERS.create(name).encode(x, model, target, torch.Generator().manual_seed(3))
    assert torch.allclose(encoding.achieved_psnr, torch.full((4,), target, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("name", ["reference", "patch", "gaussian"])
def test_same_key_gives_identical_bytes_and_another_key_does_not(model, name):
    x = images()
    encoder = ENCODERS.create(name)
    first = encoder.encode(x, model, 10.0, torch.Generator().manual_seed(5)).images
    again = encoder.encode(x, model, 10.0, torch.Generator().manual_seed(5)).images
    other = encoder.encode(x, model, 10.0, torch.Generator().manual_seed(6)).images
    assert first.numpy().tobytes() == again.numpy().tobytes()
    assert not torch.equal(first, other)


def test_patch_noise_lies_in_the_pixel_space_subspace_on_every_window_of_a_patchifying_stem():
    torch.manual_seed(0)
    vit = build_model(STEMS["patchify_null"])
    x = images()
    encoding = ENCODERS.create("patch").encode(x, vit, 5.0, torch.Generator().manual_seed(2))
    conv = vit.first_conv
    noise_normalized = vit.normalize(encoding.images) - vit.normalize(x)
    response = F.conv2d(noise_normalized, conv.weight, stride=conv.stride)  # no bias: the change of the first layer
    assert response.abs().max() < 1e-3 * noise_normalized.abs().max()
    basis = pixel_space_subspace(vit, 1e-5).basis
    patches = F.unfold(encoding.images - x, kernel_size=4, stride=4)
    assert torch.allclose(basis @ basis.T @ patches, patches, atol=1e-5)


def test_patch_draws_differ_between_patches():
    torch.manual_seed(0)
    vit = build_model(STEMS["patchify_null"])
    x = images(1)
    encoding = ENCODERS.create("patch").encode(x, vit, 5.0, torch.Generator().manual_seed(2))
    patches = F.unfold(encoding.images - x, kernel_size=4, stride=4)[0]
    assert not torch.allclose(patches[:, 0], patches[:, 1])


def test_clean_encoder_is_the_identity(model):
    x = images()
    encoding = ENCODERS.create("clean").encode(x, model, 0.0, torch.Generator())
    assert torch.equal(encoding.images, x) and torch.isinf(encoding.achieved_psnr).all()


def test_the_patch_encoder_makes_one_svd_per_first_layer(monkeypatch):
    """One SVD per first layer (not per batch), the same releases as an encoder that has made none, and a new SVD
    for a layer whose weights changed."""
    import nonxfer_bench.encoders.patch as patch

    calls = []
    monkeypatch.setattr(
        patch, "patch_subspace", lambda weight, tau, real=patch.patch_subspace: calls.append(tau) or real(weight, tau)
    )
    torch.manual_seed(0)
    model = build_model(STEMS["overlapping"])
    encoder = ENCODERS.create("patch")
    released = [
        encoder.encode(images(seed=seed), model, 20.0, torch.Generator().manual_seed(1)).images for seed in range(3)
    ]
    assert len(calls) == 1
    assert torch.equal(
        released[2],
        ENCODERS.create("patch").encode(images(seed=2), model, 20.0, torch.Generator().manual_seed(1)).images,
    )
    with torch.no_grad():
        model.first_conv.weight[0] *= -1  # another layer (same null space, other W): its own SVD
    encoder.encode(images(), model, 20.0, torch.Generator().manual_seed(1))
    assert len(calls) == 3
