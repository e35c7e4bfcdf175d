"""Block-order recovery: a jigsaw solver on block-edge compatibility, against block scrambling.

A ciphertext-only attack on the keyed block-wise scheme (``keyed_block``; Sirichotedumrong & Kiya, arXiv
2010.06198; Chuman et al.'s jigsaw attacks on block scrambling): each released image is cut into the authorized
model's patch-sized blocks, and the blocks are put back where their edges fit best, as jigsaw-puzzle solvers do.

Dissimilarity of placing block j right of block i is prediction-based (Pomeranz et al.): each block's two outermost
columns predict the neighbour's first column linearly, in both directions (squared error; blocks one pixel wide use
the plain edge difference); the same with rows for "below". Placement is greedy on a grid of the known size: from a
seed block, repeatedly the (free cell next to a placed block, unplaced block) pair with the lowest mean dissimilarity
to its placed neighbours, the placed blocks' bounding box never exceeding the grid. Each of the ``seeds`` most
confident seed blocks (largest gap between their best and second-best match) is tried and the placement with the
lowest total dissimilarity over all adjacent pairs kept.

What it assumes: the blocks keep their inner layout, i.e. a scramble-only release (``keyed_block`` with shuffle and
flip off), or one whose in-block shuffle and flips were undone first. On pixel-shuffled or flipped blocks the edges
carry no continuity and the placement is noise. ``jpeg_quality`` re-encodes the release as JPEG (PIL, as
``jpeg_pil``) before solving: the release as found after a platform's recompression. Strength s blends
``(1 - s) r + s x_hat`` (the images as found, with JPEG if set, and the reordered ones): s = 1 is the solver's output.
"""

from __future__ import annotations

import torch
from pydantic import Field

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import MAX_ITERATIONS, Strict
from nonxfer_bench.encoders.keyed_block import from_blocks, to_blocks


class JigsawParams(Strict):
    seeds: int = Field(
        4,
        ge=1,
        le=MAX_ITERATIONS,
        description="seed blocks tried per image (the most confident first); the best placement is kept",
    )
    jpeg_quality: int | None = Field(
        None, ge=1, le=100, description="JPEG-compress the release at this quality before solving; unset: as released"
    )


def edge_dissimilarities(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(right, below): n x n prediction-based dissimilarities of blocks (n x C x h x w) for j right of / below i."""

    def one_axis(tiles: torch.Tensor) -> torch.Tensor:  # j right of i, along the last axis
        last, first = tiles[..., -1], tiles[..., 0]
        if tiles.shape[-1] > 1:
            ahead, behind = (
                2 * last - tiles[..., -2],
                2 * first - tiles[..., 1],
            )  # i predicts j's first column, j predicts i's last
        else:
            ahead, behind = last, first
        ahead, behind, first, last = (v.flatten(1) for v in (ahead, behind, first, last))
        cost = (torch.cdist(ahead, first).square() + torch.cdist(last, behind).square()).fill_diagonal_(float("inf"))
        second = cost.sort(1).values[:, 1:2], cost.sort(0).values[1:2]  # each block's second-best match on this side
        return 0.5 * (cost / (second[0] + 1e-6) + cost / (second[1] + 1e-6))

    return one_axis(blocks), one_axis(blocks.transpose(-1, -2))


def place(right: torch.Tensor, below: torch.Tensor, grid: tuple[int, int], seed: int) -> tuple[torch.Tensor, float]:
    """Greedy placement from ``seed`` on a ``grid``: (block index per grid cell, row-major; total dissimilarity).

    Cells live on a canvas with room for the grid in every direction around the seed; each free cell keeps the
    summed dissimilarity of every block to its placed neighbours and their count, updated as blocks are placed."""
    rows, cols = grid
    count = rows * cols
    height, width = 2 * rows + 1, 2 * cols + 1
    canvas = torch.full((height, width), -1, dtype=torch.long)
    cost = torch.zeros(height, width, count, dtype=right.dtype)
    neighbours = torch.zeros(height, width, dtype=right.dtype)
    placed = torch.zeros(count, dtype=torch.bool)
    cell_row, cell_col = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    top, bottom, left, right_edge = rows, rows, cols, cols

    def put(r: int, c: int, block: int) -> None:
        canvas[r, c] = block
        placed[block] = True
        for dr, dc, table in (
            (1, 0, below[block]),
            (-1, 0, below[:, block]),
            (0, 1, right[block]),
            (0, -1, right[:, block]),
        ):
            cost[r + dr, c + dc] += (
                table  # what each block would cost in the cell below, above, right of, left of this one
            )
            neighbours[r + dr, c + dc] += 1

    put(rows, cols, seed)
    for _ in range(count - 1):
        fits = (torch.clamp(cell_row, max=top).neg() + torch.clamp(cell_row, min=bottom) < rows) & (
            torch.clamp(cell_col, max=left).neg() + torch.clamp(cell_col, min=right_edge) < cols
        )
        cells = ((canvas < 0) & (neighbours > 0) & fits).nonzero()
        mean = cost[cells[:, 0], cells[:, 1]] / neighbours[cells[:, 0], cells[:, 1]].unsqueeze(-1)
        mean[:, placed] = float("inf")
        cell, block = divmod(int(torch.argmin(mean)), count)
        r, c = (int(v) for v in cells[cell])
        put(r, c, block)
        top, bottom, left, right_edge = min(top, r), max(bottom, r), min(left, c), max(right_edge, c)
    order = canvas[top : top + rows, left : left + cols]
    total = float(right[order[:, :-1], order[:, 1:]].sum() + below[order[:-1], order[1:]].sum())
    return order.flatten(), total


def solve(blocks: torch.Tensor, grid: tuple[int, int], seeds: int) -> torch.Tensor:
    """The recovered order of one image's blocks (n x C x h x w, row-major as released): index of the block that
    belongs at each grid cell. The placement from the ``seeds`` most confident seed blocks with the lowest total."""
    right, below = edge_dissimilarities(blocks.double())
    if len(blocks) == 1:
        return torch.zeros(1, dtype=torch.long)
    matches = torch.cat([right, right.T, below, below.T], 1).sort(1).values  # each block's matches in any direction
    confidence = matches[:, 1] - matches[:, 0]
    placements = [
        place(right, below, grid, int(seed)) for seed in torch.argsort(confidence, descending=True, stable=True)[:seeds]
    ]
    return min(placements, key=lambda placement: placement[1])[0]


@ATTACKS.register("block_order")
class BlockOrder(Attack):
    """Puts each released image's blocks back in the order a greedy jigsaw solver finds (module docstring): the
    attacker knows the scheme and the authorized architecture's patch size, and reads only the image it attacks."""

    Params = JigsawParams
    threat = ThreatModel(
        tier=Tier.ARCHITECTURE,
        text="ciphertext only: knows the block scheme and the authorized architecture's patch size, solves each "
        "released image as a jigsaw",
    )
    cpu_only = True

    def __init__(self, params: JigsawParams) -> None:
        super().__init__(params)
        self.block: tuple[int, int] | None = None

    def fit(self, context: AttackContext) -> None:
        self.block = context.authorized.geometry.kernel_size

    def parameter(self, strength: float) -> dict:
        return {"blend": round(strength, 4)} | (
            {"jpeg_quality": self.params.jpeg_quality} if self.params.jpeg_quality else {}
        )

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if self.block is None:
            raise RuntimeError(
                f"attack {self.name!r} needs fit(context) first (the runner calls it once per encoding group)"
            )
        found = images
        if self.params.jpeg_quality:
            quality = self.params.jpeg_quality
            found = ATTACKS.create("jpeg_pil", {"max_quality": quality, "min_quality": quality})(images, 0.0, generator)
        host = found.detach().cpu()
        (bh, bw), (height, width) = self.block, host.shape[-2:]
        grid = (height // bh, width // bw)
        blocks = to_blocks(host, self.block)
        channels = host.shape[1]
        orders = [solve(image.view(-1, channels, bh, bw), grid, self.params.seeds) for image in blocks]
        solved = from_blocks(torch.stack([image[order] for image, order in zip(blocks, orders)]), host, self.block).to(
            images
        )
        found = found.to(images)
        return found + strength * (solved - found)
