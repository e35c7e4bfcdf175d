"""Shared linear algebra of the adaptive attacks: patch lattices, covariances, subspace removal.

Not an attack family (nothing is registered here). Used by ``patch_statistics``, ``subspace_estimation``,
``surrogate`` and ``oracle``.

- :class:`Lattice`: the first layer's window geometry (a :class:`ConvGeometry`) as the attacker assumes it,
  resolved from explicit parameters, a named zoo model or the authorized model's architecture.
- :class:`Tiling`: non-overlapping kernel-sized tiles at the stem's padding offset (``ConvGeometry.tiling``:
  the lattice of the ``patch`` encoder, and the patch lattice of a non-overlapping stem); patches in and out.
- :func:`excess_variance_directions`: the generalized eigenproblem C_released v = lambda C_clean v.
- :class:`SubspaceRemover`: replaces the component of a vector in a subspace by its conditional
  expectation under a clean (Gaussian) prior given the rest of the vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nonxfer_bench.core.params import MAX_KERNEL, Strict, ZooModelName
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.subspace import pixel_space_subspace

if TYPE_CHECKING:
    from nonxfer_bench.attacks.base import AttackContext
    from nonxfer_bench.zoo import ZooModel

Restore = Literal["regression", "mean", "none"]
Side = Annotated[int, Field(ge=1, le=MAX_KERNEL)]
Padding = Annotated[int, Field(ge=0, le=MAX_KERNEL)]
Ridge = Annotated[float, Field(gt=0, le=1e6)]  # a ridge relative to a covariance's scale
MAX_PIXELS = 65_536  # values per image (C*H*W) a dense covariance may span: 32 GiB of float64 at the limit
Tau = Annotated[float, Field(gt=0, le=1e6)]  # a singular-value threshold of a first layer (as seen from [0, 1] pixels)


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class LatticeParams(Strict):
    """Where the attacker takes the patch lattice from: explicit numbers, a named zoo model, or (default)
    the authorized model's architecture (its stem geometry and normalization are public, its weights are not)."""

    kernel: Side | tuple[Side, Side] | None = Field(None, description="explicit lattice kernel (overrides the models)")
    stride: Side | tuple[Side, Side] | None = Field(None, description="explicit stride; default: the kernel")
    padding: Padding | tuple[Padding, Padding] = Field(0, description="explicit padding")
    geometry_model: ZooModelName | None = Field(
        None, description="zoo model whose stem geometry is assumed; default: the authorized model's"
    )


@dataclass(frozen=True)
class Lattice:
    """A stem's window geometry as the attacker assumes it, plus the per-channel normalization the stem sees
    (for the reference's fold); ``mean``/``std`` None: identity normalization."""

    geometry: ConvGeometry
    mean: torch.Tensor | None = None  # (1, C, 1, 1)
    std: torch.Tensor | None = None

    @property
    def tiling(self) -> "Tiling":
        return Tiling(self.geometry.tiling())

    @classmethod
    def of_model(cls, model: "ZooModel") -> "Lattice":
        geometry = model.geometry
        if geometry.dilation != (1, 1):
            raise ValueError(f"model {model.name!r}: dilated first layers are not supported")
        return cls(geometry, model.mean, model.std)

    @classmethod
    def resolve(cls, params: LatticeParams, context: "AttackContext | None") -> "Lattice | None":
        """Explicit numbers win; else the named model; else the authorized model; None without a context."""
        if params.kernel is not None:
            kernel = _pair(params.kernel)
            stride = _pair(params.stride) if params.stride is not None else kernel
            return cls(ConvGeometry(kernel, stride, _pair(params.padding)))
        if context is None:
            return None
        model = context.model(params.geometry_model) if params.geometry_model else context.authorized
        return cls.of_model(model)


@dataclass(frozen=True)
class Tiling:
    """Non-overlapping tiles (a geometry with stride = kernel, e.g. ``ConvGeometry.tiling()``), as the ``patch``
    encoder tiles: kernel-sized, starting at -padding.

    Pixels outside every tile (remainder rows/columns) are left unchanged by :meth:`apply`; tiles that
    reach into the padding see zeros there, and what a map writes into the padding is dropped.
    """

    geometry: ConvGeometry

    def unfold_kwargs(self) -> dict:
        return self.geometry.unfold_kwargs()

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """All tiles of all images as rows (B*L x D), D = C*kh*kw in ``F.unfold`` order."""
        unfolded = F.unfold(images, **self.unfold_kwargs())
        return unfolded.transpose(1, 2).reshape(-1, unfolded.shape[1])

    def apply(self, images: torch.Tensor, fn) -> torch.Tensor:
        """images + fold(fn(U) - U) with U the tiles (B x L x D): changes only what ``fn`` changes."""
        unfolded = F.unfold(images, **self.unfold_kwargs()).transpose(1, 2)
        changed = fn(unfolded)
        delta = F.fold((changed - unfolded).transpose(1, 2), output_size=images.shape[-2:], **self.unfold_kwargs())
        return images + delta


def covariance(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) covariance of rows, in float64."""
    rows = rows.double()
    mean = rows.mean(0)
    centered = rows - mean
    return mean, centered.T @ centered / max(1, len(rows))


def _regularized(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    scale = float(torch.diagonal(cov).mean()) or 1.0
    return cov + ridge * scale * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)


def excess_variance_directions(
    released: torch.Tensor, clean: torch.Tensor | None, count: int, ridge: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis (D x count) of the directions with the most variance in ``released`` relative to ``clean``.

    Solves C_r v = lambda C_c v (C_c ridge-regularized by ``ridge`` x its mean variance) by whitening with
    the Cholesky factor of C_c and takes the ``count`` largest lambda. The generalized eigenvectors v are
    *filters* (they read the excess out); the excess itself lies along the *patterns* C_c v (for
    C_r = C_c + N with N of rank r, the top r patterns span range(N) exactly), so the returned basis is the
    orthonormalized span of the patterns. Without clean rows C_c is the identity (plain PCA of the released rows).
    Returns (basis, all generalized eigenvalues in descending order), on the released rows' device.
    """
    _, c_released = covariance(released)
    d, device = c_released.shape[0], c_released.device
    c_clean = (
        covariance(clean.to(device))[1]
        if clean is not None and len(clean) > 1
        else torch.eye(d, dtype=torch.float64, device=device)
    )
    chol = torch.linalg.cholesky(_regularized(c_clean, ridge))
    whitened = torch.linalg.solve_triangular(chol, c_released, upper=False)
    whitened = torch.linalg.solve_triangular(chol, whitened.T, upper=False).T
    values, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order], vectors[:, order]
    count = max(0, min(count, d))
    if count == 0:
        return torch.zeros(d, 0, dtype=torch.float64, device=device), values
    filters = torch.linalg.solve_triangular(chol.T, vectors[:, :count], upper=True)  # v: C_c-orthonormal
    patterns = chol @ (chol.T @ filters)  # C_c v = L u: where the excess variance lies (the noise directions)
    basis, _ = torch.linalg.qr(patterns)
    return basis, values


class SubspaceRemover:
    """Removes the component of D-vectors in span(V) and restores its best clean estimate.

    With a = V^T p (the coordinates to remove) and b = Q^T p (the orthogonal complement), the output is
    p - amount * V (a - a_hat), where a_hat is, by ``restore``:
    - ``regression``: E[a | b] under the clean prior's mean and covariance (linear least squares, ridge);
    - ``mean``: the clean prior mean of a;
    - ``none``: 0 (orthogonal projection onto the complement).
    Without clean rows, ``regression`` and ``mean`` fall back to ``none``.

    Fitted on the clean rows' device (else the basis's); applied on the device of the rows it is given, where
    it keeps a copy of its operators (made once per device).
    """

    def __init__(
        self, basis: torch.Tensor, clean: torch.Tensor | None, restore: Restore = "regression", ridge: float = 1e-3
    ) -> None:
        basis = basis.double()
        if clean is not None:
            basis = basis.to(clean.device)
        d, r = basis.shape
        self.basis = basis
        self.offset = torch.zeros(r, dtype=torch.float64, device=basis.device)
        self.gain = torch.zeros(d, r, dtype=torch.float64, device=basis.device)  # a_hat = offset + p @ gain
        self._placed: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        if r == 0 or clean is None or len(clean) < 2 or restore == "none":
            return
        mean, cov = covariance(clean)
        mean_a = mean @ basis
        if restore == "mean" or r == d:
            self.offset = mean_a
            return
        full, _ = torch.linalg.qr(basis, mode="complete")
        complement = full[:, r:]
        cov_ab = basis.T @ cov @ complement
        cov_bb = _regularized(complement.T @ cov @ complement, ridge)
        coefficients = torch.linalg.solve(cov_bb, cov_ab.T).T  # r x (D - r)
        self.gain = complement @ coefficients.T  # D x r
        self.offset = mean_a - (mean @ complement) @ coefficients.T

    def operators(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(basis, offset, gain) on ``device``, copied there once."""
        if device not in self._placed:
            self._placed[device] = (self.basis.to(device), self.offset.to(device), self.gain.to(device))
        return self._placed[device]

    def __call__(self, rows: torch.Tensor, amount: float = 1.0) -> torch.Tensor:
        if self.basis.shape[1] == 0 or amount == 0:
            return rows
        basis, offset, gain = self.operators(rows.device)
        flat = rows.double()
        coordinates = flat @ basis
        estimate = offset + flat @ gain
        return (flat - amount * (coordinates - estimate) @ basis.T).to(rows.dtype)


def energy_fraction(rows: torch.Tensor, basis: torch.Tensor) -> float:
    """Share of the (uncentered) energy of rows that lies in span(basis)."""
    rows = rows.double()
    total = float(rows.pow(2).sum())
    return float((rows @ basis.double().to(rows.device)).pow(2).sum()) / total if total > 0 else 0.0


def first_layer_tiles(model: "ZooModel", tau: float) -> tuple[Tiling, torch.Tensor]:
    """The tiling of a model's stem (kernel-sized tiles at its padding offset) and its pixel-space V_N (D x k),
    the subspace the ``patch`` encoder draws from."""
    return Tiling(model.geometry.tiling()), pixel_space_subspace(model, tau).basis.double()


def not_fitted(name: str) -> RuntimeError:
    return RuntimeError(f"attack {name!r} needs fit(context) first (the runner calls it once per encoding group)")
