"""Reconstruction attacks: autoencoders and diffusion purification (DiffPure / SDEdit style).

The attacker pushes the released images through a generative model trained on clean data and hopes
the NE noise does not survive. Outputs are images in [0, 1]; inputs are clipped to [0, 1] first
(``range: clip``, what happens when an image is saved) or min-max rescaled per image (``range: minmax``,
the reference's convention for unclipped releases). Models load (or train) on first use, on the CPU, and
move to the device of the images they are given (once: they stay there); these attackers use no knowledge
of the authorized model, so they take nothing from the attack context. Their seeded draws are made by the
generator on its own device and moved to the images' (so a CPU generator gives the same noise on every
device, and CPU results are what they were).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext, to_unit_range
from nonxfer_bench.attacks.threat import Budget, ThreatModel, Tier
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import Strict
from nonxfer_bench.datasets.base import load_cached
from nonxfer_bench.generative.autoencoder import AutoencoderConfig, load_or_train
from nonxfer_bench.generative.diffusion import Purifier

DEFAULT_DDPM = "suites/zoo/weights/fashion-ddpm"


def _into_unit(images: torch.Tensor, mode: str) -> torch.Tensor:
    return to_unit_range(images, mode)[0]


def _on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` moved to ``device`` if it is elsewhere (in place: a model moves once and stays)."""
    if next(module.parameters()).device != device:
        module.to(device)
    return module


def _draw(shape: torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn by ``generator`` on its own device, in ``like``'s dtype and device."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


def _match(images: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Bring images to a model's channel count and spatial size."""
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return images


class AutoencoderParams(AutoencoderConfig):
    max_latent_noise: float = Field(1.0, ge=0, le=100, description="latent noise (x latent std) at strength 1")
    range: Literal["clip", "minmax"] = "clip"


@ATTACKS.register("autoencoder")
class AutoencoderReconstruction(Attack):
    """Encode and decode with a denoising conv autoencoder trained on the attacker's clean split; the
    strength adds Gaussian noise of ``strength x max_latent_noise`` latent standard deviations to the code
    (strength 0: a plain reconstruction). Trained on first use and cached by its config hash."""

    Params = AutoencoderParams
    threat = ThreatModel(
        tier=Tier.NONE,
        text="knows the data domain: holds clean images of it (a disjoint split) and trains a reconstructor",
        public=True,
    )
    cache_outputs = True

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.model: torch.nn.Module | None = None
        self.trained_on: int | None = (
            None  # clean images of the attacker's own split it trains on (its public budget), set by fit
        )

    def fit(self, context: AttackContext) -> None:
        dataset = self.params.dataset
        self.trained_on = len(load_cached(dataset.name, dataset.params, dataset.limit, self.params.seed))

    def budget(self, strength: float) -> Budget:
        return Budget(public=self.trained_on or 0)

    def _load(self, device: torch.device) -> torch.nn.Module:
        if self.model is None:
            self.model = load_or_train(
                AutoencoderConfig(**self.params.model_dump(include=set(AutoencoderConfig.model_fields)))
            )
        return _on(self.model, device)

    def parameter(self, strength: float) -> dict:
        return {"latent_noise": round(strength * self.params.max_latent_noise, 4)}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.trained_on is None:  # its cells would record no public budget
            raise RuntimeError(
                "autoencoder: call fit before attacking (it records the clean images the autoencoder trains on)"
            )
        model = self._load(images.device)
        channels = model.encoder[0].in_channels
        x = _match(_into_unit(images, self.params.range), channels, images.shape[-2:])
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, -width % 4, 0, -height % 4), mode="replicate")
        latent = model.encode(padded)
        noise = _draw(latent.shape, generator, latent)
        latent = latent + strength * self.params.max_latent_noise * latent.std() * noise
        out = model.decode(latent, (height, width))
        return _match(out, images.shape[1], images.shape[-2:]).to(images.dtype)


class DiffusersVaeParams(Strict):
    source: str = Field(description="local save_pretrained folder or hub id of an AutoencoderKL/AutoencoderTiny")
    kind: Literal["kl", "tiny"] = "kl"
    subfolder: str | None = Field(None, description="e.g. 'vae' inside a Stable Diffusion repository")
    max_latent_noise: float = Field(1.0, ge=0, le=100, description="latent noise (x latent std) at strength 1")
    range: Literal["clip", "minmax"] = "clip"


def _load_diffusers(kind: type, source: str, subfolder: str | None, what: str, **kwargs):
    if not Path(source).is_dir() and source.startswith((".", "/")):
        raise UserError(
            f"{what} {source!r} not found: give a folder written by save_pretrained or a hub id (HF_HUB_OFFLINE=0)"
        )
    try:
        loaded = kind.from_pretrained(source, **kwargs, **({"subfolder": subfolder} if subfolder else {}))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load {what} {source!r}: {str(error).splitlines()[0]}") from None
    return loaded.eval() if isinstance(loaded, torch.nn.Module) else loaded


@ATTACKS.register("diffusers_vae")
class DiffusersVae(Attack):
    """Reconstruction through a pretrained diffusers ``AutoencoderKL`` (latent mode) or ``AutoencoderTiny``,
    with latent noise of ``strength x max_latent_noise`` latent standard deviations; images are brought
    to RGB and a multiple of 8 pixels and back."""

    Params = DiffusersVaeParams
    threat = ThreatModel(tier=Tier.NONE, text="holds a pretrained image autoencoder (e.g. Stable Diffusion's VAE)")
    cache_outputs = True

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.vae = None

    def _load(self, device: torch.device):
        if self.vae is None:
            from diffusers import (
                AutoencoderKL,
                AutoencoderTiny,
            )  # heavy (~1 s): diffusers only when this attack loads its model

            kind = AutoencoderKL if self.params.kind == "kl" else AutoencoderTiny
            self.vae = _load_diffusers(kind, self.params.source, self.params.subfolder, "autoencoder")
        return _on(self.vae, device)

    def parameter(self, strength: float) -> dict:
        return {"latent_noise": round(strength * self.params.max_latent_noise, 4)}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        vae = self._load(images.device)
        height, width = images.shape[-2:]
        size = (max(8, (height + 7) // 8 * 8), max(8, (width + 7) // 8 * 8))
        x = _match(_into_unit(images, self.params.range), vae.config.in_channels, size) * 2 - 1
        encoded = vae.encode(x)
        latent = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        noise = _draw(latent.shape, generator, latent)
        latent = latent + strength * self.params.max_latent_noise * latent.std() * noise
        out = ((vae.decode(latent).sample + 1) / 2).clamp(0, 1)
        return _match(out, images.shape[1], (height, width)).to(images.dtype)


class DiffusionParams(Strict):
    source: str = Field(DEFAULT_DDPM, description="save_pretrained folder (unet/, scheduler/) or hub id")
    scheduler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = Field(20, ge=1, le=10_000, description="reverse steps from t* to 0 (1: one-shot denoising)")
    max_t: float = Field(1.0, gt=0, le=1, description="t*/T at strength 1")
    draws: int = Field(
        1, ge=1, le=1000, description="K stochastic purifications per image (mean, worst, spread reported)"
    )
    range: Literal["clip", "minmax"] = "clip"


@ATTACKS.register("diffusion")
class DiffusionPurification(Attack):
    """DiffPure/SDEdit purification: diffuse to exactly t* = strength x ``max_t`` x T, then run ``steps``
    reverse steps (DDIM or DDPM) from t* to 0 with a diffusers ``UNet2DModel``. Strength 0 returns the
    input. ``draws`` > 1 evaluates K seeded purifications."""

    Params = DiffusionParams
    threat = ThreatModel(
        tier=Tier.NONE, text="knows the data domain: holds a diffusion model trained on clean images of it"
    )
    cache_outputs = True

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.purifier = None

    def _load(self):
        if self.purifier is None:
            self.purifier = Purifier.load(self.params.source, self.params.scheduler, self.params.steps)
        return self.purifier

    def parameter(self, strength: float) -> dict:
        return {"t_over_T": round(strength * self.params.max_t, 4)}

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if strength * self.params.max_t == 0:
            return images.clone()
        unit = _into_unit(images, self.params.range)
        return self._load().to(images.device).purify(unit, strength * self.params.max_t, generator).to(images.dtype)


class Img2ImgParams(Strict):
    source: str = Field(description="local save_pretrained folder or hub id of a Stable-Diffusion-style pipeline")
    prompt: str = Field("", description="text prompt for every image (empty: unconditional regeneration)")
    steps: int = Field(
        50,
        ge=1,
        le=10_000,
        description="scheduler steps for the full trajectory; img2img runs strength x steps of them",
    )
    guidance_scale: float = Field(
        1.0, ge=0, le=100, description="classifier-free guidance (<= 1: off, one UNet pass per step)"
    )
    max_strength: float = Field(
        0.5, gt=0, le=1, description="the pipeline's img2img strength (t*/T) at attack strength 1"
    )
    size: int = Field(
        512, ge=8, le=4096, description="square resolution the pipeline runs at (Stable Diffusion 1.x: 512)"
    )
    draws: int = Field(
        1, ge=1, le=1000, description="K stochastic regenerations per image (mean, worst, spread reported)"
    )
    range: Literal["clip", "minmax"] = "clip"


@ATTACKS.register("img2img")
class Img2ImgRegeneration(Attack):
    """Regeneration through a diffusers image-to-image pipeline (``AutoPipelineForImage2Image``: Stable
    Diffusion 1.x/2.x, SDXL, ...): images are resized to ``size``, brought to RGB, noised to
    t*/T = strength x ``max_strength`` and denoised with the pipeline's scheduler, then resized back.
    Strength 0 returns the input; at least one denoising step runs at any other strength. The safety
    checker is not loaded (it blanks images, which would count as an attack effect)."""

    Params = Img2ImgParams
    threat = ThreatModel(
        tier=Tier.NONE,
        text="holds a pretrained text-to-image diffusion model (e.g. Stable Diffusion) and regenerates the images",
    )
    cache_outputs = True

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.pipeline = None

    def _load(self, device: torch.device):
        if self.pipeline is None:
            from diffusers import (
                AutoPipelineForImage2Image,
            )  # heavy (~1 s): diffusers only when this attack loads its model

            self.pipeline = _load_diffusers(
                AutoPipelineForImage2Image, self.params.source, None, "img2img pipeline", safety_checker=None
            )
            self.pipeline.set_progress_bar_config(disable=True)
        return self.pipeline.to(device)

    def parameter(self, strength: float) -> dict:
        return {"t_over_T": round(strength * self.params.max_strength, 4)}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        t_star = strength * self.params.max_strength
        if t_star == 0:
            return images.clone()
        pipeline = self._load(images.device)
        size = (self.params.size, self.params.size)
        x = _match(_into_unit(images, self.params.range), 3, size)
        out = pipeline(
            prompt=[self.params.prompt] * len(x),
            image=x,
            strength=t_star,
            num_inference_steps=max(self.params.steps, math.ceil(1 / t_star)),
            guidance_scale=self.params.guidance_scale,
            generator=generator,
            output_type="pt",
        ).images
        return _match(out.clamp(0, 1), images.shape[1], images.shape[-2:]).to(images.dtype)
