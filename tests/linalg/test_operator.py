"""Operator-level subspace: matrix-free LOBPCG against a dense SVD, adjoints, circular spectrum, null spaces."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from nonxfer_bench.linalg.operator import (
    ConvOperator,
    cached_operator_subspace,
    circular_spectrum,
    dense_operator_matrix,
    operator_subspace,
    patch_level,
    patch_matrix,
)

# name: (conv constructor arguments, input shape); every geometry the issue names, on grids small enough
# for a dense SVD. Odd sizes exercise conv_transpose2d's output_padding.
GEOMETRIES = {
    "overlap_3x3_s1": (dict(in_channels=2, out_channels=6, kernel_size=3, stride=1, padding=1), (2, 10, 10)),
    "overlap_3x3_s2_odd": (dict(in_channels=2, out_channels=6, kernel_size=3, stride=2, padding=1), (2, 11, 9)),
    "resnet_7x7_s2_p3": (dict(in_channels=1, out_channels=16, kernel_size=7, stride=2, padding=3), (1, 14, 14)),
    "resnet_7x7_s2_p3_rgb": (dict(in_channels=3, out_channels=24, kernel_size=7, stride=2, padding=3), (3, 12, 12)),
    "patchify_4x4_s4": (dict(in_channels=1, out_channels=8, kernel_size=4, stride=4), (1, 16, 16)),
    "patchify_4x4_s4_remainder": (dict(in_channels=1, out_channels=20, kernel_size=4, stride=4), (1, 18, 18)),
    "dilation_2": (dict(in_channels=2, out_channels=8, kernel_size=3, stride=1, padding=2, dilation=2), (2, 9, 9)),
    "groups_2": (dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, padding=1, groups=2), (4, 8, 8)),
    "stride_exceeds_kernel": (dict(in_channels=1, out_channels=8, kernel_size=2, stride=3), (1, 12, 12)),
    "circular_5x5_s2": (
        dict(in_channels=1, out_channels=8, kernel_size=5, stride=2, padding=2, padding_mode="circular"),
        (1, 12, 12),
    ),
    # timm's TF-"same" stem (tf_efficientnet_*): padding 0, padded inside the forward, asymmetric on this grid
    "tf_same_3x3_s2": (dict(in_channels=2, out_channels=6, kernel_size=3, stride=2, same=True), (2, 10, 9)),
}
TOLERANCE = 1e-7  # |sigma_i(operator) - sigma_i(dense)| <= TOLERANCE * ||A||, for solver tol 1e-10


def make_conv(name: str, seed: int = 0) -> tuple[nn.Conv2d, tuple[int, int, int]]:
    torch.manual_seed(seed)
    arguments, shape = GEOMETRIES[name]
    arguments = dict(arguments)
    layer = Conv2dSame if arguments.pop("same", False) else nn.Conv2d
    return layer(**arguments), shape


def dense_singular_values(conv: nn.Conv2d, shape, scale=None) -> torch.Tensor:
    """All C*H*W singular values of the dense operator, ascending, with zeros for a wide rank deficit."""
    matrix = dense_operator_matrix(conv, shape, scale)
    values = torch.linalg.svdvals(matrix)
    full = values.new_zeros(matrix.shape[1])
    full[: values.numel()] = values
    return full.sort().values


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_forward_matches_the_layer_and_the_adjoint_is_exact(name):
    conv, shape = make_conv(name)
    operator = ConvOperator.of(conv, shape)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y = torch.randn(3, *operator.output_shape, dtype=torch.float64)
    with torch.no_grad():
        layer = conv(x.float()) - conv.bias.view(1, -1, 1, 1)
    assert torch.allclose(operator.forward(x).float(), layer, atol=1e-5)
    assert operator.adjoint(y).shape == x.shape
    inner_forward, inner_adjoint = (operator.forward(x) * y).sum(), (x * operator.adjoint(y)).sum()
    assert abs(float(inner_forward - inner_adjoint)) <= 1e-12 * float(inner_forward.abs() + 1)


@pytest.mark.parametrize("method", ["lobpcg", "dense"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_smallest_singular_values_equal_the_dense_svd(name, method):
    conv, shape = make_conv(name)
    k = 8
    subspace = operator_subspace(conv, shape, k, tol=1e-10, method=method)
    dense = dense_singular_values(conv, shape)
    assert subspace.converged
    assert abs(subspace.sigma_max_operator - float(dense[-1])) <= 1e-9 * float(dense[-1])
    assert torch.allclose(subspace.singular_values, dense[:k], rtol=0, atol=TOLERANCE * float(dense[-1]))
    basis = subspace.basis.flatten(1)
    assert torch.allclose(basis @ basis.T, torch.eye(k, dtype=basis.dtype), atol=1e-10)
    # each basis image is a right-singular vector: ||A v_i|| = sigma_i, and A^T A v_i = sigma_i^2 v_i
    operator = ConvOperator.of(conv, shape)
    response = operator.forward(subspace.basis).flatten(1).norm(dim=1)
    assert torch.allclose(response, subspace.singular_values, atol=1e-10 * float(dense[-1]))
    gram = operator.gram(subspace.basis).flatten(1)
    residual = (gram - subspace.singular_values.pow(2).view(-1, 1) * basis).norm(dim=1)
    assert float(residual.max()) <= 1e-8 * float(dense[-1]) ** 2


def test_the_pixel_space_scale_is_the_operator_of_weight_over_std():
    conv, shape = make_conv("resnet_7x7_s2_p3_rgb")
    inverse_std = 1.0 / torch.tensor([0.229, 0.224, 0.225])
    subspace = operator_subspace(conv, shape, 6, tol=1e-10, input_scale=inverse_std)
    scaled = nn.Conv2d(3, 24, 7, 2, 3)
    with torch.no_grad():
        scaled.weight.copy_(conv.weight * inverse_std.view(1, -1, 1, 1))
    dense = dense_singular_values(scaled, shape)
    assert torch.allclose(subspace.singular_values, dense[:6], rtol=0, atol=TOLERANCE * float(dense[-1]))


def test_overlapping_stems_are_injective_and_patchify_stems_with_d_above_m_are_not():
    resnet, shape = make_conv("resnet_7x7_s2_p3")  # 16 x 49 patch matrix: exact patch-level null space...
    assert patch_level(resnet).exact_null_space and patch_level(resnet).sigma_s == 0.0
    injective = operator_subspace(resnet, shape, 4, tol=1e-10)
    assert injective.exact_null_count() == 0  # ...but the whole operator sees every image
    assert injective.sigma_min > 1e-3 * injective.sigma_max_operator
    patchify, shape = make_conv("patchify_4x4_s4")  # 8 x 16: 8 null directions per window, 16 windows
    null = operator_subspace(patchify, shape, 32, tol=1e-10)
    assert null.exact_null_count() == 32 and null.sigma_s <= 1e-7 * null.sigma_max_operator
    unseen, shape = make_conv("stride_exceeds_kernel")  # 2x2/s3: 5 of every 9 pixels are never read
    blind = operator_subspace(unseen, shape, 16, tol=1e-10)
    assert blind.exact_null_count() == 16


def test_remainder_pixels_of_a_patchify_stem_are_an_exact_null_space():
    conv, shape = make_conv("patchify_4x4_s4_remainder")  # 20 x 16: full rank, but rows/cols 16, 17 unseen
    subspace = operator_subspace(conv, shape, 8, tol=1e-10)
    assert subspace.exact_null_count() == 8
    energy_outside = subspace.basis[..., :16, :16].pow(2).sum()
    assert float(energy_outside) <= 1e-12


def test_circular_spectrum_equals_the_dense_svd_of_a_circular_layer():
    conv, shape = make_conv("circular_5x5_s2")
    assert torch.allclose(circular_spectrum(conv, shape), dense_singular_values(conv, shape), atol=1e-10)
    torch.manual_seed(1)
    grouped = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="circular")
    assert torch.allclose(circular_spectrum(grouped, (4, 8, 8)), dense_singular_values(grouped, (4, 8, 8)), atol=1e-10)


def test_solver_without_preconditioner_agrees():
    conv, shape = make_conv("overlap_3x3_s1")
    plain = operator_subspace(conv, shape, 6, tol=1e-10, precondition=False, method="lobpcg")
    preconditioned = operator_subspace(conv, shape, 6, tol=1e-10, method="lobpcg")
    assert torch.allclose(plain.singular_values, preconditioned.singular_values, atol=1e-8)


def test_grouped_patch_matrix_is_block_diagonal_and_reproduces_the_layer():
    conv, shape = make_conv("groups_2")
    matrix = patch_matrix(conv).float()
    assert matrix.shape == (8, 4 * 9) and float(matrix[:4, 18:].abs().max()) == 0.0
    x = torch.randn(2, *shape)
    patches = F.unfold(x, kernel_size=3, stride=2, padding=1)
    with torch.no_grad():
        expected = (conv(x) - conv.bias.view(1, -1, 1, 1)).flatten(2)
    assert torch.allclose(matrix @ patches, expected, atol=1e-5)


def test_cache_returns_the_same_basis_and_distinguishes_weights():
    conv, shape = make_conv("overlap_3x3_s1")
    first = cached_operator_subspace(conv, shape, 4, 1e-8)
    assert cached_operator_subspace(conv, shape, 4, 1e-8) is first
    other, _ = make_conv("overlap_3x3_s1", seed=1)
    assert cached_operator_subspace(other, shape, 4, 1e-8) is not first


def test_k_outside_the_input_dimension_is_refused():
    conv, shape = make_conv("overlap_3x3_s1")
    with pytest.raises(ValueError, match="k="):
        operator_subspace(conv, shape, 201)


def test_ritz_stop_gives_upper_bounds_close_to_the_dense_values():
    conv, shape = make_conv("resnet_7x7_s2_p3_rgb")
    settled = operator_subspace(
        conv, shape, 8, tol=1e-300, ritz_tol=1e-6, method="lobpcg"
    )  # residual tolerance unreachable
    dense = dense_singular_values(conv, shape)[:8]
    assert settled.stop == "ritz" and not settled.converged
    assert bool((settled.singular_values >= dense - 1e-12).all())  # Ritz values bound from above
    assert torch.allclose(settled.singular_values, dense, rtol=1e-4, atol=0)


DISK_PROBE = """
import sys
import torch
import nonxfer_bench.linalg.operator as operator
from tests.linalg.test_operator import make_conv

conv, shape = make_conv("resnet_7x7_s2_p3_rgb")
if sys.argv[1] == "load":  # a second process must read the basis from disk, never solve
    def refuse(*args, **kwargs):
        raise AssertionError("solved again")
    operator.operator_subspace = refuse
scale = torch.tensor([2.0, 3.0, 4.0])
result = operator.cached_operator_subspace(conv, shape, 6, float(sys.argv[2]), input_scale=scale, max_iter=300)
total = float(result.basis.double().abs().sum())
print(result.basis.dtype, total, result.singular_values.tolist(), result.stop, result.converged)
"""


@pytest.mark.slow
def test_a_second_process_loads_the_basis_from_disk_and_other_settings_solve_again(tmp_path):
    import os
    import subprocess
    import sys

    env = os.environ | {"NXB_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}

    def probe(mode: str, tol: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", DISK_PROBE, mode, tol],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )

    solved = probe("solve", "1e-8")
    assert solved.returncode == 0, solved.stderr
    assert list((tmp_path / "operator").glob("*.npy"))
    loaded = probe("load", "1e-8")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == solved.stdout  # the same basis, singular values and solver report, bit for bit
    other = probe("load", "1e-6")  # another tolerance is another basis: it is not taken from the cache
    assert other.returncode != 0 and "solved again" in other.stderr
    env["OMP_NUM_THREADS"] = "2"  # a solve's bits depend on torch's threads: another count solves its own basis
    threads = probe("load", "1e-8")
    assert threads.returncode != 0 and "solved again" in threads.stderr
