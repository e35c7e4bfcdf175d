"""Adaptive attacks on constructed cases whose answer is known exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nonxfer_bench.attacks import ATTACKS, AttackContext
from nonxfer_bench.attacks._subspace_tools import SubspaceRemover, Tiling, excess_variance_directions, first_layer_tiles
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model

PRE = {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]}


def vit(seed: int, name: str = "vit"):
    """Random ViT stem 4x4/4 on 16x16, m = 12 < D = 16: exact 4-dim patch null space."""
    kwargs = {
        "img_size": 16,
        "patch_size": 4,
        "in_chans": 1,
        "embed_dim": 12,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 10,
    }
    return build_model(ModelSpec(name=name, arch="vit_tiny_patch16_224", kwargs=kwargs, preprocess=PRE, seed=seed))


def resnet(seed: int, name: str = "res"):
    """Random ResNet stem 7x7/2 pad 3 (overlapping)."""
    kwargs = {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10}
    return build_model(ModelSpec(name=name, arch="resnet18", kwargs=kwargs, preprocess=PRE, seed=seed))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def fitted(name: str, authorized, public, released, params=None, models=None):
    attack = ATTACKS.create(name, params)
    lookup = {authorized.name: authorized, **(models or {})}
    attack.fit(AttackContext(authorized, lookup.__getitem__, public, released))
    return attack


def without_null_space(images: torch.Tensor, model) -> torch.Tensor:
    """The images with their V_N component removed from every stem tile (no clean energy in V_N)."""
    tiling, basis = first_layer_tiles(model, 1e-5)
    remover = SubspaceRemover(basis, None, "none")
    return tiling.apply(images.double(), remover).float()


# --- oracle projection ------------------------------------------------------------------------------


@pytest.mark.parametrize("restore", ["regression", "mean", "none"])
def test_oracle_restores_the_clean_image_exactly_when_it_has_no_energy_in_vn(restore):
    model = vit(0)
    clean = without_null_space(rand(6, 1, 16, 16, seed=1), model)
    public = without_null_space(rand(40, 1, 16, 16, seed=2), model)
    released = ENCODERS.create("patch").encode(clean, model, 0.0, torch.Generator().manual_seed(3)).images
    assert (released - clean).pow(2).mean() > 0.5  # 0 dB: noise as large as the image
    oracle = fitted("oracle_projection", model, public, released, {"restore": restore})
    restored = oracle(released, 1.0, torch.Generator())
    assert torch.allclose(restored, clean, atol=1e-4)
    assert oracle.measured(1.0)["clean_energy_in_vn"] < 1e-10
    assert oracle.parameter(1.0)["k"] == 4


def test_oracle_strength_is_the_removed_fraction():
    model = vit(0)
    clean = without_null_space(rand(4, 1, 16, 16, seed=1), model)
    released = ENCODERS.create("patch").encode(clean, model, 5.0, torch.Generator().manual_seed(3)).images
    oracle = fitted("oracle_projection", model, clean, released, {"restore": "none"})
    half = oracle(released, 0.5, torch.Generator())
    assert torch.allclose(half - clean, 0.5 * (released - clean), atol=1e-5)


def test_oracle_reports_the_clean_energy_it_must_destroy():
    model = vit(0)
    public = rand(30, 1, 16, 16, seed=2)
    oracle = fitted("oracle_projection", model, public, public)
    share = oracle.measured(1.0)["clean_energy_in_vn"]
    tiling, basis = first_layer_tiles(model, 1e-5)
    rows = tiling.patches(public).double()
    assert share == pytest.approx(float((rows @ basis).pow(2).sum() / rows.pow(2).sum()), rel=1e-4)
    assert 0 < share < 1


# --- patch statistics --------------------------------------------------------------------------------


def test_patch_mean_recovers_a_repeated_vector_exactly_on_a_constant_background():
    background = torch.full((3, 1, 16, 16), 0.3)
    vectors = rand(3, 16, seed=4) - 0.5  # one 4x4 vector per image, tiled over the 4x4 lattice
    tiled = F.fold(vectors.unsqueeze(-1).expand(-1, -1, 16), output_size=(16, 16), kernel_size=4, stride=4)
    released = background + tiled
    attack = fitted("patch_mean", vit(0), torch.full((5, 1, 16, 16), 0.3), released, {"kernel": 4})
    noise, _ = attack.estimate(released)
    assert torch.allclose(noise.float(), vectors, atol=1e-6)
    assert torch.allclose(attack(released, 1.0, torch.Generator()), background, atol=1e-6)
    assert torch.allclose(attack(released, 0.5, torch.Generator()), background + 0.5 * tiled, atol=1e-6)


@pytest.mark.parametrize("stem", [vit, resnet])
def test_patch_mean_inverts_the_reference_encoder_on_a_constant_background(stem):
    """Also for the overlapping 7x7/2 stem, where fold multiplies the image by the window count."""
    model = stem(0)
    background = torch.full((4, 1, 16, 16), 0.6)
    released = ENCODERS.create("reference").encode(background, model, 20.0, torch.Generator().manual_seed(1)).images
    assert (released - background).pow(2).mean() > 1e-3
    attack = fitted("patch_mean", model, torch.full((5, 1, 16, 16), 0.6), released)
    assert torch.allclose(attack(released, 1.0, torch.Generator()), background, atol=1e-4)


def test_patch_statistics_fail_against_the_per_patch_encoder():
    model = vit(0)
    background = torch.full((4, 1, 16, 16), 0.6)
    released = ENCODERS.create("patch").encode(background, model, 0.0, torch.Generator().manual_seed(1)).images
    before = (released - background).pow(2).mean()
    for name in ("patch_mean", "lattice_notch"):
        attack = fitted(name, model, torch.full((5, 1, 16, 16), 0.6), released)
        after = (attack(released, 1.0, torch.Generator()) - background).pow(2).mean()
        assert after > 0.8 * before, name  # 16 independent tiles: the mean holds ~1/16 of the noise


def smooth(count: int, seed: int, size: int = 16) -> torch.Tensor:
    """Smooth random images (local averages of uniform noise), a crude natural-image prior."""
    return F.avg_pool2d(rand(count, 1, size + 2, size + 2, seed=seed), 3, 1)


def test_patch_wiener_leaves_clean_releases_alone_and_removes_reference_noise():
    model = vit(0)
    public, clean = smooth(400, 1), smooth(200, 2)
    plain = fitted("patch_mean", model, public, clean)
    wiener = fitted("patch_wiener", model, public, clean)
    changed_plain = (plain(clean, 1.0, torch.Generator()) - clean).pow(2).mean()
    changed_wiener = (wiener(clean, 1.0, torch.Generator()) - clean).pow(2).mean()
    assert changed_wiener < 0.2 * changed_plain  # no repeated noise in the release: (almost) nothing to remove
    released = ENCODERS.create("reference").encode(clean, model, 20.0, torch.Generator().manual_seed(1)).images
    before = (released - clean).pow(2).mean()
    errors = {}
    for name in ("patch_mean", "patch_wiener"):
        attack = fitted(name, model, public, released)
        errors[name] = (attack(released, 1.0, torch.Generator()) - clean).pow(2).mean()
    assert errors["patch_wiener"] < errors["patch_mean"] < 0.05 * before


def test_lattice_notch_moves_the_mean_toward_the_public_prior_after_fit():
    background = torch.full((2, 1, 16, 16), 0.3)
    vectors = rand(2, 16, seed=4) - 0.5
    tiled = F.fold(vectors.unsqueeze(-1).expand(-1, -1, 16), output_size=(16, 16), kernel_size=4, stride=4)
    notch = fitted("lattice_notch", vit(0), torch.full((3, 1, 16, 16), 0.3), background + tiled)
    assert torch.allclose(notch(background + tiled, 1.0, torch.Generator()), background, atol=1e-6)


def test_lattice_notch_removes_a_periodic_pattern_but_its_mean():
    background = torch.full((2, 1, 16, 16), 0.3)
    vectors = rand(2, 16, seed=4) - 0.5
    tiled = F.fold(vectors.unsqueeze(-1).expand(-1, -1, 16), output_size=(16, 16), kernel_size=4, stride=4)
    notch = ATTACKS.create("lattice_notch", {"kernel": 4})
    out = notch(background + tiled, 1.0, torch.Generator())
    expected = background + vectors.mean(1).view(-1, 1, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)


# --- subspace estimation -----------------------------------------------------------------------------


def test_excess_variance_finds_a_planted_subspace():
    generator = torch.Generator().manual_seed(0)
    d, r = 20, 3
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    clean = torch.randn(4000, d, generator=generator, dtype=torch.float64) @ mixing.T
    planted, _ = torch.linalg.qr(torch.randn(d, r, generator=generator, dtype=torch.float64))
    released = torch.randn(3000, d, generator=generator, dtype=torch.float64) @ mixing.T
    released = released + 20 * torch.randn(3000, r, generator=generator, dtype=torch.float64) @ planted.T
    basis, ratios = excess_variance_directions(released, clean, r)
    projector_error = torch.linalg.matrix_norm(basis @ basis.T - planted @ planted.T, ord=2)
    assert projector_error < 0.05
    assert ratios[r - 1] > 10 * ratios[r]


def test_subspace_patch_removes_planted_tile_noise():
    model = vit(0)
    generator = torch.Generator().manual_seed(5)
    public = F.avg_pool2d(rand(200, 1, 18, 18, seed=6), 3, 1)  # smooth-ish clean images, 16x16
    clean = F.avg_pool2d(rand(100, 1, 18, 18, seed=7), 3, 1)
    planted, _ = torch.linalg.qr(torch.randn(16, 2, generator=generator))
    noise = planted @ torch.randn(100, 2, 16, generator=generator)  # independent per tile, in a 2-dim subspace
    tiles = dict(kernel_size=4, stride=4)
    released = clean + F.fold(noise, output_size=(16, 16), **tiles)
    attack = fitted("subspace_patch", model, public, released, {"max_dims": 2})
    assert attack.parameter(1.0)["dims"] == 2
    out = attack(released, 1.0, torch.Generator())
    assert (out - clean).pow(2).mean() < 0.02 * (released - clean).pow(2).mean()
    assert attack(released, 0.0, torch.Generator()).equal(released)


def test_subspace_image_removes_planted_image_noise():
    model = vit(0)
    generator = torch.Generator().manual_seed(5)
    public = F.avg_pool2d(rand(400, 1, 18, 18, seed=6), 3, 1)
    clean = F.avg_pool2d(rand(300, 1, 18, 18, seed=7), 3, 1)
    planted, _ = torch.linalg.qr(torch.randn(256, 3, generator=generator))
    released = clean + (torch.randn(300, 3, generator=generator) @ planted.T).view(300, 1, 16, 16)
    attack = fitted("subspace_image", model, public, released, {"max_dims": 3})
    out = attack(released, 1.0, torch.Generator())
    assert (out - clean).pow(2).mean() < 0.05 * (released - clean).pow(2).mean()


# --- surrogate zoo -----------------------------------------------------------------------------------


def test_surrogate_identifies_the_authorized_stem_among_candidates():
    authorized, twin, res = vit(0, "vit_a"), vit(1, "vit_b"), resnet(2)
    public = F.avg_pool2d(rand(60, 1, 18, 18, seed=6), 3, 1)
    clean = F.avg_pool2d(rand(40, 1, 18, 18, seed=7), 3, 1)
    released = ENCODERS.create("patch").encode(clean, authorized, 10.0, torch.Generator().manual_seed(1)).images
    models = {"vit_b": twin, "res": res}
    attack = fitted(
        "surrogate_projection", authorized, public, released, {"candidates": ["vit_b", "res", "vit_a"]}, models
    )
    assert attack.measured(1.0)["chosen"] == "vit_a"
    assert attack.scores["vit_a"] > 0.99 and attack.scores["vit_a"] > 2 * max(
        attack.scores["vit_b"], attack.scores["res"]
    )
    oracle = fitted("oracle_projection", authorized, public, released)
    assert torch.allclose(attack(released, 1.0, torch.Generator()), oracle(released, 1.0, torch.Generator()), atol=1e-5)
    private = fitted(
        "surrogate_projection",
        authorized,
        public,
        released,
        {"candidates": ["vit_b", "res", "vit_a"], "exclude_authorized": True},
        models,
    )
    assert private.measured(1.0)["chosen"] != "vit_a"


# --- integrity ---------------------------------------------------------------------------------------


def test_torchattacks_adapter_equals_torchattacks_on_in_range_images():
    import torchattacks

    model = vit(0)
    images = rand(5, 1, 16, 16, seed=1)
    labels = torch.arange(5)
    attack = fitted("pgd", model, images[:0], images)
    attack.context.batch_labels = labels
    generator = torch.Generator().manual_seed(2)
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(2)))
    out = attack(images, 0.5, generator)
    torch.manual_seed(seed)
    direct = torchattacks.PGD(model, eps=4 / 255, alpha=1 / 255, steps=10)(images, labels)
    assert torch.allclose(out, direct, atol=1e-6)


def test_torchattacks_budget_is_in_pixel_units_on_unclipped_releases():
    model = vit(0)
    images = rand(5, 1, 16, 16, seed=1) * 30 - 15  # a reference-like release far outside [0, 1]
    attack = fitted("pgd", model, images[:0], images)
    out = attack(images, 1.0, torch.Generator().manual_seed(0))
    assert (out - images).abs().max() <= 8 / 255 + 1e-4
    assert (out - images).abs().max() > 4 / 255
    assert out.min() < -14 and out.max() > 14  # the release keeps its range


def test_generic_adapter_validates_class_and_arguments():
    with pytest.raises(UserError, match=r"^attack 'torchattacks': torchattacks has no attack class 'NotAnAttack'"):
        ATTACKS.create("torchattacks", {"name": "NotAnAttack"})
    with pytest.raises(UserError, match=r"^attack 'torchattacks': FGSM takes no argument\(s\) \['alpha'\]"):
        ATTACKS.create("torchattacks", {"name": "FGSM", "scaled": {"alpha": 0.1}})
    assert ATTACKS.create("torchattacks", {"name": "CW", "scaled": {"c": 2.0}}).parameter(0.5) == {
        "attack": "CW",
        "c": 1.0,
    }


# --- denoisers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["denoise_median", "denoise_tv", "denoise_nlm"])
def test_denoisers_reduce_noise_on_a_piecewise_constant_image(name):
    clean = torch.zeros(2, 1, 48, 48)
    clean[:, :, 12:36, 12:36] = 1.0
    noisy = clean + 0.15 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    out = ATTACKS.create(name)(noisy, 0.5, torch.Generator())
    assert (out - clean).pow(2).mean() < 0.5 * (noisy - clean).pow(2).mean()


@pytest.mark.parametrize("name", ["denoise_tv", "denoise_nlm", "denoise_median"])
def test_denoisers_are_scale_equivariant_on_unclipped_releases(name):
    noisy = rand(2, 1, 20, 20, seed=3)
    attack = ATTACKS.create(name)
    small = attack(noisy, 0.7, torch.Generator())
    large = attack(noisy * 50 - 20, 0.7, torch.Generator())
    assert torch.allclose(large, small * 50 - 20, atol=1e-3 * 50)


def test_tiling_leaves_uncovered_pixels_alone():
    tiling = Tiling(ConvGeometry((4, 4), (4, 4)))
    images = rand(2, 1, 10, 10)
    out = tiling.apply(images, lambda rows: rows * 0)
    assert out[..., :8, :8].abs().max() == 0
    assert out[..., 8:, :].equal(images[..., 8:, :]) and out[..., :, 8:].equal(images[..., :, 8:])


def test_torchattacks_distances_and_penalties_are_kept_in_pixel_units(monkeypatch):
    import nonxfer_bench.attacks.integrity as integrity

    seen = {}

    class Recorder:
        def __init__(self, model, **kwargs):
            seen.update(kwargs)

        def __call__(self, inputs, labels):
            assert 0 <= float(inputs.min()) and float(inputs.max()) <= 1
            return inputs

    model = vit(0)
    images = rand(3, 1, 16, 16) * 3 - 1
    images[0, 0, 0, :2] = torch.tensor([-1.0, 2.0])  # range exactly [-1, 2]: rescaled by 3
    attacks = {name: fitted(name, model, images[:0], images) for name in ("pgd", "cw")}
    monkeypatch.setattr(integrity, "torchattacks_class", lambda name: Recorder)
    for name, expected in (
        ("pgd", {"eps": 8 / 255 / 3, "alpha": 2 / 255 / 3, "steps": 10}),
        ("cw", {"c": 1 / 9, "steps": 50, "lr": 0.01 / 3}),
    ):
        seen.clear()
        out = attacks[name](images, 1.0, torch.Generator())
        assert seen == pytest.approx(expected)
        assert torch.allclose(out, images, atol=1e-6)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "cw"])
def test_integrity_attacks_leave_every_module_of_the_model_in_its_mode(name):
    model = resnet(0).eval()  # batch norm: a model left in training mode would evaluate differently
    images = rand(4, 1, 16, 16, seed=1)
    fitted(name, model, images[:0], images)(images, 1.0, torch.Generator())
    assert not any(module.training for module in model.modules())
