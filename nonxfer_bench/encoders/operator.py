"""The ``operator`` encoder: image-domain noise in the whole first layer's low-sensitivity subspace.

The ``patch`` encoder works per window, which is exact only for non-overlapping stems. This encoder
works on the whole first-layer operator A (``nonxfer_bench.linalg.operator``): the convolution over the full
image grid, with stride, overlap, padding, dilation and groups, as seen from [0, 1] pixels (the layer
sees (x - mean) / std, so the pixel-space operator is the convolution with weight / std_c; the mean
drops out of differences). Its k smallest right-singular vectors v_1..v_k (orthonormal images) span the
noise: per image the projection P g of g ~ N(0, I) (pixel space, keyed generator) onto their span, which has
the law of sum_i z_i v_i with z ~ N(0, I_k) but depends only on the subspace, scaled so the standard PSNR
(peak 1) equals the target exactly. Every such noise n changes the authorized first layer by
||A n|| <= sigma_s ||n||, with sigma_s the largest singular value over the chosen directions, reported
in ``Encoding.info`` together with sigma_min, ||A|| and the patch-level k and sigma_s for comparison.

What it can and cannot promise:
- An exact null space (sigma_s = 0) exists only when the operator is not injective: non-overlapping
  stems with D > m (ViT patchify), pixels no window sees. If its dimension exceeds k, the k directions
  are one deterministic (seeded) k-dimensional part of it.
- Overlapping stems (ResNet 7x7/s2, 3x3/s2 stems) are in general injective: sigma_s > 0, typically a
  sizeable fraction of ||A||, and with zero padding the smallest directions concentrate near the image
  border. The noise is then "least visible", not invisible: read sigma_s / sigma_max_operator.
The subspace is exact for inputs of up to 4,096 pixels (dense Gram matrix) and otherwise solved by LOBPCG on one
thread, so an NE is a function of its key and inputs, not of the machine's thread count. It is computed once per
(weights, std, input shape, k, tol) and cached in memory and on disk. Before a solve the encoder logs (logger
``nonxfer_bench.encoders.operator``, WARNING) what it solves, an estimate of how long it takes on this machine
and the cache file; a basis read from the disk cache is logged at INFO, and one that fails the cache check
(:func:`~nonxfer_bench.linalg.operator.cache_damage`: shape, finiteness, orthonormality, its singular values) is
logged at WARNING and solved again, so a damaged or planted entry never becomes the release's noise.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from nonxfer_bench.core.device import generator_on
from nonxfer_bench.core.params import INPUT_DIMENSION, MAX_ITERATIONS, Strict
from nonxfer_bench.encoders.base import ENCODERS, MAX_INPUT_DIMENSION, MAX_TAU, Encoder, Encoding
from nonxfer_bench.linalg.operator import (
    DENSE_LIMIT,
    ConvOperator,
    OperatorSubspace,
    cached_operator_subspace,
    one_thread,
    patch_level,
)
from nonxfer_bench.metrics.image_quality import noise_scale_for_psnr, psnr_per_image
from nonxfer_bench.zoo import ZooModel

log = logging.getLogger(__name__)
TYPICAL_ITERATIONS = (
    75  # LOBPCG iterations measured for 224-px stems at k = 64: 50-74 (nonxfer_bench/linalg/operator.py)
)
ITERATION_COST = 6  # one iteration ~ 6 x (a QR of the n x p block + p applications of A^T A), measured at 112-224 px
# a dense symmetric eigendecomposition with vectors takes as long as ~120 n^3 flops of matmul (measured, n = 768-3072)
EIGH_COST = 120


class OperatorParams(Strict):
    k: Annotated[int, INPUT_DIMENSION] = Field(
        64,
        ge=1,
        le=MAX_INPUT_DIMENSION,
        description="number of smallest right-singular directions of the whole first layer",
    )
    tol: float = Field(
        1e-8, gt=0, le=1, description="eigensolver tolerance: ||A^T A v - s^2 v|| / ||A||^2 per direction"
    )
    ritz_tol: float | None = Field(
        1e-4, gt=0, le=1, description="also stop once the k singular values move < ritz_tol (relative) in 10 iterations"
    )
    max_iter: int = Field(
        500, ge=1, le=MAX_ITERATIONS, description="eigensolver iteration cap (the reported sigmas stay exact)"
    )
    tau: float = Field(1e-5, gt=0, le=MAX_TAU, description="patch-level threshold, only for the reported comparison")


def pixel_space_operator_subspace(
    model: ZooModel, input_shape: tuple[int, int, int], params: OperatorParams
) -> OperatorSubspace:
    """The authorized first layer's operator-level subspace as seen from [0, 1] pixels: conv(weight / std_c)."""
    channels, height, width = input_shape
    k = min(params.k, channels * height * width)
    what = (
        f"{model.name}'s first layer ({model.first_conv_name}) on {channels}x{height}x{width} = "
        f"{channels * height * width:,} input pixels, k={k}"
    )

    def announce(event: str, entry: Path) -> None:
        if event == "load":
            log.info(f"operator subspace of {what}: loaded from the cache {entry}")
            return
        method = "exact (dense)" if channels * height * width <= DENSE_LIMIT else "LOBPCG, one thread"
        seconds = estimate_solve_seconds(model.first_conv, input_shape, k, model.pixel_scale(), params.max_iter)
        log.warning(
            f"operator encoder: one-time solve of the subspace of {what}, {method}; estimated {_duration(seconds)} on "
            f"this machine (from the problem size and timed pieces of the solve, a rough estimate); cached in {entry} "
            "for every later call"
        )

    return cached_operator_subspace(
        model.first_conv,
        input_shape,
        k,
        params.tol,
        input_scale=model.pixel_scale(),
        announce=announce,
        max_iter=params.max_iter,
        ritz_tol=params.ritz_tol,
    )


def estimate_solve_seconds(
    conv: torch.nn.Conv2d, input_shape: tuple[int, int, int], k: int, input_scale: torch.Tensor, max_iter: int
) -> float:
    """Roughly how long :func:`nonxfer_bench.linalg.operator.operator_subspace` takes here, in seconds.

    A cost model of the solve, calibrated by timing small pieces of it on one thread (a few milliseconds up to
    about a second for 224-px inputs): dense (up to ``DENSE_LIMIT`` pixels) = building A column by column +
    forming A^T A + its eigendecomposition (``EIGH_COST`` n^3), the last two at the measured matmul rate;
    LOBPCG = ``TYPICAL_ITERATIONS`` (at most ``max_iter``) iterations of ``ITERATION_COST`` x (a QR of the
    n x p block + p applications of A^T A), at the real size. Within a factor of about two of measured solves
    on one thread (more threads speed up the dense solve); an estimate, not a promise. Timed on the CPU, where the
    solve runs, whatever device the layer is on."""
    operator = ConvOperator.of(conv, input_shape, input_scale, device="cpu")
    n = operator.in_features
    with one_thread():  # stable timings on a busy machine; the LOBPCG solve itself runs on one thread
        if n <= DENSE_LIMIT:
            square = torch.randn(256, 256, dtype=torch.float64)
            rate = 2 * 256**3 / _best_of(lambda: square @ square)
            images = torch.randn(8, *operator.input_shape, dtype=torch.float64)
            columns = n * _best_of(lambda: operator.forward(images)) / 8
            return columns + (2 * math.prod(operator.output_shape) * n * n + EIGH_COST * n**3) / rate
        p = min(n, k + max(8, k // 4))  # the solver's block: k plus its default guard vectors
        block = torch.randn(n, p, dtype=torch.float64)
        images = torch.randn(4, *operator.input_shape, dtype=torch.float64)
        iteration = ITERATION_COST * (
            _best_of(lambda: torch.linalg.qr(block), 1) + p * _best_of(lambda: operator.gram(images), 1) / 4
        )
    return min(TYPICAL_ITERATIONS, max_iter) * iteration


def _best_of(work, repeats: int = 3) -> float:
    """The shortest of ``repeats`` timings of ``work()`` in seconds (a shared machine only ever slows it down)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


@ENCODERS.register("operator")
class OperatorEncoder(Encoder):
    """Gaussian noise in the k least-sensitive image directions of the whole first layer, exact standard PSNR."""

    Params = OperatorParams
    secret = (
        "The authorized model's first layer: the noise lies in the whole layer's least-sensitive image directions; "
        "the release assumes attackers hold neither that layer nor a model whose first layer shares them."
    )
    storage_formats = (
        "float32",
        "png16",
        "png8",
    )  # clipping costs the authorized model at low PSNR: encode reports what it kept
    version = "2"  # 2: exact small subspaces, draws by projection (1 depended on the thread count)

    def __init__(self, params: OperatorParams) -> None:
        super().__init__(params)
        self._placed: tuple[OperatorSubspace, dict[tuple, torch.Tensor]] | None = (
            None  # the last subspace, per (device, dtype)
        )

    def basis(self, subspace: OperatorSubspace, images: torch.Tensor) -> torch.Tensor:
        """The subspace's basis (k x n, one direction a row) in the images' device and dtype, converted once per
        subspace and device."""
        if self._placed is None or self._placed[0] is not subspace:
            self._placed = (subspace, {})
        placed, key = self._placed[1], (images.device, images.dtype)
        if key not in placed:
            placed[key] = subspace.basis.to(device=images.device, dtype=images.dtype).flatten(1)
        return placed[key]

    def encode(self, images: torch.Tensor, model: ZooModel, strength: float, generator: torch.Generator) -> Encoding:
        subspace = pixel_space_operator_subspace(model, tuple(images.shape[1:]), self.params)
        basis = self.basis(subspace, images)
        # P g with P = V V^T the projector onto the subspace and g ~ N(0, I) in pixel space: the same law as V z,
        # but a function of the subspace only, not of the basis a solver happened to return within it
        g = torch.randn(
            len(images),
            basis.shape[1],
            generator=generator_on(generator, images.device),
            device=images.device,
            dtype=images.dtype,
        )
        noise = ((g @ basis.T) @ basis).view_as(images)
        released = images + noise * noise_scale_for_psnr(noise, strength)
        patch = patch_level(model.first_conv, model.pixel_scale(), self.params.tau)
        return Encoding(
            images=released,
            achieved_psnr=psnr_per_image(images, released),
            info={
                "k": subspace.k,
                "sigma_s": subspace.sigma_s,
                "sigma_min": subspace.sigma_min,
                "sigma_max_operator": subspace.sigma_max_operator,
                "exact_null": subspace.exact_null_count(),
                "converged": float(subspace.converged),  # every residual <= tol
                "ritz_settled": float(subspace.stop == "ritz"),  # stopped because the sigmas stopped moving
                "residual_max": float(subspace.residuals.max()),
                "iterations": subspace.iterations,
                "patch_k": patch.k,
                "patch_sigma_s": patch.sigma_s,
            },
        )
