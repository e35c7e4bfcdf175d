"""Known-plaintext key recovery against the keyed block-wise scheme (``keyed_block``).

The scheme is a fixed, per-block linear map: every release image's block at position q is plain block
scramble[q] with its values permuted by one Pi and a keyed subset flipped (x -> 1 - x). An attacker who holds m
(plain, encrypted) pairs under the release's key (images the owner released whose originals leaked, or a labelled
set it published) recovers the key by matching, then decrypts the whole release:

1. blocks: the sorted |v - 1/2| of a block's values do not change under shuffling or flips, so encrypted block q
   is matched to the plain block position whose sorted values are nearest over the m pairs (an assignment,
   Hungarian);
2. values: with the blocks paired, encrypted position s is matched to the plain position t and flip that give the
   smallest squared difference over all m x n paired blocks (an assignment over positions, each with the better of
   flipped / not flipped);
3. blocks again, now by the full distance of the in-block-decrypted blocks, and values again on that pairing.

With pairs whose values are distinct across positions the key comes out exactly from very few pairs (m * n paired
blocks against d positions); what several pairs cannot tell apart (a position or block constant over all of them)
decrypts to the same values on those pairs and may differ on others. Strength s uses round(s * m) pairs (at least
one when s > 0; 0 leaves the release as it is), so one suite axis sweeps the budget. The pairs are the suite's
public images encoded by the group's encoder for the authorized model as deployed (its key). Against a release that
is not keyed the estimate is the identity (the release decrypts to itself).
"""

from __future__ import annotations

import torch
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import Budget, ThreatModel, Tier
from nonxfer_bench.core.params import MAX_IMAGES, Strict
from nonxfer_bench.encoders.keyed_block import BlockKey, to_blocks


class KnownPlaintextParams(Strict):
    pairs: int = Field(
        8,
        ge=1,
        le=MAX_IMAGES,
        description="(plain, encrypted) pairs at strength 1 (the first public images, encrypted under the release's "
        "key)",
    )


def _assign(cost: torch.Tensor) -> torch.Tensor:
    """The assignment (row i -> column out[i]) of least total cost (Hungarian, on the CPU)."""
    rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
    return torch.as_tensor(cols[rows.argsort()], dtype=torch.long)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Summed squared differences between the columns of a (N x p) and of b (N x q): p x q."""
    return a.square().sum(0).unsqueeze(1) + b.square().sum(0).unsqueeze(0) - 2 * a.T @ b


def estimate_key(plain: torch.Tensor, encrypted: torch.Tensor, block: tuple[int, int]) -> BlockKey:
    """The key that maps the plain images to the encrypted ones (m x C x H x W each), by the matching above."""
    x, y = to_blocks(plain.double().cpu(), block), to_blocks(encrypted.double().cpu(), block)  # m x n x d
    described = [
        (v - 0.5).abs().sort(-1).values.transpose(0, 1).flatten(1) for v in (y, x)
    ]  # n x (m d): shuffle/flip-invariant
    scramble = _assign(torch.cdist(*described))
    for _ in range(2):
        paired_x, paired_y = x[:, scramble].flatten(0, 1), y.flatten(0, 1)  # (m n) x d, block by block
        same, flipped = _squared_distances(paired_y, paired_x), _squared_distances(paired_y, 1 - paired_x)
        shuffle = _assign(torch.minimum(same, flipped))
        flip = flipped.gather(1, shuffle[:, None]).squeeze(1) < same.gather(1, shuffle[:, None]).squeeze(1)
        key = BlockKey(block, shuffle, flip, torch.arange(x.shape[1]))
        unshuffled = to_blocks(
            key.decrypt(encrypted.double().cpu()), block
        )  # in-block decrypted, blocks still scrambled
        scramble = _assign(torch.cdist(unshuffled.transpose(0, 1).flatten(1), x.transpose(0, 1).flatten(1)))
    return BlockKey(block, shuffle, flip, scramble)


@ATTACKS.register("keyed_known_plaintext")
class KeyedKnownPlaintext(Attack):
    """Recovers the block key from round(s x ``pairs``) (plain, encrypted) pairs and decrypts the release (module
    docstring). Needs a ``public`` dataset (the plain images of the pairs)."""

    Params = KnownPlaintextParams
    threat = ThreatModel(
        tier=Tier.LABELLED_NES,
        text="holds m clean images and their encryptions under the release's key (leaked or published pairs) and "
        "the block size; recovers the key by matching",
        labelled=True,
    )

    def __init__(self, params: KnownPlaintextParams) -> None:
        super().__init__(params)
        self.plain: torch.Tensor | None = None
        self.encrypted: torch.Tensor | None = None
        self.block: tuple[int, int] | None = None
        self.keys: dict[int, BlockKey] = {}

    def fit(self, context: AttackContext) -> None:
        if context.encode is None or not len(context.public_images):
            raise ValueError(
                "keyed_known_plaintext: needs a 'public' dataset in the suite (the plain images of the pairs)"
            )
        self.plain = context.public_images[: self.params.pairs]
        self.encrypted = context.encode(self.plain, context.authorized)
        self.block = context.authorized.geometry.kernel_size
        self.keys = {}

    def used(self, strength: float) -> int:
        available = 0 if self.plain is None else len(self.plain)
        return 0 if strength == 0 or available == 0 else max(1, round(strength * available))

    def budget(self, strength: float) -> Budget:
        return self.spent.model_copy(update={"labelled": self.used(strength)})

    def parameter(self, strength: float) -> dict:
        return {"pairs": self.used(strength)}

    def key(self, strength: float) -> BlockKey:
        """The key estimated from the pairs ``strength`` spends (once per pair count)."""
        used = self.used(strength)
        if used not in self.keys:
            self.keys[used] = estimate_key(self.plain[:used], self.encrypted[:used], self.block)
        return self.keys[used]

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.plain is None:
            raise RuntimeError(
                f"attack {self.name!r} needs fit(context) first (the runner calls it once per encoding group)"
            )
        if not self.used(strength):
            return images.clone()
        return self.key(strength).decrypt(images)
