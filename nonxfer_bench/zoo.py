"""Zoo models: timm classifiers that own their preprocessing (the pixel-space contract).

A :class:`ZooModel` takes images in [0, 1] at any size and channel count, resizes and normalizes
them itself, and exposes its first layer (``pretrained_cfg["first_conv"]`` unless overridden).
Its input pipeline (input size, interpolation, crop_pct, mean, std) is timm's
``resolve_model_data_config`` for the architecture and pretrained tag, field by field overridden by the
zoo entry's ``preprocess`` (:func:`resolve_preprocessing`).

Weights: ``none`` (random init, seeded by the entry's ``seed``), ``file``, ``hub`` or ``package`` (a file
inside an installed Python package, loaded as a state dict or *by position*: the file's tensors zipped
in order onto the architecture's, ``num_batches_tracked`` dropped on both sides, shapes checked pairwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede the timm import, or hub retries take a minute

from pathlib import Path

import huggingface_hub
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants
from safetensors.torch import load_file
from timm.data import resolve_model_data_config
from torch import nn

from nonxfer_bench.core.device import Precision, autocast
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.subspace import unfold_columns
from nonxfer_bench.schema.suite import ModelSpec, resolve_package_file

DEFAULT_CROP_PCT = 0.875  # timm's default when a config names none
DECODE_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def resolve_preprocessing(spec: ModelSpec, net: nn.Module | None = None) -> dict:
    """A zoo model's input pipeline: timm's resolved data config for its architecture (and pretrained
    tag), each field overridden by the zoo entry's ``preprocess``. Without ``net`` the architecture is
    built on the meta device (no weights, no memory) just to read its config."""
    if net is None:
        with torch.device("meta"):
            net = _timm_network(spec, pretrained=False)
    config = resolve_model_data_config(net)
    pre = spec.preprocess
    return {
        "input_size": tuple(pre.input_size or config["input_size"]),
        "interpolation": pre.interpolation or config.get("interpolation") or "bilinear",
        "crop_pct": pre.crop_pct or config.get("crop_pct") or DEFAULT_CROP_PCT,
        "crop_mode": config.get("crop_mode") or "center",
        "mean": tuple(float(v) for v in (pre.mean or config["mean"])),
        "std": tuple(float(v) for v in (pre.std or config["std"])),
    }


def dataset_preprocessing(preprocessing: dict) -> dict:
    """The decode settings (size, crop_pct, interpolation) that make a dataset's images this model's input."""
    interpolation = preprocessing["interpolation"]
    return {
        "size": int(preprocessing["input_size"][-1]),
        "crop_pct": float(preprocessing["crop_pct"]),
        "interpolation": interpolation if interpolation in DECODE_INTERPOLATIONS else "bicubic",
    }


class ZooModel(nn.Module):
    """A classifier on [0, 1] images; ``prepare`` brings images to its input format, ``forward`` classifies."""

    def __init__(self, spec: ModelSpec, net: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.net = net.eval()
        self.preprocessing = resolve_preprocessing(spec, net)
        self.input_size: tuple[int, int, int] = self.preprocessing["input_size"]
        channels = self.input_size[0]
        mean, std = self.preprocessing["mean"], self.preprocessing["std"]
        if len(mean) != channels or len(std) != channels:
            raise UserError(
                f"model {spec.name!r}: preprocess mean/std have {len(mean)}/{len(std)} values for {channels} input "
                "channels"
            )
        self.interpolation: str = self.preprocessing["interpolation"]
        self.crop_pct: float = self.preprocessing["crop_pct"]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.first_conv_name = _first_conv_name(net, spec)
        self.eval()  # a classifier under test; training code switches to train() itself

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.net.get_submodule(self.first_conv_name)

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry.of(self.first_conv)

    def pixel_scale(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """1/std_c per input channel (C,): what the first layer multiplies [0, 1] pixel changes by (the mean
        cancels in differences). The operator encoder scales its input with it."""
        return 1.0 / self.std.flatten().to(dtype)

    def pixel_weight(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """W_eff = W diag(1/std_c): the first layer's patch matrix (m x C kh kw, ``F.unfold`` column order)
        seen from [0, 1] pixels, the common space where models that normalize differently compare.

        Computed in ``dtype`` (float64 by default; the ``patch`` encoder keeps the float32 products its
        published releases were drawn with). Grouped layers have no single patch matrix and are refused.
        """
        conv = self.first_conv
        if conv.groups != 1:
            raise ValueError(f"grouped first layer (groups={conv.groups}) has no single patch matrix")
        return conv.weight.detach().to(dtype).flatten(1) * unfold_columns(self.pixel_scale(dtype), conv.kernel_size)

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

    # --- device and precision (issue 14): kept in one block ---
    precision: Precision = "fp32"
    channels_last: bool = False

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are (its buffers follow ``.to``)."""
        return self.mean.device

    def to_device(self, device: torch.device, precision: Precision = "fp32") -> "ZooModel":
        """Resident on ``device`` in eval mode, networks under autocast for bf16/fp16. channels_last on CUDA
        only: on the CPU it would change fp32 results in the last bits, and committed results stay as they are."""
        self.to(device)
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.precision = precision
        return self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of [0, 1] images, moved to the model's device if they are elsewhere."""
        normalized = self.normalize(self.prepare(images.to(self.device, non_blocking=True)))
        if self.channels_last:
            normalized = normalized.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            logits = self.net(normalized)
        return logits.float()

    def forward_first_layer(self, images: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """The reference's flat-input path: the network with its first layer's output replaced by ``flat`` + b,
        where ``flat`` (B x O x L) is W @ patches for every window of the stem's output
        (:meth:`nonxfer_bench.linalg.flat_input.FlatInput.first_layer`; for a TF-"same" stem the windows of its
        own zero padding included); the rest of the network runs as usual. ``images`` only supplies the shape
        for the layers before the stem hook.
        """

        def replace_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if flat.shape[-1] != output.shape[-2] * output.shape[-1]:
                raise ValueError(
                    f"{flat.shape[-1]} windows do not fit the first layer's {tuple(output.shape[-2:])} outputs"
                )
            bias = module.bias.view(1, -1, 1) if module.bias is not None else 0
            return (flat + bias).view(output.shape)

        handle = self.first_conv.register_forward_hook(replace_output)
        try:
            return self.forward(images)
        finally:
            handle.remove()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Top-1 predictions (on the CPU) for [0, 1] images, in batches."""
        return torch.cat([self(images[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(images), batch_size)])


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


def _timm_network(spec: ModelSpec, pretrained: bool) -> nn.Module:
    """``timm.create_model`` for a spec (the hub tag selects the pretrained config), errors as UserError."""
    weights = spec.weights
    arch = f"{spec.arch}.{weights.tag}" if weights.source == "hub" and weights.tag else spec.arch
    try:
        return timm.create_model(arch, pretrained=pretrained, **spec.kwargs)
    except RuntimeError as error:  # timm's "Unknown model", hub failures
        hint = (
            " (offline: set HF_HUB_OFFLINE=0 with hub access, or use weights.source: file)"
            if weights.source == "hub"
            else ""
        )
        raise UserError(f"model {spec.name!r}: cannot create {arch!r}: {error}{hint}") from None
    except TypeError as error:
        raise UserError(f"model {spec.name!r}: bad kwargs for {spec.arch!r}: {error}") from None


def create_network(spec: ModelSpec) -> nn.Module:
    """The bare timm network of a spec, with its weights loaded."""
    weights = spec.weights
    if weights.source == "hub":
        return _timm_network(spec, pretrained=True)
    if weights.source == "none":
        torch.manual_seed(spec.seed)  # a random init is a function of the entry's seed (as `zoo train` seeds it)
    net = _timm_network(spec, pretrained=False)
    if weights.source == "file":
        load_weights(net, Path(weights.path), spec.name)
    elif weights.source == "package":
        path = resolve_package_file(weights, spec.name)
        load_weights(net, path, spec.name, by_position=weights.loader == "by_position")
    return net


def load_by_position(net: nn.Module, state: dict, source: Path, model_name: str) -> None:
    """Zip a state dict's tensors in order onto the network's (``num_batches_tracked`` dropped on both
    sides), for checkpoints whose key names differ from timm's but whose layout is the same."""
    ours = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise UserError(
            f"model {model_name!r}: weights {source} hold {len(theirs)} tensors, the architecture {len(ours)}; they "
            "cannot be loaded by position"
        )
    mapped = {}
    for i, ((their_key, value), (our_key, target)) in enumerate(zip(theirs, ours.items())):
        if not isinstance(value, torch.Tensor) or value.shape != target.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(
                f"model {model_name!r}: weights {source} do not fit by position: tensor {i} {their_key} {shape} vs "
                f"{our_key} {tuple(target.shape)}"
            )
        mapped[our_key] = value.to(target.dtype)
    net.load_state_dict(mapped, strict=False)


def load_weights(net: nn.Module, path: Path, model_name: str, by_position: bool = False) -> None:
    """Load a .safetensors or .pth state dict (pickles refused: ``weights_only=True``)."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as error:  # corrupt files surface as many different exception types
        text = str(error)
        if "WeightsUnpickler error:" in text:  # a pickle that holds more than tensors: possibly code
            refused = text.split("WeightsUnpickler error:")[1].strip().splitlines()[0].split(" Please")[0]
            detail = (
                f"refused by torch.load(weights_only=True): {refused} A checkpoint must hold tensors only; re-save it "
                "as .safetensors"
            )
        else:
            detail = f"{type(error).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
        raise UserError(f"model {model_name!r}: cannot read weights {path}: {detail}") from None
    if not isinstance(state, dict):
        raise UserError(
            f"model {model_name!r}: weights {path} hold a {type(state).__name__}, not a state dict of tensors"
        )
    if by_position:
        load_by_position(net, state, path, model_name)
        return
    problem = state_dict_mismatch(net.state_dict(), state)
    if problem:
        raise UserError(
            f"model {model_name!r}: weights {path} do not fit the architecture {net.__class__.__name__}: {problem}"
        )
    net.load_state_dict(state)


def state_dict_mismatch(ours: dict, theirs: dict) -> str | None:
    """None if a checkpoint's tensors fit a network's state dict exactly, else a one-line summary with examples."""
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    shapes = [
        f"{k} {tuple(getattr(theirs[k], 'shape', ())) or type(theirs[k]).__name__} vs {tuple(ours[k].shape)}"
        for k in ours
        if k in theirs and (not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != ours[k].shape)
    ]
    parts = [
        f"{len(found)} {what} (first: {found[0]})"
        for what, found in (
            ("missing tensors", missing),
            ("unexpected tensors", unexpected),
            ("shape mismatches, checkpoint vs model", shapes),
        )
        if found
    ]
    return "; ".join(parts) or None


def build_model(spec: ModelSpec) -> ZooModel:
    return ZooModel(spec, create_network(spec))


def model_structure(spec: ModelSpec) -> ZooModel:
    """A zoo model's layers and input pipeline without weights (on the meta device: no memory), for checks at load."""
    with torch.device("meta"):
        return ZooModel(spec, _timm_network(spec, pretrained=False))


def hub_weights_problem(specs: list[ModelSpec]) -> str | None:
    """None if every hub model's weights can be had now (local cache, or a reachable hub when online);
    else one line naming the missing weights and what to provide. Checked before any work starts."""
    missing, unreachable = [], None
    for spec in specs:
        with torch.device("meta"):
            cfg = _timm_network(spec, pretrained=False).pretrained_cfg
        repo, url = cfg.get("hf_hub_id"), cfg.get("url")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        if repo and any(isinstance(huggingface_hub.try_to_load_from_cache(repo, name), str) for name in names):
            continue
        if url and (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
            continue
        if not repo and not url:
            missing.append(
                f"{spec.name} (timm has no pretrained weights for {cfg.get('architecture')}.{cfg.get('tag')})"
            )
            continue
        if not constants.HF_HUB_OFFLINE and repo and unreachable is None:
            try:
                huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, names[0]), timeout=10)
                continue
            except Exception as error:  # no network, DNS, HTTP errors
                unreachable = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        missing.append(f"{spec.name} ({repo or url})")
    if not missing:
        return None
    why = (
        f"the hub is not reachable ({unreachable})"
        if unreachable
        else "HF_HUB_OFFLINE=1 and they are not in the local Hugging Face cache"
        if constants.HF_HUB_OFFLINE
        else "they are not available"
    )
    return (
        f"hub weights missing for {len(missing)} model(s): {', '.join(missing)}; {why}. Provide them: run with "
        "HF_HUB_OFFLINE=0 and hub access (or HF_HOME pointing at a cache that holds them), or give each model "
        "weights: {source: file, path: ...}"
    )
