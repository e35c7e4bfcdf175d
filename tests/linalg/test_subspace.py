"""The patch-level subspace: exact null spaces, the tau rule and the k = 1 fallback."""

import torch
from torch import nn

from nonxfer_bench.linalg.geometry import ConvGeometry
from nonxfer_bench.linalg.subspace import flatten_weight, patch_subspace


def test_exact_null_space_is_annihilated_when_d_exceeds_m():
    weight = torch.randn(6, 3 * 2 * 2)  # m = 6 < D = 12
    subspace = patch_subspace(weight)
    assert subspace.exact_null_space and subspace.k == 6 and subspace.sigma_s == 0.0
    assert torch.allclose(weight @ subspace.basis, torch.zeros(6, 6), atol=1e-5)
    assert torch.allclose(subspace.basis.T @ subspace.basis, torch.eye(6), atol=1e-5)


def test_full_rank_falls_back_to_the_smallest_direction():
    weight = torch.randn(16, 9)  # m = 16 > D = 9, full rank: no singular value below tau
    subspace = patch_subspace(weight, tau=1e-5)
    assert not subspace.exact_null_space and subspace.k == 1
    direction = torch.randn(9) @ subspace.basis @ subspace.basis.T
    s_min = torch.linalg.svdvals(weight).min()
    assert torch.isclose((weight @ direction).norm(), s_min * direction.norm(), rtol=1e-4)
    assert abs(subspace.sigma_s - float(s_min)) < 1e-5


def test_tau_selects_every_singular_value_below_it():
    u, _ = torch.linalg.qr(torch.randn(10, 10))
    v, _ = torch.linalg.qr(torch.randn(8, 8))
    spectrum = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 1e-3, 1e-4, 1e-6])
    weight = u[:, :8] @ torch.diag(spectrum) @ v.T
    assert patch_subspace(weight, tau=1e-2).k == 3
    assert patch_subspace(weight, tau=1e-5).k == 1


def test_geometry_tells_overlapping_from_patchifying_stems():
    assert ConvGeometry.of(nn.Conv2d(3, 64, 7, stride=2, padding=3)).overlapping
    assert not ConvGeometry.of(nn.Conv2d(3, 768, 16, stride=16)).overlapping
    assert flatten_weight(nn.Conv2d(3, 8, 4, stride=4)).shape == (8, 48)
