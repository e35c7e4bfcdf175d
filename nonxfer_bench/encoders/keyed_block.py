"""The ``keyed_block`` encoder: the keyed block-wise transformation for ViTs, the field's second scheme beside NEs.

AprilPyone & Kiya, "Image and Model Transformation with Secret Key for Vision Transformer" (arXiv 2207.05366);
block-wise encryption for access control (arXiv 2308.07612). Blocks are the authorized model's patches (its first
layer's kernel). With a secret key, every image of a release gets the same three transforms:

- pixel shuffling: one permutation Pi of the d = C*P*P values inside every block (``F.unfold`` order);
- negative-positive: x -> 1 - x at a keyed subset of the d positions ([0, 1] pixels, so the release stays in [0, 1]);
- block scrambling: one permutation of the block positions.

The authorized model is transformed, not retrained (:class:`KeyedModel`): the first layer is linear on the
normalized block z = (x - mean) / std, so shuffling and flips fold into its weights and bias (for encrypted position s
holding plain position t = Pi(s), column s becomes W_t * c_s / std_t with c_s = -std_s if s is flipped else std_s,
and the bias gains W_t (a_s - mean_t) / std_t with a_s = 1 - mean_s if flipped else mean_s); scrambling is undone by
permuting a ViT's position embeddings the same way (its blocks are permutation-equivariant apart from them; prefix
tokens such as the class token keep theirs). On encrypted images it gives the plain model's logits on the plain
images to float rounding. Shuffling and flips are exact for any non-overlapping stem (kernel == stride, no padding:
ViTs, ConvNeXt's patchify stem); scrambling needs position embeddings (a timm ``VisionTransformer``). Overlapping CNN
stems mix neighbouring blocks, so nothing folds: :meth:`KeyedBlockEncoder.check_model` refuses them at suite load.

The key is a function of the generator's seed (``initial_seed``), never of its draws: one release generator gives one
key for every batch, and the attacker's generators (keyed apart) give other keys. A model that already carries a key
(:class:`KeyedModel`, the authorized model as deployed) encodes with that key: the owner's labelled release of other
images uses the release's key. Strength is ignored (the transforms are not noise; list one strength, each is another
key); the achieved PSNR reported is the real standard PSNR of the encrypted image against the clean one. Pixels
outside the whole blocks (remainder rows/columns, which a padding-free stem never sees) are released unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.core.params import Strict
from nonxfer_bench.encoders.base import ENCODERS, IGNORED, Encoder, Encoding
from nonxfer_bench.linalg.subspace import unfold_columns
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.zoo import ZooModel


class KeyedBlockParams(Strict):
    shuffle: bool = Field(True, description="pixel shuffling: one keyed permutation of the values inside every block")
    flip: bool = Field(
        True, description="negative-positive transform: x -> 1 - x at a keyed half of the block positions"
    )
    scramble: bool = Field(True, description="block scrambling: a keyed permutation of the block positions (ViTs only)")


def to_blocks(images: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """The whole blocks of B x C x H x W images as B x n x d: blocks row-major, values in ``F.unfold`` order
    (channel, row, column), the order of a first layer's flattened weight."""
    count, channels, height, width = images.shape
    (bh, bw), (gh, gw) = block, (height // block[0], width // block[1])
    tiles = images[..., : gh * bh, : gw * bw].reshape(count, channels, gh, bh, gw, bw)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(count, gh * gw, channels * bh * bw)


def from_blocks(blocks: torch.Tensor, images: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """A copy of ``images`` with its whole blocks replaced by ``blocks`` (B x n x d); remainder rows/columns kept."""
    count, channels, height, width = images.shape
    (bh, bw), (gh, gw) = block, (height // block[0], width // block[1])
    tiles = (
        blocks.reshape(count, gh, gw, channels, bh, bw)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(count, channels, gh * bh, gw * bw)
    )
    out = images.clone()
    out[..., : gh * bh, : gw * bw] = tiles
    return out


@dataclass(frozen=True)
class BlockKey:
    """A release's secret: block size, in-block permutation and flips (d,), block permutation (n,), on the CPU.

    Encrypted position s holds plain position ``shuffle[s]``, flipped where ``flip[s]``; encrypted block q holds
    plain block ``scramble[q]``. A transform that is off is the identity.
    """

    block: tuple[int, int]
    shuffle: torch.Tensor
    flip: torch.Tensor
    scramble: torch.Tensor

    @classmethod
    def draw(
        cls, seed: int, block: tuple[int, int], channels: int, blocks: int, params: KeyedBlockParams
    ) -> "BlockKey":
        """The key of a generator seed. All three parts are always drawn (in one order), so switching one transform
        off leaves the others' keys as they were."""
        generator = keyed_generator("keyed_block", seed)
        size = channels * block[0] * block[1]
        shuffle, flip = torch.randperm(size, generator=generator), torch.rand(size, generator=generator) < 0.5
        scramble = torch.randperm(blocks, generator=generator)
        return cls(
            block,
            shuffle if params.shuffle else torch.arange(size),
            flip & params.flip,
            scramble if params.scramble else torch.arange(blocks),
        )

    def _blocks(self, images: torch.Tensor) -> torch.Tensor:
        blocks = to_blocks(images, self.block)
        if blocks.shape[1:] != (len(self.scramble), len(self.shuffle)):
            raise ValueError(
                f"a key for {len(self.scramble)} blocks of {len(self.shuffle)} values does not fit images "
                f"{tuple(images.shape[1:])}"
            )
        return blocks

    def encrypt(self, images: torch.Tensor) -> torch.Tensor:
        """Scramble the blocks, shuffle the values inside each, flip the keyed positions."""
        device = images.device
        blocks = self._blocks(images)[:, self.scramble.to(device)][:, :, self.shuffle.to(device)]
        return from_blocks(torch.where(self.flip.to(device), 1 - blocks, blocks), images, self.block)

    def decrypt(self, images: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`encrypt`."""
        device = images.device
        blocks = self._blocks(images)
        blocks = torch.where(self.flip.to(device), 1 - blocks, blocks)
        blocks = blocks[:, :, torch.argsort(self.shuffle).to(device)][:, torch.argsort(self.scramble).to(device)]
        return from_blocks(blocks, images, self.block)


def _scramble_prefix(model: ZooModel) -> int | None:
    """How many prefix entries (class, register tokens) a ViT's position embedding holds before the patch tokens,
    or None when block scrambling cannot be folded into ``model`` (not a fixed-grid timm VisionTransformer whose
    patch embedding is the first layer and whose grid is the input's blocks)."""
    net = model.net
    if not isinstance(net, VisionTransformer) or net.dynamic_img_size or model.first_conv is not net.patch_embed.proj:
        return None
    _, height, width = model.input_size
    kernel = model.geometry.kernel_size
    if tuple(net.patch_embed.grid_size) != (height // kernel[0], width // kernel[1]):
        return None
    return 0 if net.no_embed_class else net.num_prefix_tokens


@torch.no_grad()
def _fold_into_first_layer(conv: nn.Conv2d, mean: torch.Tensor, std: torch.Tensor, key: BlockKey) -> None:
    """Fold the in-block shuffle and flips into the first layer (float64 on the CPU, then rounded once)."""
    mean, std = (unfold_columns(v.detach().double().cpu(), conv.kernel_size) for v in (mean, std))
    weight = conv.weight.detach().double().cpu().flatten(1)
    taken = weight[:, key.shuffle] / std[key.shuffle]  # W_t / std_t for t = Pi(s)
    scale = torch.where(key.flip, -std, std)
    offset = torch.where(key.flip, 1 - mean, mean) - mean[key.shuffle]
    bias = taken @ offset
    if conv.bias is None:
        conv.bias = nn.Parameter(
            torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device), requires_grad=False
        )
    conv.bias.copy_((conv.bias.detach().double().cpu() + bias).to(conv.bias))
    conv.weight.copy_((taken * scale).view_as(conv.weight).to(conv.weight))


class KeyedModel(ZooModel):
    """A zoo model transformed with a release's key (training-free): the authorized model as deployed.

    On the key's encrypted images it gives ``model``'s logits on the plain images, to float rounding. It carries
    its key, so :class:`KeyedBlockEncoder` encodes for it under that key.
    """

    def __init__(self, model: ZooModel, key: BlockKey) -> None:
        super().__init__(model.spec, copy.deepcopy(model.net))
        self.key = key
        _fold_into_first_layer(self.first_conv, self.mean, self.std, key)
        prefix = _scramble_prefix(self)
        if prefix is not None and self.net.pos_embed is not None:
            with torch.no_grad():
                tokens = self.net.pos_embed[:, prefix:]
                tokens.copy_(tokens[:, key.scramble.to(tokens.device)].clone())
        self.to_device(model.device, model.precision)


@ENCODERS.register("keyed_block")
class KeyedBlockEncoder(Encoder):
    """Keyed block-wise encryption (pixel shuffling, negative-positive, block scrambling) with the authorized model
    transformed by the same key; strength ignored, achieved PSNR the real standard PSNR of the encrypted image."""

    Params = KeyedBlockParams
    strength_unit = IGNORED
    secret = (
        "The key (block permutation, in-block pixel shuffle, flip positions): the release assumes the authorized "
        "model is deployed transformed with that key and that attackers hold neither the key nor plain/encrypted "
        "pairs made under it."
    )
    in_unit_range = True
    storage_formats = ("float32", "png16", "png8")  # JPEG's blocks mix the shuffled values the key puts back

    def key(self, model: ZooModel, shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> BlockKey:
        """The key for C x H x W images made for ``model``: the model's own if it carries one, else the generator's."""
        if isinstance(model, KeyedModel):
            return model.key
        block = model.geometry.kernel_size
        channels, height, width = shape
        return BlockKey.draw(
            generator.initial_seed(), block, channels, (height // block[0]) * (width // block[1]), self.params
        )

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        released = self.key(model, images.shape[1:], generator).encrypt(images)
        return Encoding(images=released, achieved_psnr=psnr_per_image(images, released))

    def check_model(self, model: ZooModel) -> str | None:
        geometry = model.geometry
        if (
            geometry.stride != geometry.kernel_size
            or geometry.padding != (0, 0)
            or geometry.dilation != (1, 1)
            or geometry.groups != 1
            or geometry.same
        ):
            kernel, stride = ("x".join(map(str, v)) for v in (geometry.kernel_size, geometry.stride))
            return (
                "the keyed block transform needs a first layer that is a non-overlapping patch embedding (kernel == "
                f"stride, no padding, one group); {model.first_conv_name} is {kernel}/{stride} with padding "
                f"{geometry.padding[0]}"
            )
        if self.params.scramble and _scramble_prefix(model) is None:
            return (
                "block scrambling permutes position embeddings: it needs a fixed-grid timm VisionTransformer, not "
                f"{model.spec.arch}; set params {{scramble: false}} (pixel shuffling and flips are exact on any "
                "patch-embedding stem)"
            )
        return None

    def authorized_view(self, model: ZooModel, generator: torch.Generator) -> ZooModel:
        problem = self.check_model(model)
        if problem:
            raise ValueError(f"keyed_block: model {model.name!r}: {problem}")
        return KeyedModel(model, self.key(model, model.input_size, generator))
