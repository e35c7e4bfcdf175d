"""Operator-level low-sensitivity subspace of a first layer: the *whole* strided convolution.

The patch-level analysis (:mod:`nonxfer_bench.linalg.subspace`) looks at one window: W (m x D). What an
image perturbation does to the first layer, though, is decided by the full linear map

    A: R^{C x H x W} -> R^{m x H' x W'},   x -> conv2d(x, weight; stride, padding, dilation, groups)

(bias ignored), which couples overlapping windows and knows the borders. Its right-singular vectors
with the smallest singular values are the image directions the layer sees least: ||A v|| = sigma ||v||.

- An exact null space exists only when A is not injective: non-overlapping stems with D > m (each
  window contributes D - m null directions), pixels no window sees (stride > kernel extent, or the
  remainder rows/columns a strided stem skips), or grouped/dilated layouts with the same effect.
- Overlapping stems (ResNet's 7x7/s2) are in general injective: the smallest singular values are
  positive, and "low sensitivity" means "smallest sigma", not "invisible". Zero padding makes border
  pixels seen by fewer windows, so the smallest directions often concentrate at the image border.

Everything here is matrix-free: A is ``F.conv2d`` and A^T is ``F.conv_transpose2d`` (with the
``output_padding`` that maps back to exactly H x W); for circular/reflect/replicate padding the
transpose runs on the padded grid and the padding's own adjoint (wrap-add) comes from autograd.
The k smallest eigenpairs of A^T A come from block LOBPCG (float64, soft locking), preconditioned by
the exact inverse of the circular-boundary A^T A (block-diagonal per frequency, applied by FFT):
without it the smallest eigenvalues sit 1e-3..1e-4 of ||A||^2 deep and Krylov-type methods need
hundreds of iterations. The final singular values are measured directly as the singular values of A
restricted to the found subspace (no squaring), so ``sigma_s`` (the largest over the chosen
directions) bounds ||A n|| / ||n|| for every n in their span, exactly, converged or not.

For circular boundaries (``padding_mode="circular"`` and H' * s == H) the operator is block-circulant
and its whole spectrum is the union over the Ho x Wo frequencies of the singular values of small
m x (C s_h s_w) symbol matrices: :func:`circular_spectrum` computes that (used as a check, and as an
estimate for zero-padded layers, where borders differ).

All arithmetic is float64: the smallest singular values of a stem are 1e-3..1e-6 of the largest, below
float32's resolution for eigenvalues of A^T A.

Cost, measured on one CPU thread of a shared machine, k = 64: Fashion-zoo stems at 28x28 / 32x32 x 1
channel 0.2-1.5 s; 32x32x3 (7x7/s2 64 filters; EfficientNet-Lite0's 3x3/s2 stem) about 8-9 s at
tol 1e-8; 224x224x3 (n = 150,528): 7x7/s2 64 filters 690 s (50 iterations, stopped by
``ritz_tol=1e-4`` with residuals 1e-4), Lite0 stem 870 s (74 iterations to tol 1e-8). About 13 s per
iteration there, dominated by 80 float64 conv/conv-transpose pairs; a GPU runs the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.subspace import PatchSubspace, patch_subspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvOperator:
    """The first layer as a linear map on one image (bias ignored), optionally after a per-channel scale.

    ``input_scale`` (C,) multiplies the input channels first: with 1/std the operator acts on [0, 1]
    pixels, as the normalized layer sees them (the mean shift is affine and drops out of differences).
    The geometry's TF-same padding (timm ``Conv2dSame``) is part of the map, as the layer's forward pads.
    """

    weight: torch.Tensor
    input_shape: tuple[int, int, int]
    geometry: ConvGeometry
    input_scale: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        conv: nn.Conv2d,
        input_shape: tuple[int, int, int],
        input_scale: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> "ConvOperator":
        geometry = ConvGeometry.of(conv)
        channels, height, width = (int(v) for v in input_shape)
        if channels != conv.in_channels:
            raise ValueError(f"input has {channels} channels, the layer takes {conv.in_channels}")
        device = device if device is not None else conv.weight.device
        scale = None
        if input_scale is not None:
            scale = torch.as_tensor(input_scale).detach().flatten().to(device=device, dtype=dtype)
            if scale.numel() != channels:
                raise ValueError(f"input_scale has {scale.numel()} values for {channels} channels")
        operator = cls(
            weight=conv.weight.detach().to(device=device, dtype=dtype),
            input_shape=(channels, height, width),
            geometry=geometry,
            input_scale=scale,
        )
        if min(operator.output_shape[1:]) < 1:
            raise ValueError(f"input {input_shape} is smaller than the layer's window")
        return operator

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[-2:])

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.weight.shape[0], *self.geometry.output_size(*self.input_shape[1:]))

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """All padding around the input in ``F.pad`` order (left, right, top, bottom): explicit plus TF-same."""
        ph, pw = self.geometry.padding
        left, right, top, bottom = self.geometry.same_padding(*self.input_shape[1:])
        return (pw + left, pw + right, ph + top, ph + bottom)

    @property
    def _conv_pads(self) -> bool:
        """True when ``conv2d`` can pad by itself: zeros, symmetric (no TF-same)."""
        return self.geometry.padding_mode == "zeros" and not self.geometry.same

    @property
    def output_padding(self) -> tuple[int, int]:
        """What ``conv_transpose2d`` must add so that the adjoint lands on exactly H x W (always < stride)."""
        g = self.geometry
        pads = []
        for size, out, e, s, p in zip(self.input_shape[1:], self.output_shape[1:], g.extent, g.stride, g.padding):
            pads.append(size - ((out - 1) * s - 2 * p + e))
        return tuple(pads)

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_scale is None else x * self.input_scale.view(1, -1, 1, 1)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        mode = "constant" if self.geometry.padding_mode == "zeros" else self.geometry.padding_mode
        return F.pad(x, self.pads, mode=mode)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        if self._conv_pads:
            return F.conv2d(x, self.weight, None, g.stride, g.padding, g.dilation, g.groups)
        return F.conv2d(self._pad(x), self.weight, None, g.stride, 0, g.dilation, g.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x for a batch of images (B, C, H, W) -> (B, m, H', W')."""
        return self._conv(self._scaled(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y for a batch of first-layer outputs (B, m, H', W') -> (B, C, H, W)."""
        g = self.geometry
        if self._conv_pads:
            x = F.conv_transpose2d(y, self.weight, None, g.stride, g.padding, self.output_padding, g.groups, g.dilation)
        else:  # circular / reflect / replicate / TF-same: transpose the unpadded conv on the padded grid, then the pad
            left, right, top, bottom = self.pads
            _, height, width = self.input_shape
            padded_size = (height + top + bottom, width + left + right)
            sizes = zip(padded_size, self.output_shape[1:], g.extent, g.stride)
            output_padding = tuple(size - ((out - 1) * s + e) for size, out, e, s in sizes)
            padded = F.conv_transpose2d(y, self.weight, None, g.stride, 0, output_padding, g.groups, g.dilation)
            with torch.enable_grad():  # the adjoint of F.pad (crop / wrap-add / reflect-add) by autograd: cheap
                zeros = y.new_zeros(y.shape[0], *self.input_shape, requires_grad=True)
                (x,) = torch.autograd.grad(self._pad(zeros), zeros, padded)
        return self._scaled(x)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """A^T A x for a batch of images."""
        return self.adjoint(self.forward(x))

    def full_weight(self) -> torch.Tensor:
        """(m, C, kh, kw): block-diagonal over groups, input scale folded in (the patch-level matrix)."""
        m, per_group, kh, kw = self.weight.shape
        groups = self.geometry.groups
        full = self.weight.new_zeros(m, per_group * groups, kh, kw)
        out_per_group = m // groups
        for g in range(groups):
            rows = slice(g * out_per_group, (g + 1) * out_per_group)
            full[rows, g * per_group : (g + 1) * per_group] = self.weight[rows]
        if self.input_scale is not None:
            full = full * self.input_scale.view(1, -1, 1, 1)
        return full

    def symbol(self, ho: int, wo: int) -> torch.Tensor:
        """Per-frequency matrices (ho, wo, m, C s_h s_w) of the circular-boundary layer on an (ho s_h, wo s_w) grid.

        Polyphase form: the input splits into C s_h s_w phase images on the ho x wo output grid; tap (a, b)
        reads phase (d a - p) mod s at shift floor((d a - p) / s). Frequencies follow ``torch.fft``.
        """
        channels = self.input_shape[0]
        (sh, sw), (dh, dw) = self.geometry.stride, self.geometry.dilation
        pw, _, ph, _ = self.pads  # leading padding: where tap (0, 0) of the first window reads
        weight = self.full_weight().to(torch.complex128)
        m, _, kh, kw = weight.shape
        symbol = torch.zeros(ho, wo, m, channels, sh, sw, dtype=torch.complex128, device=weight.device)
        freq_h = torch.arange(ho, dtype=torch.float64, device=weight.device).view(ho, 1) / ho
        freq_w = torch.arange(wo, dtype=torch.float64, device=weight.device).view(1, wo) / wo
        for a in range(kh):
            offset_h = dh * a - ph
            for b in range(kw):
                offset_w = dw * b - pw
                phase = torch.exp(2j * math.pi * (freq_h * (offset_h // sh) + freq_w * (offset_w // sw)))
                symbol[:, :, :, :, offset_h % sh, offset_w % sw] += phase.view(ho, wo, 1, 1) * weight[:, :, a, b]
        return symbol.view(ho, wo, m, channels * sh * sw)

    def columns(self, fn, vectors: torch.Tensor, chunk: int) -> torch.Tensor:
        """Apply an image -> image map to the columns of an (n, p) matrix, in chunks of images."""
        out = []
        for start in range(0, vectors.shape[1], chunk):
            block = vectors[:, start : start + chunk].T.reshape(-1, *self.input_shape)
            out.append(fn(block).reshape(block.shape[0], -1).T)
        return torch.cat(out, dim=1)


@dataclass(frozen=True)
class OperatorSubspace:
    """The k smallest right-singular directions of the whole first-layer operator, as images.

    ``basis`` (k, C, H, W) is orthonormal (as flattened vectors); ``singular_values`` (k,) ascending,
    with ``singular_values[i] = ||A basis[i]||`` and, for any combination n of the basis,
    ``||A n|| <= sigma_s ||n||`` (sigma_s = the largest of them). ``residuals`` are
    ||A^T A v - sigma^2 v|| / sigma_max_operator^2 per direction; ``converged`` when all are <= tol;
    ``stop`` says why the solver stopped (see :class:`EigenResult`).
    """

    basis: torch.Tensor
    singular_values: torch.Tensor
    residuals: torch.Tensor
    converged: bool
    sigma_max_operator: float
    iterations: int
    matvecs: int
    stop: str
    seconds: float
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]

    @property
    def k(self) -> int:
        return self.basis.shape[0]

    @property
    def sigma_s(self) -> float:
        """Largest singular value over the chosen directions (the operator-level sigma_S)."""
        return float(self.singular_values.max()) if self.k else 0.0

    @property
    def sigma_min(self) -> float:
        return float(self.singular_values.min()) if self.k else 0.0

    def exact_null_count(self, rtol: float = 1e-6) -> int:
        """How many chosen directions have sigma <= rtol * ||A|| (numerically an exact null space)."""
        return int((self.singular_values <= rtol * self.sigma_max_operator).sum())


def _orthonormalize(
    y: torch.Tensor, gy: torch.Tensor | None, basis: torch.Tensor | None, gbasis: torch.Tensor | None, drop: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Orthonormal columns spanning y's part outside span(basis), with their images under A^T A.

    ``gy`` (A^T A y) and ``gbasis`` are carried along linearly when given (no new matvecs). Directions
    whose remaining norm is <= ``drop`` times y's largest column norm are dropped.
    """
    scale = float(y.norm(dim=0).max()) if y.numel() else 0.0
    if basis is not None and basis.shape[1]:
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to working precision
            coefficients = basis.T @ y
            y = y - basis @ coefficients
            if gy is not None:
                gy = gy - gbasis @ coefficients
    if y.shape[1] == 0 or scale == 0.0:
        return y[:, :0], None if gy is None else gy[:, :0]
    _, s, vh = torch.linalg.svd(y, full_matrices=False)
    keep = s > drop * scale
    transform = vh[keep].T / s[keep]
    z = y @ transform
    gz = None if gy is None else gy @ transform
    factor, failed = torch.linalg.cholesky_ex(z.T @ z)  # polish orthonormality: z^T z = I + O(eps cond)
    upper = factor.T if not bool(failed) else None
    if upper is None:  # never seen; Householder QR as the fallback
        z, upper = torch.linalg.qr(z)
    else:
        z = torch.linalg.solve_triangular(upper, z, upper=True, left=False)
    if gz is not None:
        gz = torch.linalg.solve_triangular(upper, gz, upper=True, left=False)
    return z, gz


def circulant_preconditioner(operator: "ConvOperator", shift: float = 1e-3):
    """(G_c + shift * ||G_c|| I)^{-1}, with G_c the circular-boundary A^T A on the stride-padded grid.

    G_c is block-diagonal per frequency (see :func:`circular_spectrum`), so it is inverted exactly and
    applied by FFT. It equals A^T A away from the borders; as a preconditioner for the smallest
    eigenpairs it removes the interior's ill-conditioning and leaves the border (and any exact null
    space) to the iteration. Returns a function on (n, p) column blocks.
    """
    channels, height, width = operator.input_shape
    sh, sw = operator.geometry.stride
    ho, wo = -(-height // sh), -(-width // sw)
    symbol = operator.symbol(ho, wo)  # (ho, wo, m, C sh sw)
    gram = symbol.conj().transpose(-1, -2) @ symbol
    values, vectors = torch.linalg.eigh(gram)
    mu = shift * float(values.max())
    inverse = (vectors / (values + mu).unsqueeze(-2)) @ vectors.conj().transpose(-1, -2)
    d = channels * sh * sw

    def apply(columns: torch.Tensor) -> torch.Tensor:
        p = columns.shape[1]
        x = columns.T.reshape(p, channels, height, width)
        x = F.pad(x, (0, wo * sw - width, 0, ho * sh - height))
        x = x.reshape(p, channels, ho, sh, wo, sw).permute(0, 1, 3, 5, 2, 4)  # p, C, sh, sw, ho, wo
        spectrum = torch.fft.fft2(x).reshape(p, d, ho, wo).permute(2, 3, 1, 0)  # ho, wo, d, p
        y = torch.fft.ifft2((inverse @ spectrum).permute(3, 2, 0, 1).reshape(p, channels, sh, sw, ho, wo)).real
        y = y.permute(0, 1, 4, 2, 5, 3).reshape(p, channels, ho * sh, wo * sw)[:, :, :height, :width]
        return y.reshape(p, -1).T

    return apply


def largest_eigenvalue(operator: ConvOperator, steps: int = 40, seed: int = 0) -> float:
    """||A||^2 = lambda_max(A^T A) by Lanczos with full reorthogonalization (``steps`` matvecs)."""
    n = operator.in_features
    steps = min(steps, n)
    dtype, device = operator.weight.dtype, operator.weight.device
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    v = torch.randn(n, generator=generator, dtype=dtype).to(device)
    basis = [v / v.norm()]
    alphas, betas = [], []
    for _ in range(steps):
        w = operator.gram(basis[-1].view(1, *operator.input_shape)).flatten()
        alphas.append(float(w @ basis[-1]))
        stacked = torch.stack(basis, 1)
        for _ in range(2):
            w = w - stacked @ (stacked.T @ w)
        beta = float(w.norm())
        if beta <= 1e-12 * max(abs(a) for a in alphas) or len(basis) == steps:
            break
        betas.append(beta)
        basis.append(w / beta)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(tridiagonal).max())


@dataclass(frozen=True)
class EigenResult:
    vectors: torch.Tensor  # (n, k), orthonormal Ritz vectors of A^T A
    values: torch.Tensor  # (k,) Ritz values, ascending
    residuals: torch.Tensor  # (k,) ||A^T A v - theta v|| / lambda_max, recomputed exactly at the end
    converged: bool
    lambda_max: float  # ||A||^2 from Lanczos (a lower bound, tight to many digits in practice)
    iterations: int
    matvecs: int
    # "residual", "ritz" (Ritz values stagnated), "invariant" (nothing left to add), "max_iter", "dense" (exact)
    stop: str


def smallest_eigenpairs(
    operator: ConvOperator,
    k: int,
    tol: float = 1e-8,
    *,
    oversample: int | None = None,
    max_iter: int = 500,
    precondition: bool = True,
    shift: float = 1e-3,
    chunk: int = 64,
    seed: int = 0,
    refresh: int = 20,
    ritz_tol: float | None = None,
    window: int = 10,
    callback=None,
) -> EigenResult:
    """The k smallest eigenpairs of A^T A by block LOBPCG, matrix-free (A = conv2d, A^T = conv_transpose2d).

    Block size p = k + oversample (guard vectors speed up the k-th). Soft locking: converged vectors stop
    receiving new search directions. Preconditioner: :func:`circulant_preconditioner` (``precondition``).
    ``tol`` bounds ||A^T A v - theta v|| / lambda_max for each of the k vectors. On large grids the
    bottom of the spectrum is a near-continuum and individual eigenvectors converge slowly while the
    Ritz values (upper bounds, decreasing) settle early: ``ritz_tol`` also stops when, over ``window``
    iterations, no Ritz value of the k moved by more than ritz_tol times the k-th.
    """
    n = operator.in_features
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] for input {operator.input_shape}")
    dtype, device = operator.weight.dtype, operator.weight.device
    p = min(n, k + (oversample if oversample is not None else max(8, k // 4)))
    gram = lambda block: operator.columns(operator.gram, block, chunk)  # noqa: E731
    preconditioner = circulant_preconditioner(operator, shift) if precondition else None
    generator = torch.Generator(device="cpu").manual_seed(seed)
    lambda_max = largest_eigenvalue(operator, seed=seed)
    x, _ = torch.linalg.qr(torch.randn(n, p, generator=generator, dtype=dtype).to(device))
    gx = gram(x)
    matvecs = p + min(40, n)
    directions = gdirections = None
    converged = False
    stop = "max_iter"
    history: list[torch.Tensor] = []
    iteration = 0
    for iteration in range(1, max_iter + 1):
        if iteration % refresh == 0:  # undo drift of the carried images and of orthonormality
            x, _ = torch.linalg.qr(x)
            gx = gram(x)
            matvecs += p
        if iteration == 1 or iteration % refresh == 0:
            projected = x.T @ gx
            values, rotation = torch.linalg.eigh((projected + projected.T) / 2)
            x, gx = x @ rotation, gx @ rotation
            lambda_max = max(lambda_max, float(values[-1]))
        residual_vectors = gx - x * values
        residuals = residual_vectors.norm(dim=0) / lambda_max
        if callback is not None:
            callback(iteration, values[:k], residuals[:k], matvecs)
        if bool((residuals[:k] <= tol).all()):
            converged, stop = True, "residual"
            break
        history.append(values[:k].clone())
        if ritz_tol is not None and len(history) > window:
            change = (history[-1] - history[-1 - window]).abs().max()
            if float(change) <= ritz_tol * max(float(history[-1][-1]), 1e-30 * lambda_max):
                stop = "ritz"
                break
        active = residuals > tol
        active[k:] = True
        search = residual_vectors[:, active]
        if preconditioner is not None:
            search = torch.cat([preconditioner(search[:, i : i + chunk]) for i in range(0, search.shape[1], chunk)], 1)
        search, _ = _orthonormalize(search, None, x, None, drop=1e-7)
        if search.shape[1] == 0:  # nothing left to add: x spans an invariant subspace numerically
            converged, stop = bool((residuals[:k] <= max(tol, 1e-12)).all()), "invariant"
            break
        gsearch = gram(search)
        matvecs += search.shape[1]
        basis, gbasis = torch.cat([x, search], 1), torch.cat([gx, gsearch], 1)
        if directions is not None:
            directions, gdirections = _orthonormalize(directions, gdirections, basis, gbasis, drop=1e-7)
            basis, gbasis = torch.cat([basis, directions], 1), torch.cat([gbasis, gdirections], 1)
        projected = basis.T @ gbasis
        all_values, all_vectors = torch.linalg.eigh((projected + projected.T) / 2)
        lambda_max = max(lambda_max, float(all_values[-1]))
        coefficients = all_vectors[:, :p]
        values = all_values[:p]
        x, gx = basis @ coefficients, gbasis @ coefficients
        directions, gdirections = basis[:, p:] @ coefficients[p:], gbasis[:, p:] @ coefficients[p:]
    x, _ = torch.linalg.qr(x[:, :k])
    gx = gram(x)
    matvecs += k
    projected = x.T @ gx
    values, rotation = torch.linalg.eigh((projected + projected.T) / 2)
    x, gx = x @ rotation, gx @ rotation
    residuals = (gx - x * values).norm(dim=0) / lambda_max
    converged = converged and bool((residuals <= 10 * tol).all())  # exact residuals, not the carried ones
    return EigenResult(x, values, residuals, converged, lambda_max, iteration, matvecs, stop)


def operator_subspace(
    conv: nn.Conv2d,
    input_shape: tuple[int, int, int],
    k: int = 64,
    tol: float = 1e-8,
    *,
    input_scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    method: Literal["auto", "dense", "lobpcg"] = "auto",
    **solver,
) -> OperatorSubspace:
    """The k smallest singular values and right-singular vectors of the whole first layer on C x H x W.

    ``method``: ``dense`` solves exactly from the Gram matrix, ``lobpcg`` iterates matrix-free (on one thread);
    ``auto`` is dense up to ``DENSE_LIMIT`` input pixels.

    ``input_scale`` multiplies input channels first (1/std: the layer as seen from [0, 1] pixels).
    Extra keywords go to :func:`smallest_eigenpairs` (``oversample``, ``max_iter``, ``precondition``,
    ``shift``, ``ritz_tol``, ``chunk``, ``seed``, ``callback``).
    """
    start = time.perf_counter()
    operator = ConvOperator.of(conv, input_shape, input_scale, device=device)
    if not 1 <= k <= operator.in_features:
        raise ValueError(f"k={k} must be in [1, {operator.in_features}] for input {operator.input_shape}")
    if method == "dense" or (method == "auto" and operator.in_features <= DENSE_LIMIT):
        result = _dense_smallest(operator, k)
    else:
        with one_thread():  # the iterate depends on BLAS summation order: the same on every machine with 1 thread
            result = smallest_eigenpairs(operator, k, tol, **solver)
    # Final Rayleigh-Ritz in singular-value form: the SVD of A restricted to the subspace, no squaring,
    # so sigma_i = ||A v_i|| exactly and sigma_max bounds the response of every combination.
    response = operator.columns(operator.forward, result.vectors, solver.get("chunk", 64))
    _, sigma, vh = torch.linalg.svd(response, full_matrices=False)
    vectors = result.vectors @ vh.T.flip(1)
    basis = vectors.T.reshape(k, *operator.input_shape).contiguous()
    return OperatorSubspace(
        basis=basis,
        singular_values=sigma.flip(0),
        residuals=result.residuals,
        converged=result.converged,
        sigma_max_operator=math.sqrt(result.lambda_max),
        iterations=result.iterations,
        matvecs=result.matvecs,
        stop=result.stop,
        seconds=time.perf_counter() - start,
        input_shape=operator.input_shape,
        output_shape=operator.output_shape,
    )


DENSE_LIMIT = 4096  # inputs up to this many pixels (e.g. 1 x 64 x 64) are solved exactly from the dense Gram matrix


def _dense_smallest(operator: ConvOperator, k: int) -> EigenResult:
    """The exact k smallest eigenpairs of A^T A from its dense Gram matrix (float64), for small inputs.

    Where the null space has more than k dimensions the k directions are not unique: a fixed seeded frame is
    projected onto the null space and orthonormalized, so the chosen subspace is a function of the layer only.
    """
    dense = operator.columns(
        operator.forward, torch.eye(operator.in_features, dtype=torch.float64, device=operator.weight.device), 256
    )
    gram = dense.T @ dense
    values, vectors = torch.linalg.eigh(gram)
    null = values <= 1e-12 * values[-1]
    if int(null.sum()) > k:
        frame = torch.randn(
            operator.in_features, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        ).to(vectors)
        inside = vectors[:, null]
        chosen, _ = torch.linalg.qr(inside @ (inside.T @ frame))
        chosen_values = torch.zeros(k, dtype=torch.float64, device=vectors.device)
    else:
        chosen, chosen_values = vectors[:, :k], values[:k]
    residuals = (gram @ chosen - chosen * chosen_values).norm(dim=0) / values[-1]
    return EigenResult(chosen, chosen_values, residuals, True, float(values[-1]), 0, operator.in_features, "dense")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside the block (as the iterative solver runs), the previous count after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def dense_operator_matrix(
    conv: nn.Conv2d,
    input_shape: tuple[int, int, int],
    input_scale: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The operator as a dense (m H' W') x (C H W) matrix, by applying it to the identity basis (tests only)."""
    operator = ConvOperator.of(conv, input_shape, input_scale, dtype=dtype)
    eye = torch.eye(operator.in_features, dtype=dtype, device=operator.weight.device)
    return operator.forward(eye.view(-1, *operator.input_shape)).flatten(1).T


def patch_matrix(conv: nn.Conv2d, input_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The patch-level matrix (m x C_in kh kw, ``F.unfold`` column order), block-diagonal for groups > 1.

    A grouped layer's output channel reads only its group's input channels: its row is zero on the
    others, so one unfolded patch serves all groups.
    """
    operator = ConvOperator.of(
        conv, (conv.in_channels, *ConvGeometry.of(conv).extent), input_scale
    )  # any grid that fits
    return operator.full_weight().flatten(1).cpu()


def patch_level(conv: nn.Conv2d, input_scale: torch.Tensor | None = None, tau: float = 1e-5) -> PatchSubspace:
    """The patch-level subspace (the published rule) of the same layer, for comparison."""
    return patch_subspace(patch_matrix(conv, input_scale), tau)


def circular_spectrum(
    conv: nn.Conv2d, input_shape: tuple[int, int, int], input_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """All singular values (ascending) of the layer with circular boundaries, frequency by frequency.

    Per output-grid frequency the layer is an m x (C s_h s_w) matrix (:meth:`ConvOperator.symbol`); the
    operator's spectrum is the union of theirs. Requires H = H' s_h and W = W' s_w (the output grid
    tiles the input). Exact for ``padding_mode="circular"``; for zero padding an interior estimate that
    ignores the borders.
    """
    operator = ConvOperator.of(conv, input_shape, input_scale)
    _, height, width = operator.input_shape
    (sh, sw), (_, ho, wo) = operator.geometry.stride, operator.output_shape
    if (ho * sh, wo * sw) != (height, width):
        raise ValueError(f"output grid {ho}x{wo} with stride {sh}x{sw} does not tile the {height}x{width} input")
    symbol = operator.symbol(ho, wo)
    singular = torch.linalg.svdvals(symbol.reshape(ho * wo, *symbol.shape[-2:])).flatten()
    missing = operator.in_features - singular.numel()  # per-frequency rank < C s_h s_w: exact zeros
    return torch.cat([singular, singular.new_zeros(max(0, missing))]).sort().values.cpu()


# --- a cache: one basis per (weights, scale, geometry, input shape, k, tol), in memory and on disk ---

_CACHE: OrderedDict[str, OperatorSubspace] = OrderedDict()
_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # part of the disk key: new code, new bases
_CACHE_SIZE = 16


def _digest(conv: nn.Conv2d, input_shape, input_scale, k: int, tol: float, extra: tuple) -> str:
    h = hashlib.sha256()
    h.update(conv.weight.detach().float().cpu().contiguous().numpy().tobytes())
    if input_scale is not None:
        h.update(torch.as_tensor(input_scale).detach().float().cpu().contiguous().numpy().tobytes())
    geometry = (tuple(conv.weight.shape), ConvGeometry.of(conv), tuple(input_shape), k, tol, extra)
    h.update(repr(geometry).encode())
    return h.hexdigest()


META_TYPES = {
    "converged": bool,
    "sigma_max_operator": float,
    "iterations": int,
    "matvecs": int,
    "stop": str,
    "seconds": float,
}
ORTHONORMAL_TOL = 1e-6  # max |V V^T - I| of a stored basis (a solved one: about 1e-14)
SIGMA_TOL = 1e-6  # max | ||A v_i|| - sigma_i |, relative to ||A|| (a solved one: about 1e-15)


def cache_damage(array: np.ndarray, meta: dict, operator: ConvOperator, k: int) -> str | None:
    """What is wrong with a subspace read from the disk cache, or None: the basis must be k orthonormal, finite
    float64 images of the operator's input shape whose responses ||A v_i|| are the stored singular values, with
    ||A|| between the largest response and a bound from the weights. A damaged or planted entry (zeros, NaN, another
    layer's or a sensitive basis) would otherwise release noise the layer sees more than reported, or none at all."""
    shape = (k, *operator.input_shape)
    if not isinstance(meta, dict):
        return "metadata that is not a mapping"
    if array.dtype != np.float64 or array.shape != shape:
        return f"a {array.dtype} array of shape {array.shape}, not float64 {shape}"
    wrong = [name for name, kind in META_TYPES.items() if not isinstance(meta.get(name), kind)]
    try:
        sigma, residuals = (np.asarray(meta[name], dtype=np.float64) for name in ("singular_values", "residuals"))
        shapes = [tuple(meta["input_shape"]), tuple(meta["output_shape"])]
    except (KeyError, TypeError, ValueError):
        wrong.append("singular_values, residuals or shapes")
    if wrong:
        return f"metadata {', '.join(wrong)} missing or of the wrong type"
    if sigma.shape != (k,) or residuals.shape != (k,) or shapes != [operator.input_shape, operator.output_shape]:
        return "metadata of other shapes than the basis"
    if not (
        np.isfinite(array).all()
        and np.isfinite(sigma).all()
        and np.isfinite(residuals).all()
        and math.isfinite(meta["sigma_max_operator"])
    ):
        return "values that are not finite"
    basis = torch.from_numpy(np.array(array))
    flat = basis.reshape(k, -1)
    error = float((flat @ flat.T - torch.eye(k, dtype=flat.dtype)).abs().max())
    if error > ORTHONORMAL_TOL:
        return f"a basis that is not orthonormal (|V V^T - I| up to {error:.2g})"
    response = operator.forward(basis).reshape(k, -1).norm(dim=1)
    # ||A|| <= ||conv||_F ||pad|| <= sqrt(H'W') ||W||_F (1 + the widest pad: no pixel is copied more than (1 + pad)^2
    # times)
    upper = (
        float(operator.full_weight().norm())
        * math.sqrt(math.prod(operator.output_shape[1:]))
        * (1 + max(operator.pads))
    )
    norm = meta["sigma_max_operator"]
    if not (1 - SIGMA_TOL) * float(response.max()) <= norm <= (1 + SIGMA_TOL) * upper:
        return f"||A|| = {norm:.4g} outside [{float(response.max()):.4g}, {upper:.4g}]"
    error = float((response - torch.from_numpy(sigma)).abs().max())
    if error > SIGMA_TOL * norm:
        return f"singular values that are not the basis's responses (off by up to {error:.2g})"
    return None


def cached_operator_subspace(
    conv: nn.Conv2d,
    input_shape: tuple[int, int, int],
    k: int,
    tol: float,
    input_scale: torch.Tensor | None = None,
    announce: Callable[[str, Path], None] | None = None,
    **solver,
) -> OperatorSubspace:
    """:func:`operator_subspace`, memoized on the weight bytes: in memory (LRU of the last few layers) and on
    disk (``ArrayCache("operator")``, atomic), so a second process or run loads the basis instead of solving.

    The key is the content: first-layer weights and geometry, input scale and shape, k, tol, the solver
    settings that change the result (not ``device`` or ``callback``) and torch's CPU threads (a solve's bits depend on
    them, and a run's cells must depend only on its own thread count); on disk also this module's source, so a
    changed solver never reads an old basis. The basis comes back on ``device``. ``announce(event, entry)`` is
    called with ``"load"`` on a disk hit and with ``"solve"`` before a solve (``entry``: the cache file). A disk entry
    that fails :func:`cache_damage` is logged (WARNING) and solved again, which replaces it.
    """
    device = solver.get("device")
    settings = tuple(sorted((name, value) for name, value in solver.items() if name not in ("device", "callback")))
    key = _digest(conv, input_shape, input_scale, k, tol, (*settings, ("threads", torch.get_num_threads())))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    disk, disk_key = ArrayCache("operator"), hashlib.sha256(f"{key}/{_CODE}".encode()).hexdigest()[:32]
    entry = disk.folder / f"{disk_key}.npy"
    hit = disk.get(disk_key)
    if (
        hit is not None
        and (damage := cache_damage(*hit, ConvOperator.of(conv, input_shape, input_scale, device="cpu"), k)) is not None
    ):
        log.warning(f"operator subspace cache entry {entry} is damaged ({damage}); solving it again")
        hit = None
    if hit is not None:
        if announce is not None:
            announce("load", entry)
        array, meta = hit
        basis = torch.from_numpy(np.array(array)).to(device or "cpu")
        result = OperatorSubspace(
            basis=basis,
            singular_values=basis.new_tensor(meta["singular_values"]),
            residuals=basis.new_tensor(meta["residuals"]),
            **{name: meta[name] for name in META_TYPES},
            input_shape=tuple(meta["input_shape"]),
            output_shape=tuple(meta["output_shape"]),
        )
    else:
        if announce is not None:
            announce("solve", entry)
        result = operator_subspace(conv, input_shape, k, tol, input_scale=input_scale, **solver)
        meta = {
            "singular_values": result.singular_values.tolist(),
            "residuals": result.residuals.tolist(),
            "converged": result.converged,
            "sigma_max_operator": result.sigma_max_operator,
            "iterations": result.iterations,
            "matvecs": result.matvecs,
            "stop": result.stop,
            "seconds": result.seconds,
            "input_shape": list(result.input_shape),
            "output_shape": list(result.output_shape),
        }
        disk.put(disk_key, result.basis.detach().cpu().numpy(), meta)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result
