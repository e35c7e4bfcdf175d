"""Reconstruction attacks: a trained denoiser beats the identity, purification is exact at t* = 0,
draws are seeded, K-draw aggregation is right, and local save_pretrained models load."""

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.testing import make
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.datasets.base import load_dataset
from nonxfer_bench.generative.autoencoder import AutoencoderConfig, load_or_train
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.metrics.outcomes import aggregate_draws
from tests.attacks.test_registry import ROOT, tiny_img2img_dir, tiny_vae_dir

DDPM = str(ROOT / "suites/zoo/weights/fashion-ddpm")
DIGITS_AE = {"dataset": {"name": "digits", "params": {"split": "train"}}, "epochs": 10, "width": 16, "batch_size": 32}


@pytest.fixture
def fashion() -> torch.Tensor:
    return load_dataset("fashion_mnist", {"split": "test"}).subset(16, 0).as_float()


def test_the_autoencoder_beats_the_identity_in_psnr_on_noisy_held_out_images(tmp_path, monkeypatch):
    monkeypatch.setenv("NXB_CACHE", str(tmp_path))
    attack = make("autoencoder", DIGITS_AE, channels=1)  # fitted, as the runner does
    clean = load_dataset("digits", {"split": "test"}).subset(100, 0).as_float()
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    reconstructed = attack(noisy, 0.0, torch.Generator())
    assert psnr_per_image(clean, reconstructed).mean() > psnr_per_image(clean, noisy).mean() + 3


def test_the_autoencoder_is_cached_by_its_config_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("NXB_CACHE", str(tmp_path))
    config = AutoencoderConfig(**DIGITS_AE)
    first = load_or_train(config)
    files = list((tmp_path / "autoencoders").glob("*.safetensors"))
    assert len(files) == 1
    second = load_or_train(config)  # from the cache: identical weights, no second file
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    load_or_train(config.model_copy(update={"bottleneck": 4}))
    assert len(list((tmp_path / "autoencoders").glob("*.safetensors"))) == 2


def test_purification_at_t_star_zero_returns_the_input(fashion):
    attack = ATTACKS.create("diffusion", {"source": DDPM})
    assert torch.equal(attack(fashion, 0.0, torch.Generator()), fashion)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_purification_and_another_seed_another(fashion):
    attack = ATTACKS.create("diffusion", {"source": DDPM, "steps": 10, "scheduler": "ddpm"})
    first = attack(fashion[:4], 0.2, torch.Generator().manual_seed(1))
    again = attack(fashion[:4], 0.2, torch.Generator().manual_seed(1))
    other = attack(fashion[:4], 0.2, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.slow
def test_the_committed_ddpm_purifies_gaussian_noise_towards_the_clean_image(fashion):
    noisy = fashion + 0.1 * torch.randn(fashion.shape, generator=torch.Generator().manual_seed(0))
    purified = ATTACKS.create("diffusion", {"source": DDPM, "steps": 50})(noisy, 0.1, torch.Generator().manual_seed(0))
    assert psnr_per_image(fashion, purified).mean() > psnr_per_image(fashion, noisy).mean()


def test_k_draw_aggregation_on_a_constructed_case():
    values = [0.2, 0.5, 0.8]
    unauthorized = aggregate_draws("accuracy", values, "unauthorized")
    assert unauthorized["accuracy"] == pytest.approx(0.5)
    assert unauthorized["accuracy_worst"] == 0.8  # the draw where protection failed most
    assert unauthorized["accuracy_spread"] == pytest.approx((0.18 / 3) ** 0.5)
    assert aggregate_draws("accuracy", values, "authorized")["accuracy_worst"] == 0.2
    assert aggregate_draws("accuracy", [0.4], "authorized") == {"accuracy": 0.4}
    assert aggregate_draws("accuracy", None, "authorized") == {"accuracy": None}


def test_a_diffusers_autoencoder_saved_locally_loads_and_reconstructs():
    attack = ATTACKS.create("diffusers_vae", {"source": tiny_vae_dir()})
    x = torch.rand(2, 1, 28, 28)
    out = attack(x, 0.5, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_an_img2img_pipeline_saved_locally_regenerates_seeded_and_follows_its_prompt():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    attack = ATTACKS.create("img2img", {"source": tiny_img2img_dir(), "size": 16, "steps": 4})
    first = attack(x, 1.0, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and 0 <= first.min() and first.max() <= 1 and not torch.equal(first, x)
    assert torch.equal(first, attack(x, 1.0, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, attack(x, 1.0, torch.Generator().manual_seed(2)))
    prompted = ATTACKS.create("img2img", {"source": tiny_img2img_dir(), "size": 16, "steps": 4, "prompt": "a shirt"})
    assert not torch.equal(
        first, prompted(x, 1.0, torch.Generator().manual_seed(1))
    )  # the text encoder conditions the UNet
    assert attack.parameter(1.0) == {"t_over_T": 0.5} and torch.equal(attack(x, 0.0, torch.Generator()), x)


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("diffusion", {"source": "/no/such/ddpm"}, "train one with `nonxfer-bench train diffusion"),
        ("diffusion", {"source": str(ROOT / "suites")}, "a save_pretrained folder with unet/ and scheduler/"),
        ("diffusers_vae", {"source": "./missing-vae"}, "save_pretrained"),
        ("img2img", {"source": "/no/such/pipeline"}, "save_pretrained or a hub id"),
        ("img2img", {"source": str(ROOT / "suites")}, "cannot load img2img pipeline"),
    ],
)
def test_missing_weights_say_how_to_provide_them(name, params, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace("`", "`")):
        ATTACKS.create(name, params)(torch.rand(1, 1, 28, 28), 0.5, torch.Generator())
