"""A convolutional denoising autoencoder an attacker trains on clean data it plausibly has.

Trained on a held-out split (by default the training split; the benchmark evaluates on the test
split), with Gaussian input noise so that it learns to map noisy images back to clean ones. Trained
models are cached by the hash of their configuration, so every suite that names the same
configuration reuses one file, and a killed training never leaves a half-written one.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from nonxfer_bench.core.atomic import save_atomically
from nonxfer_bench.core.cache import cache_root
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.core.params import MAX_ITERATIONS, MAX_LR, Strict
from nonxfer_bench.datasets.base import load_dataset
from nonxfer_bench.schema.suite import MAX_BATCH, DatasetSpec, Seed


class AutoencoderConfig(Strict):
    """Everything that fixes a trained autoencoder (its cache key)."""

    dataset: DatasetSpec = DatasetSpec(name="fashion_mnist", params={"split": "train"})
    width: int = Field(32, ge=4, le=1024, description="channels of the first encoder layer")
    bottleneck: int = Field(8, ge=1, le=1024, description="latent channels at 1/4 resolution")
    epochs: int = Field(3, ge=1, le=MAX_ITERATIONS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    lr: float = Field(2e-3, gt=0, le=MAX_LR)
    train_noise: float = Field(0.1, ge=0, le=100, description="std of Gaussian noise added to inputs in training")
    seed: Seed = 0


class ConvAutoencoder(nn.Module):
    """Two stride-2 convolutions down to a (bottleneck x H/4 x W/4) latent and two transposed ones up."""

    def __init__(self, channels: int, width: int, bottleneck: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * width, bottleneck, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(bottleneck, 2 * width, 1), nn.ReLU(), nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.decoder(latent)[..., : size[0], : size[1]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        padded = F.pad(images, (0, -width % 4, 0, -height % 4), mode="replicate")
        return self.decode(self.encode(padded), (height, width))


@torch.enable_grad()  # may be called lazily from inside an attack's no-grad forward
def train_autoencoder(config: AutoencoderConfig) -> tuple[ConvAutoencoder, tuple[int, int, int]]:
    """Train on the config's dataset with noisy inputs; returns the model and the image shape it saw."""
    torch.manual_seed(config.seed)
    data = load_dataset(config.dataset.name, config.dataset.params).subset(config.dataset.limit, config.seed)
    images = data.as_float()
    model = ConvAutoencoder(images.shape[1], config.width, config.bottleneck)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps = config.epochs * ((len(images) + config.batch_size - 1) // config.batch_size)
    with tqdm(total=steps, desc="train autoencoder", unit="step") as bar:
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order), config.batch_size):
                clean = images[order[start : start + config.batch_size]]
                noisy = clean + config.train_noise * torch.randn(clean.shape, generator=generator)
                loss = F.mse_loss(model(noisy), clean)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
    return model.eval(), tuple(images.shape[1:])


def load_or_train(config: AutoencoderConfig) -> ConvAutoencoder:
    """The cached autoencoder for this config, trained first if the cache has none or an unreadable one. The entry is
    keyed by torch's CPU threads too: training's float sums depend on them, and a run's cells must depend only on
    the thread count they record."""
    key = stable_hash({**config.model_dump(mode="json"), "threads": torch.get_num_threads()})
    path = cache_root() / "autoencoders" / f"{key}.safetensors"
    if path.is_file():
        try:
            state = load_file(str(path))
            model = ConvAutoencoder(state["encoder.0.weight"].shape[1], config.width, config.bottleneck)
            model.load_state_dict(state)
            return model.eval()
        except Exception as error:  # noqa: BLE001 - a damaged cache entry is derived data: rebuild it
            print(
                f"nonxfer-bench: warning: cache entry {path} is unreadable ({type(error).__name__}); retraining it",
                file=sys.stderr,
            )
    model, _ = train_autoencoder(config)
    save_atomically(model.state_dict(), path)
    return model
