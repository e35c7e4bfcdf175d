"""Diffusion purification (DiffPure / SDEdit style) and training a small DDPM for a dataset.

A purifier is a diffusers ``UNet2DModel`` plus its noise schedule (a DDPM/DDIM scheduler config),
stored in the ``save_pretrained`` layout of a ``DDPMPipeline`` (``<dir>/unet``, ``<dir>/scheduler``) in a
local folder or a hub repository. Purification diffuses the released image to exactly timestep t* and
runs the reverse process (DDIM or DDPM updates, written out here so that any t* and step count work)
back to 0; strength = t*/T.

`nonxfer-bench train diffusion CONFIG` trains such a model reproducibly and writes it, with a model
card, a sample grid and a purification-quality figure, into the config's output folder. It replaces that
folder only if it is new, empty, or one it wrote before (its ``WRITTEN_BY.json`` lists every file in it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm import tqdm

from nonxfer_bench.core import faults
from nonxfer_bench.core.atomic import atomic_write, staged_folder, write_marker, written_by
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import MAX_TRAIN_STEPS, Strict
from nonxfer_bench.datasets.base import load_dataset
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.schema.files import read_yaml, resolve_path, validate
from nonxfer_bench.schema.suite import DatasetSpec
from nonxfer_bench.storage.samples import save_sample_grid

COMMAND = "nonxfer-bench train diffusion"  # named in the ownership marker of the folders it writes


class Purifier:
    """A loaded UNet + scheduler that purifies [0, 1] images at a given t*/T, on the UNet's device (:meth:`to`)."""

    def __init__(
        self, unet: torch.nn.Module, scheduler, steps: int | None = None, kind: Literal["ddim", "ddpm"] = "ddim"
    ) -> None:
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.kind = kind
        self.total = scheduler.config.num_train_timesteps
        self.steps = steps or self.total
        config = unet.config
        self.channels = config.in_channels
        size = config.sample_size
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> "Purifier":
        """Moves the UNet to ``device`` if it is elsewhere (purification then computes there); returns self."""
        if self.device != torch.device(device):
            self.unet.to(device)
        return self

    @classmethod
    def load(cls, source: str, scheduler: Literal["ddpm", "ddim"] = "ddim", steps: int | None = None) -> "Purifier":
        """Load from a local ``save_pretrained`` folder (``unet/``, ``scheduler/``) or a hub repository id."""
        from diffusers import (
            DDIMScheduler,
            DDPMScheduler,
            UNet2DModel,
        )  # heavy (~1 s): diffusers only when a diffusion model is loaded, built or trained

        path = Path(source)
        if not path.is_dir() and (source.startswith((".", "/")) or path.suffix):
            raise UserError(
                f"diffusion model {source!r} not found: give a folder written by save_pretrained (with unet/ and "
                "scheduler/), or train one with `nonxfer-bench train diffusion suites/zoo/fashion-ddpm.yaml`"
            )
        try:
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            kind = DDIMScheduler if scheduler == "ddim" else DDPMScheduler
            sched = kind.from_pretrained(source, subfolder="scheduler")
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot load diffusion model {source!r} (a save_pretrained folder with unet/ and scheduler/, or a "
                f"hub id with HF_HUB_OFFLINE=0): {str(error).splitlines()[0]}"
            ) from None
        return cls(unet, sched, steps, scheduler)

    def reverse_timesteps(self, t_star: int) -> list[int]:
        """``steps`` evenly spaced timesteps from t* - 1 down to 0 (fewer if t* is smaller)."""
        count = max(1, min(self.steps, t_star))
        return sorted({round(v) for v in torch.linspace(t_star - 1, 0, count).tolist()} | {t_star - 1}, reverse=True)

    @torch.no_grad()
    def purify(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        """Diffuse [0, 1] images to exactly t* = round(strength x T) and denoise back; t* = 0 returns the input.

        The reverse process visits ``steps`` timesteps from t* - 1 to 0: DDIM (eta = 0, deterministic
        after the forward noise) or DDPM ancestral sampling (the posterior between consecutive visited
        timesteps, fresh noise from ``generator`` at each step). One step is one-shot denoising. It runs on
        the UNet's device (images elsewhere are moved there and the result back); the noise is drawn by
        ``generator`` on its own device and moved there, so a CPU generator draws the same noise everywhere.
        """
        t_star = round(strength * self.total)
        if t_star == 0:
            return images.clone()
        height, width = images.shape[-2:]
        channels = images.shape[1]
        device = self.device
        x = images.to(device).clamp(0, 1)
        if channels != self.channels:
            x = x.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
        if (height, width) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        x = x * 2 - 1
        alphas = self.scheduler.alphas_cumprod.double()
        timesteps = self.reverse_timesteps(t_star)
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=generator.device).to(device)
        sample = alphas[timesteps[0]].sqrt() * x.double() + (1 - alphas[timesteps[0]]).sqrt() * noise
        for index, t in enumerate(timesteps):  # alphas stay on the CPU: 0-dim scalars, no device round trip
            previous = (
                alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
            )
            current = alphas[t]
            epsilon = self.unet(sample.float(), t).sample.double()
            x0 = ((sample - (1 - current).sqrt() * epsilon) / current.sqrt()).clamp(-1, 1)
            if self.kind == "ddim":
                epsilon = (sample - current.sqrt() * x0) / (1 - current).sqrt()
                sample = previous.sqrt() * x0 + (1 - previous).sqrt() * epsilon
            else:
                beta = 1 - current / previous
                mean = (previous.sqrt() * beta * x0 + (current / previous).sqrt() * (1 - previous) * sample) / (
                    1 - current
                )
                variance = beta * (1 - previous) / (1 - current)
                sample = mean + variance.sqrt() * torch.randn(
                    sample.shape, generator=generator, dtype=torch.float64, device=generator.device
                ).to(device)
        out = ((sample.float() + 1) / 2).clamp(0, 1)
        if (height, width) != self.size:
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        if channels != self.channels:
            out = out.mean(1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
        return out.to(images.device, images.dtype)


class DiffusionTrainSpec(Strict):
    """A small DDPM for one dataset: data, UNet size, schedule and optimisation, all that fixes the result.

    Every number is bounded, so a typo cannot ask for a 10^9-pixel UNet before anything is checked."""

    dataset: DatasetSpec
    output: Path = Field(description="folder for the save_pretrained layout, model card and figures")
    image_size: int = Field(32, ge=8, le=1024)
    block_out_channels: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field(
        (32, 64, 64), min_length=1, max_length=8
    )
    layers_per_block: int = Field(1, ge=1, le=16)
    attention: bool = Field(True, description="self-attention in the lowest-resolution block")
    num_train_timesteps: int = Field(1000, ge=10, le=100_000)
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "linear"
    train_steps: int = Field(4000, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(2e-4, gt=0, le=1)
    seed: int = Field(0, ge=0, lt=2**63)
    ema_decay: float = Field(0.999, ge=0, lt=1)


def load_diffusion_spec(path: Path, train_steps: int | None = None) -> DiffusionTrainSpec:
    """Read and validate a DDPM config; ``train_steps`` (the CLI's --steps) overrides the file's and is
    validated with it, before anything is written."""
    data = read_yaml(path)
    if train_steps is not None and isinstance(data, dict):
        data = {**data, "train_steps": train_steps}
    spec = validate(DiffusionTrainSpec, data, path)
    spec.output = resolve_path(path.parent, spec.output)
    return spec


def train_and_publish(
    spec: DiffusionTrainSpec, device: str = "cpu", max_seconds: float | None = None
) -> tuple[Path, dict]:
    """Train, evaluate and describe a DDPM in a staging folder beside ``spec.output``, which replaces the
    output folder only once every file (unet, scheduler, cards, quality, samples, ownership marker) is written:
    a failure or a kill at any point leaves the previous model whole. An output that is not new, empty or
    written by this command is refused before training. Returns the model card's path and the quality."""
    with staged_folder(spec.output, written_by(COMMAND)) as staging:
        staged = spec.model_copy(update={"output": staging})
        card = train_diffusion(staged, device=device, max_seconds=max_seconds)
        quality = evaluate_purifier(staged, device=device)
        write_model_card(staged, card, quality)
        write_marker(staging, COMMAND)
        faults.point("diffusion_staged")
    return spec.output / "MODEL_CARD.md", quality


def build_unet(spec: DiffusionTrainSpec, channels: int) -> torch.nn.Module:
    from diffusers import UNet2DModel  # heavy (~1 s): diffusers only when a diffusion model is loaded, built or trained

    levels = len(spec.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if spec.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=spec.image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=min(32, spec.block_out_channels[0]),
    )


def train_diffusion(
    spec: DiffusionTrainSpec, device: str = "cpu", log_every: int = 200, max_seconds: float | None = None
) -> dict:
    """Train a DDPM (epsilon prediction, EMA weights saved) on the spec's dataset; returns the card.

    ``max_seconds`` stops training early (the card records the steps actually taken).
    """
    from diffusers import (
        DDPMScheduler,
    )  # heavy (~1 s): diffusers only when a diffusion model is loaded, built or trained

    torch.manual_seed(spec.seed)
    data = load_dataset(spec.dataset.name, spec.dataset.params).subset(spec.dataset.limit, spec.seed)
    images = F.interpolate(data.as_float(), size=spec.image_size, mode="bilinear", align_corners=False, antialias=True)
    images = (images * 2 - 1).to(device)
    unet = build_unet(spec, images.shape[1]).to(device)
    ema = build_unet(spec, images.shape[1]).to(device)
    ema.load_state_dict(unet.state_dict())
    scheduler = DDPMScheduler(num_train_timesteps=spec.num_train_timesteps, beta_schedule=spec.beta_schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=spec.lr, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    losses = []
    started = time.time()
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    for step in tqdm(range(spec.train_steps), desc="train diffusion", unit="step"):
        index = torch.randint(0, len(images), (spec.batch_size,), generator=generator, device=device)
        clean = images[index]
        if torch.rand((), generator=generator, device=device) < 0.5:
            clean = clean.flip(-1)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        t = torch.randint(0, spec.num_train_timesteps, (len(clean),), generator=generator, device=device)
        with autocast:
            predicted = unet(scheduler.add_noise(clean, noise, t), t).sample
        loss = F.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for target, source in zip(ema.parameters(), unet.parameters()):
                target.lerp_(source, 1 - spec.ema_decay)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            tqdm.write(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.4f}")
        if max_seconds is not None and time.time() - started > max_seconds:
            break
    seconds = time.time() - started
    spec.output.mkdir(parents=True, exist_ok=True)
    ema.to("cpu").save_pretrained(spec.output / "unet")
    scheduler.save_pretrained(spec.output / "scheduler")
    card = {
        "dataset": spec.dataset.model_dump(mode="json"),
        "train_images": len(images),
        "config": spec.model_dump(mode="json", exclude={"output"}),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "train_seconds": round(seconds, 1),
        "steps_taken": len(losses),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "final_loss": round(sum(losses[-log_every:]) / min(log_every, len(losses)), 5),
        "torch": torch.__version__,
    }
    atomic_write(spec.output / "train_card.json", json.dumps(card, indent=2) + "\n")
    return card


def evaluate_purifier(
    spec: DiffusionTrainSpec,
    device: str = "cpu",
    count: int = 256,
    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5),
) -> dict:
    """Quality figure for the model card: PSNR of purify(clean) vs clean on held-out images, per t*/T.

    Uses the dataset's ``test`` split (never trained on) and DDIM with up to 50 steps from t* to 0.
    Also writes ``samples.png``: clean images, their purifications at each t*, and unconditional samples.
    """
    purifier = Purifier.load(str(spec.output), scheduler="ddim", steps=50).to(device)
    held_out = load_dataset(spec.dataset.name, {**spec.dataset.params, "split": "test"}).subset(count, spec.seed)
    clean = held_out.as_float()
    rows = {"clean": clean[:10]}
    quality = {}
    for strength in strengths:
        purified = purifier.purify(clean, strength, torch.Generator().manual_seed(spec.seed))
        quality[f"{strength:g}"] = round(float(psnr_per_image(clean, purified).mean()), 2)
        rows[f"t*/T={strength:g}"] = purified[:10]
    rows["sampled"] = purifier.purify(torch.zeros_like(clean[:10]), 1.0, torch.Generator().manual_seed(spec.seed))
    save_sample_grid(rows, spec.output / "samples.png", 10)
    atomic_write(
        spec.output / "quality.json",
        json.dumps({"psnr_purified_vs_clean_db": quality, "images": count}, indent=2) + "\n",
    )
    return quality


def write_model_card(spec: DiffusionTrainSpec, card: dict, quality: dict) -> Path:
    lines = [
        f"# DDPM for {spec.dataset.name}",
        "",
        "Trained by `nonxfer-bench train diffusion` (the config that made it is in `train_card.json`).",
        "Used by the `diffusion` attack for DiffPure/SDEdit-style purification.",
        "",
        f"- data: {spec.dataset.name} {spec.dataset.params or ''} ({card['train_images']} images, resized to "
        f"{spec.image_size}x{spec.image_size}, random horizontal flips)",
        f"- model: diffusers UNet2DModel, {card['parameters']:,} parameters, channels "
        f"{list(spec.block_out_channels)}, {spec.layers_per_block} layer(s) per block, attention "
        f"{'on' if spec.attention else 'off'}; EMA {spec.ema_decay}",
        f"- schedule: DDPM, T = {spec.num_train_timesteps}, {spec.beta_schedule} betas, epsilon prediction",
        f"- training: {card['steps_taken']} steps (of {spec.train_steps} configured), batch {spec.batch_size}, AdamW "
        f"lr {spec.lr}, seed {spec.seed}, bf16 autocast on GPU",
        f"- time: {card['train_seconds']} s on {card['device']} (torch {card['torch']}); final loss "
        f"{card['final_loss']}",
        "",
        "## Quality: purification of held-out clean test images (DDIM, up to 50 steps from t*)",
        "",
        "| t*/T | PSNR(purify(clean), clean) dB |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in quality.items()],
        "",
        "![samples](samples.png) rows: clean, purified at each t*/T, unconditional samples.",
        "",
    ]
    path = spec.output / "MODEL_CARD.md"
    atomic_write(path, "\n".join(lines))
    return path
