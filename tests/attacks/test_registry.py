"""Every registered attack, through the specification in ``nonxfer_bench.attacks.testing`` (a new attack is
picked up here; plugin authors run the same checks on theirs). Attacks with required parameters take them
from ``SPEC_PARAMS``; the rest of this file tests particular attacks.
"""

import functools
import tempfile
from pathlib import Path

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.attacks.testing import (
    batch,
    check_harsher_at_strength_one,
    check_parameter_is_json,
    check_refuses_to_run_unfitted,
    check_rejects_strengths_outside_the_unit_interval,
    check_shape_dtype_and_determinism,
    check_threat_model,
    check_typed_parameters,
)

NAMES = ATTACKS.names()
ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def tiny_vae_dir() -> str:
    """A tiny random AutoencoderKL saved with save_pretrained, as a user's local weights would be."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=2, norm_num_groups=4)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="nxb-vae-"))
    vae.save_pretrained(folder)
    return str(folder)


@functools.cache
def tiny_img2img_dir() -> str:
    """A tiny random Stable Diffusion img2img pipeline (CLIP text encoder and tokenizer, conditional UNet, VAE,
    DDIM) saved with save_pretrained, the layout of a user's local copy of a hub pipeline."""
    import json

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(tempfile.mkdtemp(prefix="nxb-sd-"))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {
        token: i
        for i, token in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=16,
            bos_token_id=len(vocab) - 2,
            eos_token_id=len(vocab) - 1,
            pad_token_id=len(vocab) - 1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)  # fmt: skip
    scheduler = DDIMScheduler(clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "pipeline")
    return str(folder / "pipeline")


SPEC_PARAMS = {
    "surrogate_projection": lambda: {"candidates": ["authorized", "twin", "res"]},
    "identify": lambda: {"candidates": ["authorized", "twin", "res"]},
    "finetune": lambda: {"labelled": 8, "epochs": 1},
    "augment_finetune": lambda: {"images": 8, "epochs": 1},
    "learned_inverse": lambda: {
        "pairs": "identified",
        "candidates": ["authorized", "twin", "res"],
        "m": 8,
        "steps": 5,
        "width": 8,
        "depth": 2,
    },
    "autoencoder": lambda: {
        "dataset": {"name": "digits", "params": {"split": "train"}},
        "epochs": 10,
        "width": 16,
        "batch_size": 32,
    },
    "diffusion": lambda: {"source": str(ROOT / "suites/zoo/weights/fashion-ddpm"), "steps": 4},
    "diffusers_vae": lambda: {"source": tiny_vae_dir()},
    "img2img": lambda: {"source": tiny_img2img_dir(), "size": 16, "steps": 4},
    "tuned": lambda: {"attack": "blur", "space": {"max_sigma": {"low": 0.5, "high": 3.0}}, "trials": 3},
}


# attacks that need a package a machine may lack (benchmarks/gpu_bundle.py carries neither to a lent GPU machine)
REQUIRES = {name: "diffusers" for name in ("diffusers_vae", "diffusion", "img2img")} | {
    name: "torchattacks" for name in ("torchattacks", "pgd", "fgsm", "cw")
}
REQUIRES["tuned"] = "optuna"


def spec_params(name: str) -> dict | None:
    return SPEC_PARAMS[name]() if name in SPEC_PARAMS else None


def requires(name: str) -> None:
    """Skip a test of ``name`` where the package it needs is not installed."""
    if name in REQUIRES:
        pytest.importorskip(REQUIRES[name], reason=f"{name} needs {REQUIRES[name]}")


@pytest.fixture
def deterministic_cuda():
    """cuDNN's deterministic algorithms and float32 without TF32 while a test runs on CUDA: one seed, one result,
    and float32 that compares with the CPU's."""
    backends = torch.backends
    before = (
        backends.cudnn.deterministic,
        backends.cudnn.benchmark,
        backends.cudnn.allow_tf32,
        backends.cuda.matmul.allow_tf32,
    )
    (
        backends.cudnn.deterministic,
        backends.cudnn.benchmark,
        backends.cudnn.allow_tf32,
        backends.cuda.matmul.allow_tf32,
    ) = True, False, False, False
    yield
    (
        backends.cudnn.deterministic,
        backends.cudnn.benchmark,
        backends.cudnn.allow_tf32,
        backends.cuda.matmul.allow_tf32,
    ) = before


# attacks that leave the images alone by design: the baseline, model adaptation, identification; and key recovery,
# whose estimate on the specification's release (patch NEs, not keyed) is the identity
# (tests/attacks/test_keyed_attacks.py)
UNCHANGED_IMAGES = {"identity", "identify", "keyed_known_plaintext"} | {n for n in NAMES if ATTACKS.get(n).adapts_model}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_keeps_shape_dtype_and_is_deterministic(name):
    check_shape_dtype_and_determinism(name, spec_params(name))


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_keeps_shape_dtype_device_and_is_deterministic_on_cuda(name, deterministic_cuda):
    """The same check with the batch, the context's models and images on CUDA (tests/test_cuda_path.py runs it on a
    pretend CUDA device where there is none, and compares each attack's CUDA results with the CPU's)."""
    requires(name)
    check_shape_dtype_and_determinism(name, spec_params(name), device="cuda")


@pytest.mark.parametrize("name", NAMES)
def test_declares_typed_parameters_and_rejects_unknown_ones(name):
    check_typed_parameters(name)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_strengths_outside_the_unit_interval(name):
    check_rejects_strengths_outside_the_unit_interval(name, spec_params(name))


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_threat_model_as_data_on_its_own_class(name):
    check_threat_model(name, spec_params(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n not in UNCHANGED_IMAGES])
def test_harshest_strength_changes_the_images_more_than_the_mildest(name):
    check_harsher_at_strength_one(name, spec_params(name))


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS.get(n).fit is not Attack.fit])
def test_informed_attacks_refuse_to_run_unfitted(name):
    check_refuses_to_run_unfitted(name, spec_params(name))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_is_a_json_ready_dict_at_every_strength(name):
    check_parameter_is_json(name, spec_params(name))


def test_strength_maps_to_each_attacks_own_parameter():
    assert ATTACKS.create("jpeg_pil").parameter(0.0) == {"quality": 95}
    assert ATTACKS.create("jpeg_pil").parameter(1.0) == {"quality": 5}
    assert ATTACKS.create("resize").parameter(1.0) == {"scale": 0.25}
    assert ATTACKS.create("quantize").parameter(0.0) == {"bits": 8}
    assert ATTACKS.create("blur", {"max_sigma": 3.0}).parameter(0.5) == {"sigma": 1.5}


def test_jpeg_minmax_range_keeps_unclipped_images_in_their_range():
    x = batch(1) * 40 - 20  # the reference encoder releases values far outside [0, 1]
    out = ATTACKS.create("jpeg_pil")(x, 0.0, torch.Generator())
    assert (out - x).abs().mean() < 0.05 * (x.max() - x.min())


def test_pil_and_kornia_jpeg_agree_roughly():
    x = torch.nn.functional.interpolate(batch(3), scale_factor=2, mode="bilinear")
    pil = ATTACKS.create("jpeg_pil")(x, 0.5, torch.Generator())
    kornia = ATTACKS.create("jpeg_kornia")(x, 0.5, torch.Generator())
    assert (pil - kornia).abs().mean() < 0.05


def test_quantize_at_8_bits_stores_what_an_8_bit_png_stores():
    x = batch(1) * 1.4 - 0.2
    out = ATTACKS.create("quantize")(x, 0.0, torch.Generator())
    assert torch.equal(out, (x.clamp(0, 1) * 255).round() / 255)
