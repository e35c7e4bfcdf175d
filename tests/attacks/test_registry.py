"""Every registered attack, through one parametrized specification (a new attack is picked up here).

Attacks that override ``fit`` (informed attackers) are fitted first on a small :class:`AttackContext`
built from random-weight zoo models at the batch's resolution: ``authorized`` (a ViT with an exact
patch null space), the candidates ``twin`` (same architecture, other seed) and ``res`` (a ResNet stem),
public images and a released sample encoded by the ``patch`` encoder. Attacks with required parameters
take them from ``SPEC_PARAMS``.
"""

import functools
import tempfile
from pathlib import Path

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import TIERS, ThreatModel
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model

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
    vocab = {token: i for i, token in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=16, num_attention_heads=2,
                                                num_hidden_layers=1, max_position_embeddings=16, bos_token_id=len(vocab) - 2,
                                                eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1))  # fmt: skip
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=16,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=2, norm_num_groups=4)  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)  # fmt: skip
    pipeline = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
                                              safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipeline.save_pretrained(folder / "pipeline")
    return str(folder / "pipeline")


SPEC_PARAMS = {
    "surrogate_projection": lambda: {"candidates": ["authorized", "twin", "res"]},
    "identify": lambda: {"candidates": ["authorized", "twin", "res"]},
    "finetune": lambda: {"labelled": 8, "epochs": 1},
    "augment_finetune": lambda: {"images": 8, "epochs": 1},
    "autoencoder": lambda: {"dataset": {"name": "digits", "params": {"split": "train"}}, "epochs": 10, "width": 16, "batch_size": 32},
    "diffusion": lambda: {"source": str(ROOT / "suites/zoo/weights/fashion-ddpm"), "steps": 4},
    "diffusers_vae": lambda: {"source": tiny_vae_dir()},
    "img2img": lambda: {"source": tiny_img2img_dir(), "size": 16, "steps": 4},
}


def spec_params(name: str) -> dict | None:
    return SPEC_PARAMS[name]() if name in SPEC_PARAMS else None


def batch(channels: int) -> torch.Tensor:
    return torch.rand(3, channels, 20, 24, generator=torch.Generator().manual_seed(0))


@functools.cache
def context(channels: int) -> AttackContext:
    """A fitted-attack context at 20x24 with ``channels`` channels, random weights (seeded)."""
    preprocess = {"input_size": [channels, 20, 24], "mean": [0.5] * channels, "std": [0.25] * channels}
    vit = {"img_size": [20, 24], "patch_size": 4, "in_chans": channels, "embed_dim": 12, "depth": 1, "num_heads": 2, "num_classes": 10}
    res = {"in_chans": channels, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10}
    specs = {
        "authorized": ("vit_tiny_patch16_224", vit, 0),
        "twin": ("vit_tiny_patch16_224", vit, 1),
        "res": ("resnet18", res, 2),
    }
    models = {}
    for name, (arch, kwargs, seed) in specs.items():
        models[name] = build_model(ModelSpec(name=name, arch=arch, kwargs=kwargs, preprocess=preprocess, seed=seed))
    generator = torch.Generator().manual_seed(3)
    public = torch.rand(24, channels, 20, 24, generator=generator)
    clean = torch.rand(8, channels, 20, 24, generator=generator)
    encoder = ENCODERS.create("patch")
    released = encoder.encode(clean, models["authorized"], 15.0, generator).images
    labels = torch.arange(len(public)) % 10

    def encode(images: torch.Tensor, model) -> torch.Tensor:
        return encoder.encode(images, model, 15.0, torch.Generator().manual_seed(4)).images

    return AttackContext(models["authorized"], models.__getitem__, public, released, public_labels=labels, encode=encode)


def make(name: str, channels: int = 3) -> Attack:
    """The attack with its spec parameters, fitted on ``context(channels)`` if it is an informed attack."""
    attack = ATTACKS.create(name, spec_params(name))
    if type(attack).fit is not Attack.fit:
        attack.prepare(context(channels))
    return attack


# attacks that leave the images alone by design: the baseline, model adaptation, identification
UNCHANGED_IMAGES = {"identity", "identify"} | {n for n in NAMES if ATTACKS.get(n).adapts_model}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_keeps_shape_dtype_and_is_deterministic(name, channels, strength):
    attack = make(name, channels)
    x = batch(channels)
    first = attack(x, strength, torch.Generator().manual_seed(1))
    again = attack(x, strength, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("name", NAMES)
def test_declares_typed_parameters_and_rejects_unknown_ones(name):
    cls = ATTACKS.get(name)
    assert cls.__doc__
    with pytest.raises(Exception):
        cls.Params(not_a_parameter=1)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_strengths_outside_the_unit_interval(name):
    with pytest.raises(ValueError):
        make(name, 1)(batch(1), 1.5, torch.Generator())


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_threat_model_as_data_on_its_own_class(name):
    cls = ATTACKS.get(name)
    declared = next(k for k in cls.__mro__ if "threat" in vars(k))
    assert declared is not Attack, f"{name} inherits the base class's threat model instead of declaring one"
    threat = ThreatModel.model_validate(cls.threat.model_dump())
    assert threat.tier in TIERS and len(threat.text) > 10
    attack = make(name)
    budget = attack.budget(1.0)
    # a budget is spent only where the threat model grants it, and fitted attacks report what they were given
    assert (budget.released == 0 or threat.released) and (budget.public == 0 or threat.public) and (budget.labelled == 0 or threat.labelled)
    if threat.released and attack.adapts_model is False and type(attack).fit is not Attack.fit:
        assert budget.released == len(context(3).released)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in UNCHANGED_IMAGES])
def test_harshest_strength_changes_the_images_more_than_the_mildest(name):
    attack = make(name)
    x = batch(3)
    mild = (attack(x, 0.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    harsh = (attack(x, 1.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    assert harsh > mild


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


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS.get(n).fit is not Attack.fit])
def test_informed_attacks_refuse_to_run_unfitted(name):
    with pytest.raises(RuntimeError, match="fit"):
        ATTACKS.create(name, spec_params(name))(batch(1), 0.5, torch.Generator())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_is_a_json_ready_dict_at_every_strength(name):
    import json

    attack = make(name)
    for strength in (0.0, 0.5, 1.0):
        json.dumps(attack.parameter(strength))
