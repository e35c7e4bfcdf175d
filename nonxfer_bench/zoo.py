"""Zoo models: timm classifiers that own their preprocessing (the pixel-space contract).

A :class:`ZooModel` takes images in [0, 1] at any size and channel count, resizes and normalizes
them itself, and exposes its first layer (``pretrained_cfg["first_conv"]`` unless overridden).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede the timm import, or hub retries take a minute

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
from torch import nn

from nonxfer_bench.errors import UserError
from nonxfer_bench.subspace import ConvGeometry
from nonxfer_bench.suite import ModelSpec


class ZooModel(nn.Module):
    """A classifier on [0, 1] images; ``prepare`` brings images to its input format, ``forward`` classifies."""

    def __init__(self, spec: ModelSpec, net: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.net = net.eval()
        config = resolve_model_data_config(net)
        pre = spec.preprocess
        self.input_size: tuple[int, int, int] = tuple(pre.input_size or config["input_size"])
        channels = self.input_size[0]
        mean = pre.mean or config["mean"]
        std = pre.std or config["std"]
        if len(mean) != channels or len(std) != channels:
            raise UserError(
                f"model {spec.name!r}: preprocess mean/std have {len(mean)}/{len(std)} values for {channels} input channels"
            )
        self.interpolation: str = pre.interpolation or config.get("interpolation", "bilinear")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.first_conv_name = _first_conv_name(net, spec)

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.net.get_submodule(self.first_conv_name)

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry.of(self.first_conv)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] brought to this model's channels and input size (still [0, 1] units)."""
        channels, height, width = self.input_size
        if images.shape[1] != channels:
            if images.shape[1] == 1:
                images = images.expand(-1, channels, -1, -1)
            elif channels == 1 and images.shape[1] == 3:
                images = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ValueError(f"cannot map {images.shape[1]} image channels to {channels} model channels")
        if images.shape[-2:] != (height, width):
            mode = self.interpolation if self.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            images = F.interpolate(images, size=(height, width), mode=mode, **kwargs)
        return images

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at the input size to the normalized tensor the network expects."""
        return (images - self.mean) / self.std

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.std + self.mean

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(self.prepare(images)))

    def forward_first_layer_patches(self, images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """The reference's flat-input path: the first layer computed from given (normalized) patches.

        ``patches`` is an ``F.unfold`` tensor (B x D x L) in normalized space; the first layer's output is
        replaced by W @ patches + b, and the rest of the network runs as usual. ``images`` only supplies
        the shape for the layers before the stem hook.
        """
        conv = self.first_conv
        weight = conv.weight.flatten(1)

        def replace_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            flat = weight @ patches
            if module.bias is not None:
                flat = flat + module.bias.view(1, -1, 1)
            return flat.view(output.shape)

        handle = conv.register_forward_hook(replace_output)
        try:
            return self.forward(images)
        finally:
            handle.remove()

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Top-1 predictions for [0, 1] images, in batches."""
        return torch.cat([self(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def _first_conv_name(net: nn.Module, spec: ModelSpec) -> str:
    name = spec.first_conv or net.pretrained_cfg.get("first_conv")
    if not name:
        raise UserError(f"model {spec.name!r}: timm names no first_conv for {spec.arch!r}; set 'first_conv' in the zoo")
    try:
        module = net.get_submodule(name)
    except AttributeError:
        raise UserError(f"model {spec.name!r}: first_conv {name!r} is not a module of {spec.arch!r}") from None
    if not isinstance(module, nn.Conv2d):
        inner = next(((n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)), None)
        if inner is None:
            raise UserError(f"model {spec.name!r}: first_conv {name!r} holds no Conv2d")
        name = f"{name}.{inner[0]}"
    return name


def create_network(spec: ModelSpec) -> nn.Module:
    """The bare timm network of a spec, with its weights loaded."""
    weights = spec.weights
    try:
        if weights.source == "hub":
            arch = f"{spec.arch}.{weights.tag}" if weights.tag else spec.arch
            return timm.create_model(arch, pretrained=True, **spec.kwargs)
        net = timm.create_model(spec.arch, pretrained=False, **spec.kwargs)
    except RuntimeError as error:  # timm's "Unknown model", hub failures
        hint = " (offline: set HF_HUB_OFFLINE=0 with hub access, or use weights.source: file)" if weights.source == "hub" else ""
        raise UserError(f"model {spec.name!r}: cannot create {spec.arch!r}: {error}{hint}") from None
    except TypeError as error:
        raise UserError(f"model {spec.name!r}: bad kwargs for {spec.arch!r}: {error}") from None
    if weights.source == "file":
        load_weights(net, Path(weights.path), spec.name)
    return net


def load_weights(net: nn.Module, path: Path, model_name: str) -> None:
    """Load a .safetensors or .pth state dict (pickles refused: ``weights_only=True``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as error:  # corrupt files surface as many different exception types
        raise UserError(f"model {model_name!r}: cannot read weights {path}: {type(error).__name__}: {error}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"model {model_name!r}: weights {path} do not fit the architecture: {first}") from None


def build_model(spec: ModelSpec) -> ZooModel:
    return ZooModel(spec, create_network(spec))
