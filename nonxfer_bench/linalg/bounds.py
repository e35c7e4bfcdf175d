"""Bound tightness: what the NE theory predicts for one encoding group, next to what is observed.

Computed once per encoding group on (the first images of) its first batch, from the authorized
:class:`ZooModel`, the clean images, the released ones and every evaluated zoo model. The formulas are
those of NE-NOTES "Quantities for bound tightness"; every number is returned under a flat ``bound/...``
name (JSON cells, MLflow metrics). A quantity that does not apply is None, with a ``bound/..._na``
string saying why where that is not obvious.

Conventions
-----------
* The perturbation is d = released - clean, both in [0, 1] pixel units. The authorized layer sees it in
  its *normalized* space, d / std_A (the mean cancels), unfolded with the authorized stem geometry into
  patches d_l (D = C_in kh kw, ``F.unfold`` order); ``||W d_l||`` is that layer's output change (the bias
  cancels). For the ``reference`` encoder on an overlapping stem, ``F.fold`` sums windows, so the folded
  release's "perturbation" contains the clean content multiplied by the window count; the authorized
  layer is then measured, as the published protocol evaluates it, on ``Encoding.flat_input``
  minus the unfolded clean tensor (exactly n per patch).
* sigma_S is the largest singular value over the chosen low-sensitivity directions of the matrix the
  encoder works with: W (normalized space, ``tau`` of the encoder) for ``reference``, W_eff = W diag(1/std)
  (pixel space) for ``patch``. Both give the same layer output; ``||d_l||`` is measured in the same space
  as sigma_S. For an exact null space sigma_S = 0: the ratio observed/predicted is undefined, so the
  observed absolute deviation (``auth_layer_obs_*``) and its ratio to ``||W|| ||d_l||`` (``auth_layer_rel_*``,
  also reported for every encoder) are given instead.
  ``operator`` noise is not per patch: its bound ||A d|| <= sigma_s ||d|| is checked on the whole image with
  the encoder's own sigma_s (``Encoding.info``). ``gaussian``/``clean`` have no subspace: only the relative
  numbers apply, and the misalignment uses the authorized W_eff's patch subspace (tau 1e-5) as a control.
* Expectation: for d_l = V c z, z ~ N(0, I_k), E||W d_l||^2 = c^2 sum_{i in S} sigma_i^2 and E||d_l||^2 =
  c^2 k, so the c-free ratio (sum_l ||W d_l||^2 / sum_l ||d_l||^2) / (mean_{i in S} sigma_i^2) should be 1
  (``auth_layer_ms_ratio``; None for an exact null space).
* Cross-model numbers use the common raw-pixel space: W'_eff = W' diag(1/std'_c). The encoder's noise
  directions in pixel units are B = diag(std_A) V_N (reference) or V_N of W_eff (patch); Q is an
  orthonormal basis of span(B). Misalignment = ||W'_eff Q||_F / ||W'_eff||_F (needs the same D).
  Hoffman-Wielandt (same m x D): hw_lhs = sum_i (sigma_i(W_eff) - sigma_i(W'_eff))^2 <= hw_rhs =
  ||W_eff - W'_eff||_F^2.
* Unauthorized first layer of the same geometry and shape: predicted RMS per-patch response
  sqrt(c^2 ||W'_eff B||_F^2) with c^2 estimated as mean_l ||d_l||^2 / ||B||_F^2, observed RMS
  sqrt(mean_l ||W'_eff d_l||^2) on the released pixels (what that model actually sees). For other models
  only the observed RMS response of their own first layer on the released image (``unauth_layer_obs``) and
  its ratio to the clean response (``unauth_layer_obs_rel``).
* L_g: the spectral norm of the Jacobian of the rest of the authorized network (first-layer output ->
  logits) at a few clean inputs, by power iteration on J^T J (J v by forward-mode, J^T u by backward);
  the maximum over those images. It is a *local* Lipschitz estimate and a lower bound of the global
  constant, so the logit "bound" L_g sigma_S ||d|| is not guaranteed; ||d|| is the unfolded norm
  sqrt(sum_l ||d_l||^2), since ||h(x') - h(x)|| <= sigma_S sqrt(sum_l ||d_l||^2).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from nonxfer_bench.linalg.flat_input import FlatInput
from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.model import FirstLayerModel
from nonxfer_bench.linalg.subspace import DEFAULT_TAU, NoiseSubspace, unfold_columns

PREFIX = "bound/"
NOT_COMPUTED = (
    PREFIX + "computed"
)  # false on the baseline cells of a run without bounds (suite 'bounds: false', run --no-bounds)
# numbers that belong to one evaluated model (on that model's identity cell); the rest describe the group
MODEL_KEYS = frozenset(
    f"bound/{k}"
    for k in (
        "misalignment",
        "hw_lhs",
        "hw_rhs",
        "hw_ratio",
        "unauth_layer_obs",
        "unauth_layer_obs_rel",
        "unauth_layer_pred",
        "unauth_layer_obs_patch",
    )
)


def finite_or_none(value: Any) -> float | None:
    """A finite float rounded for JSON, else None."""
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


class NoiseSource(Protocol):
    """What the bounds need of an encoder (``nonxfer_bench.encoders.Encoder`` is one)."""

    name: str
    params: Any

    def noise_subspace(self, model: FirstLayerModel) -> NoiseSubspace | None: ...


def misalignment(weight_eff: torch.Tensor, basis: torch.Tensor) -> float:
    """||W'_eff Q||_F / ||W'_eff||_F with Q an orthonormal basis of span(basis) (pixel space, same D)."""
    q, _ = torch.linalg.qr(basis.double())
    return float((weight_eff.double() @ q).norm() / weight_eff.double().norm())


def hoffman_wielandt(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(sum_i (sigma_i(A) - sigma_i(B))^2, ||A - B||_F^2, their ratio) for same-shape matrices."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.double(), b.double()
    lhs = float((torch.linalg.svdvals(a) - torch.linalg.svdvals(b)).pow(2).sum())
    rhs = float((a - b).pow(2).sum())
    return lhs, rhs, (lhs / rhs if rhs > 0 else float("nan"))


def encoder_subspace(model: FirstLayerModel, encoder: NoiseSource) -> tuple[NoiseSubspace, bool]:
    """(the directions the numbers refer to, whether the encoder draws its noise from them).

    An encoder without a patch subspace (``gaussian``, ``clean``, ``operator``) gets W_eff's subspace at its
    ``tau`` (default 1e-5) as the control for the cross-model numbers.
    """
    drawn = encoder.noise_subspace(model)
    if drawn is not None:
        return drawn, True
    return NoiseSubspace.pixel(model, float(getattr(encoder.params, "tau", DEFAULT_TAU))), False


def _local_lipschitz(model: FirstLayerModel, clean: torch.Tensor, iterations: int = 8, seed: int = 0) -> float | None:
    """max over images of ||J_g(h(x))||_2 by power iteration (g: first-layer output -> logits)."""
    conv = model.first_conv
    state: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        if "h" in state:
            return state["h"]
        state["h0"] = output.detach()
        return output

    handle = conv.register_forward_hook(hook)
    # fused attention kernels (timm ``fused_attn``) have no double backward: use the math path meanwhile
    fused = [(m, m.fused_attn) for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m, _ in fused:
        m.fused_attn = False
    try:
        with torch.no_grad():
            model(clean)
        h0 = state.pop("h0")

        def g(h: torch.Tensor) -> torch.Tensor:
            state["h"] = h
            try:
                return model(clean)
            finally:
                state.pop("h", None)

        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(h0.shape, generator=generator).to(h0)
        sigma = torch.zeros(len(h0))
        with torch.enable_grad():
            for _ in range(iterations):
                v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))
                _, jv = torch.autograd.functional.jvp(g, h0, v)
                _, jtjv = torch.autograd.functional.vjp(g, h0, jv)
                sigma = jv.flatten(1).norm(dim=1)
                v = jtjv
    finally:
        handle.remove()
        for m, value in fused:
            m.fused_attn = value
    return float(sigma.max())


def _unfold_norm(tensor: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    return F.unfold(tensor, **geometry.unfold_kwargs())


def _first_layer_response(model: FirstLayerModel, images: torch.Tensor) -> torch.Tensor:
    """The first conv's output minus its bias on [0, 1] images (prepare + normalize first)."""
    conv = model.first_conv
    out = conv(model.normalize(model.prepare(images)))
    if conv.bias is not None:
        out = out - conv.bias.view(1, -1, 1, 1)
    return out


@torch.no_grad()
def group_bounds(
    authorized: FirstLayerModel,
    encoder: NoiseSource,
    clean: torch.Tensor,
    encoding,
    models: dict[str, FirstLayerModel],
    max_images: int = 128,
    lipschitz_images: int = 4,
    lipschitz_iterations: int = 8,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(group-level numbers, {model name: model-specific numbers}), all keys ``bound/...``.

    ``encoding`` is the :class:`~nonxfer_bench.encoders.Encoding` of ``clean`` (B x C x H x W, [0, 1], at the
    authorized input size). Only the first ``max_images`` images are used.
    """
    n = min(len(clean), max_images)
    clean = clean[:n].float()
    released = encoding.images[:n].float()
    flat_input = encoding.flat_input
    if flat_input is not None:  # the first n images only: the published flat input of the measured batch
        flat_input = FlatInput(flat_input.normalized[:n], flat_input.noise[:n], flat_input.geometry)
    noise, has_subspace = encoder_subspace(authorized, encoder)
    out: dict[str, Any] = {
        "bound/space": noise.space,
        "bound/k": noise.patch.k,
        "bound/exact_null": noise.patch.exact_null_space,
    }
    d_norm = _perturbation_patches(authorized, noise, clean, released, flat_input, out)
    std_cols = unfold_columns(authorized.std.double(), authorized.first_conv.kernel_size).view(1, -1, 1)
    d_space = d_norm if noise.space == "normalized" else d_norm * std_cols  # the patches in the subspace's own space
    out |= _first_layer_numbers(
        authorized, encoder, encoding.info, noise, has_subspace, (released - clean).double(), d_norm, d_space
    )
    lipschitz_clean = clean[: min(lipschitz_images, n)]
    out |= _logit_numbers(
        authorized,
        clean,
        released,
        flat_input,
        d_norm,
        d_space,
        noise.patch.sigma_s if has_subspace else 0.0,
        lipschitz_clean,
        lipschitz_iterations,
    )
    per_model = {
        name: _model_numbers(model, authorized, noise, has_subspace, clean, released) for name, model in models.items()
    }
    return out, per_model


def _perturbation_patches(
    authorized: FirstLayerModel,
    noise: NoiseSubspace,
    clean: torch.Tensor,
    released: torch.Tensor,
    flat_input: FlatInput | None,
    out: dict[str, Any],
) -> torch.Tensor:
    """(B, D, L): the perturbation's patches in the authorized layer's normalized space; ``out`` notes which."""
    geometry = authorized.geometry
    if flat_input is not None:  # published protocol for overlapping stems: U' - U is exactly n in every patch
        windows = geometry.output_size(*clean.shape[-2:])  # every window of the stem's output, TF-same ones included
        out["bound/auth_patches"] = "authorized_patches (unfolded, published protocol)"
        return flat_input.noise.double().expand(-1, -1, windows[0] * windows[1])
    if geometry.overlapping and noise.folded:
        out["bound/auth_patches"] = "folded release (includes rescaled clean content)"
    return _unfold_norm(((released - clean).double() / authorized.std.double()), geometry)


def _first_layer_numbers(
    authorized: FirstLayerModel,
    encoder: NoiseSource,
    info: dict[str, Any],
    noise: NoiseSubspace,
    has_subspace: bool,
    delta_pixel: torch.Tensor,
    d_norm: torch.Tensor,
    d_space: torch.Tensor,
) -> dict[str, Any]:
    """The authorized first layer's change per patch, ||W d_l||, against ``sigma_max ||d_l||`` and ``sigma_S
    ||d_l||``."""
    conv, geometry, subspace = authorized.first_conv, authorized.geometry, noise.patch
    weight = conv.weight.detach().double().flatten(1)  # normalized space
    response = torch.einsum("md,bdl->bml", weight, d_norm).norm(dim=1)  # ||W d_l||
    d_len = d_space.norm(dim=1)
    mask = d_len > 0
    sigma_max = float(torch.linalg.matrix_norm(weight if noise.space == "normalized" else authorized.pixel_weight(), 2))
    out: dict[str, Any] = {}
    if mask.any():
        obs, lengths = response[mask], d_len[mask]
        rel = obs / (sigma_max * lengths)
        out["bound/auth_layer_obs_median"] = finite_or_none(obs.median())
        out["bound/auth_layer_obs_p95"] = finite_or_none(torch.quantile(obs, 0.95))
        out["bound/auth_layer_rel_median"] = finite_or_none(rel.median())
        out["bound/auth_layer_rel_p95"] = finite_or_none(torch.quantile(rel, 0.95))
    sigma_s = subspace.sigma_s
    ratio_median = ratio_p95 = ms_ratio = None
    if has_subspace and mask.any() and sigma_s > 0:
        ratio = response[mask] / (sigma_s * d_len[mask])
        ratio_median, ratio_p95 = ratio.median(), torch.quantile(ratio, 0.95)
        expected_gain = float(subspace.selected_singular_values.double().pow(2).mean())
        ms_ratio = float(response[mask].pow(2).sum() / d_len[mask].pow(2).sum()) / expected_gain
    elif not has_subspace and info.get("sigma_s"):  # whole-image noise (operator): its own sigma_s
        image_obs = F.conv2d(
            delta_pixel / authorized.std.double(),
            conv.weight.double(),
            None,
            geometry.stride,
            geometry.padding,
            geometry.dilation,
            geometry.groups,
        )
        ratio = image_obs.flatten(1).norm(dim=1) / (
            float(info["sigma_s"]) * delta_pixel.flatten(1).norm(dim=1).clamp_min(1e-30)
        )
        ratio_median, ratio_p95 = ratio.median(), torch.quantile(ratio, 0.95)
        out["bound/auth_layer_na"] = f"{encoder.name} noise: whole-image ratio ||A d|| / (sigma_s ||d||)"
    elif not has_subspace:
        out["bound/auth_layer_na"] = f"{encoder.name}: no low-sensitivity subspace"
    else:
        out["bound/auth_layer_na"] = "exact null space: sigma_S = 0, see auth_layer_obs_* and auth_layer_rel_*"
    return out | {
        "bound/sigma_s": finite_or_none(sigma_s if has_subspace else info.get("sigma_s")),
        "bound/sigma_max": finite_or_none(sigma_max),
        "bound/auth_layer_ratio_median": finite_or_none(ratio_median),
        "bound/auth_layer_ratio_p95": finite_or_none(ratio_p95),
        "bound/auth_layer_ms_ratio": finite_or_none(ms_ratio),
    }


def _logit_numbers(
    authorized: FirstLayerModel,
    clean: torch.Tensor,
    released: torch.Tensor,
    flat_input: FlatInput | None,
    d_norm: torch.Tensor,
    d_space: torch.Tensor,
    sigma_s: float,
    lipschitz_clean: torch.Tensor,
    lipschitz_iterations: int,
) -> dict[str, Any]:
    """The authorized logits' change against the chain ``L sigma_S ||d||`` (subspace encoders, ``sigma_s`` > 0) and
    ``L ||dh||`` with the observed first-layer change, ``L`` a local Lipschitz estimate on ``lipschitz_clean``."""
    out: dict[str, Any] = {}
    lipschitz = None
    try:
        lipschitz = _local_lipschitz(authorized, lipschitz_clean, lipschitz_iterations)
    except Exception as error:  # noqa: BLE001 - a model the autograd path cannot differentiate
        out["bound/lipschitz_na"] = f"{type(error).__name__}: {str(error)[:200]}"
    conv = authorized.first_conv
    logits_clean = authorized(clean).double()
    logits_released = (
        authorized.forward_first_layer(released, flat_input.first_layer(conv.weight))
        if flat_input is not None
        else authorized(released)
    ).double()
    logit_dev = (logits_released - logits_clean).norm(dim=1)
    layer_dev = (
        torch.einsum("md,bdl->bml", conv.weight.detach().double().flatten(1), d_norm).flatten(1).norm(dim=1)
    )  # ||h(x') - h(x)||
    d_total = d_space.flatten(1).norm(dim=1)
    out["bound/lipschitz_estimate"] = finite_or_none(lipschitz)
    out["bound/auth_logit_obs"] = finite_or_none(logit_dev.median())
    if lipschitz and sigma_s > 0:
        out["bound/auth_logit_ratio"] = finite_or_none(
            (logit_dev / (lipschitz * sigma_s * d_total).clamp_min(1e-30)).median()
        )
    else:
        out["bound/auth_logit_ratio"] = None
    if lipschitz:  # the chain with the observed first-layer change: ||df|| <= L_g ||dh|| (local)
        keep = layer_dev > 0
        out["bound/auth_logit_ratio_layer"] = (
            finite_or_none((logit_dev[keep] / (lipschitz * layer_dev[keep])).median()) if keep.any() else None
        )
    return out


def _model_numbers(
    model: FirstLayerModel,
    authorized: FirstLayerModel,
    noise: NoiseSubspace,
    has_subspace: bool,
    clean: torch.Tensor,
    released: torch.Tensor,
) -> dict[str, Any]:
    """One evaluated model: its first layer's misalignment with the noise subspace, the Hoffman-Wielandt check against
    the authorized layer, and its observed (and, for the same stem geometry, predicted) first-layer response."""
    basis_pixel, weight_eff, geometry = noise.pixel_basis, authorized.pixel_weight(), authorized.geometry
    row: dict[str, Any] = {}
    try:
        other_eff = model.pixel_weight()
    except ValueError as error:
        other_eff = None
        row["bound/misalignment_na"] = str(error)
    if other_eff is not None:
        if other_eff.shape[1] == basis_pixel.shape[0]:
            row["bound/misalignment"] = finite_or_none(misalignment(other_eff, basis_pixel))
        else:
            row["bound/misalignment"] = None
            row["bound/misalignment_na"] = f"D = {other_eff.shape[1]} vs authorized {basis_pixel.shape[0]}"
        if other_eff.shape == weight_eff.shape:
            lhs, rhs, ratio = hoffman_wielandt(weight_eff, other_eff)
            row |= {
                "bound/hw_lhs": finite_or_none(lhs),
                "bound/hw_rhs": finite_or_none(rhs),
                "bound/hw_ratio": finite_or_none(ratio),
            }
        else:
            row |= {"bound/hw_lhs": None, "bound/hw_rhs": None, "bound/hw_ratio": None}
    # observed first-layer response of this model on the actual release
    try:
        delta_out = (_first_layer_response(model, released) - _first_layer_response(model, clean)).double()
        base = _first_layer_response(model, clean).double()
        positions = delta_out.shape[-2] * delta_out.shape[-1]
        row["bound/unauth_layer_obs"] = finite_or_none((delta_out.pow(2).sum((1, 2, 3)) / positions).mean().sqrt())
        row["bound/unauth_layer_obs_rel"] = finite_or_none(
            delta_out.flatten(1).norm(dim=1).median() / base.flatten(1).norm(dim=1).median().clamp_min(1e-30)
        )
    except Exception as error:  # noqa: BLE001 - never crash a run for a diagnostic
        row["bound/unauth_layer_obs"] = None
        row["bound/unauth_layer_na"] = f"{type(error).__name__}: {str(error)[:200]}"
    same = (
        other_eff is not None
        and other_eff.shape == weight_eff.shape
        and model.geometry == geometry
        and tuple(model.input_size) == tuple(authorized.input_size)
    )
    if same and has_subspace:
        d_pix = _unfold_norm((released - clean).double(), geometry)
        c2 = float(d_pix.pow(2).sum(1).mean()) / float(basis_pixel.pow(2).sum())
        row["bound/unauth_layer_pred"] = finite_or_none(math.sqrt(c2 * float((other_eff @ basis_pixel).pow(2).sum())))
        # the same model's response computed per patch of the pixel perturbation (equals obs for stems without padding)
        row["bound/unauth_layer_obs_patch"] = finite_or_none(
            torch.einsum("md,bdl->bml", other_eff, d_pix).pow(2).sum(1).mean().sqrt()
        )
    else:
        row["bound/unauth_layer_pred"] = None
        row["bound/unauth_layer_pred_na"] = (
            "needs a subspace encoder and the same first-layer geometry, shape and input size"
            if not same or not has_subspace
            else None
        )
    return row
