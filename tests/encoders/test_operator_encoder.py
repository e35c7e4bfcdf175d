"""The ``operator`` encoder: exact PSNR, determinism, first-layer response within the reported sigma range,
and a much smaller authorized first-layer response than the ``patch`` encoder on an overlapping stem."""

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import ZooModel, build_model
from tests.encoders.stems import PRE, RESNET, STEMS

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    **STEMS,
    "deep_stem": ModelSpec(
        name="deep",
        arch="resnet18",
        preprocess=PRE,
        first_conv="conv1.0",
        kwargs=dict(in_chans=1, stem_type="deep", stem_width=8, **RESNET),
    ),
    "grouped_dilated": ModelSpec(
        name="grp",
        arch="resnet18",
        kwargs=dict(in_chans=2, **RESNET),
        preprocess={"input_size": [2, 16, 16], "mean": [0.3, 0.5], "std": [0.4, 0.2]},
    ),
}


def build(name: str) -> ZooModel:
    torch.manual_seed(0)
    model = build_model(MODELS[name])
    if name == "grouped_dilated":  # a stem with groups and dilation (same 8x8 output grid as the 7x7/s2 stem)
        model.net.conv1 = nn.Conv2d(2, 64, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return build(request.param)


def images(model: ZooModel, count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, *model.input_size, generator=torch.Generator().manual_seed(seed))


def first_layer_gain(model: ZooModel, clean: torch.Tensor, released: torch.Tensor) -> torch.Tensor:
    """||A n|| / ||n|| per image: the change of the authorized first layer (bias cancels) per unit pixel noise."""
    conv = model.first_conv
    with torch.no_grad():
        change = conv._conv_forward(model.normalize(released) - model.normalize(clean), conv.weight, None)
    return change.flatten(1).norm(dim=1) / (released - clean).flatten(1).norm(dim=1)


@pytest.mark.parametrize("target", [0.0, 12.5, 40.0])
def test_standard_psnr_is_hit_exactly_per_image(model, target):
    x = images(model)
    encoding = ENCODERS.create("operator").encode(x, model, target, torch.Generator().manual_seed(3))
    assert torch.allclose(encoding.achieved_psnr, torch.full((4,), target, dtype=torch.float64), atol=1e-3)


def test_same_key_gives_identical_bytes_and_another_key_does_not(model):
    x = images(model)
    encoder = ENCODERS.create("operator")
    first = encoder.encode(x, model, 10.0, torch.Generator().manual_seed(5)).images
    again = ENCODERS.create("operator").encode(x, model, 10.0, torch.Generator().manual_seed(5)).images
    other = encoder.encode(x, model, 10.0, torch.Generator().manual_seed(6)).images
    assert first.numpy().tobytes() == again.numpy().tobytes()
    assert not torch.equal(first, other)


def test_first_layer_response_lies_in_the_reported_sigma_range(model):
    x = images(model)
    encoding = ENCODERS.create("operator").encode(x, model, 5.0, torch.Generator().manual_seed(2))
    info = encoding.info
    assert info["k"] == 64 and info["converged"] + info["ritz_settled"] == 1.0
    assert 0.0 <= info["sigma_min"] <= info["sigma_s"] <= info["sigma_max_operator"]
    gain = first_layer_gain(model, x, encoding.images)
    slack = 1e-5 * info["sigma_max_operator"]  # float32 images and basis
    assert bool((gain <= info["sigma_s"] * (1 + 1e-4) + slack).all())
    assert bool((gain >= info["sigma_min"] * (1 - 1e-4) - slack).all())


def test_an_operator_null_space_leaves_the_authorized_model_unchanged():
    vit = build("patchify_null")  # 12 x 16 patch matrix: 4 null directions x 16 windows = 64 exact null directions
    x = images(vit)
    encoding = ENCODERS.create("operator").encode(x, vit, 0.0, torch.Generator().manual_seed(1))
    assert encoding.info["exact_null"] == 64 and encoding.info["sigma_s"] < 1e-6 * encoding.info["sigma_max_operator"]
    with torch.no_grad():
        assert torch.allclose(vit(encoding.images), vit(x), atol=1e-3)


@pytest.mark.parametrize("k, bound", [(4, 0.25), (64, 0.8)])
def test_operator_noise_moves_an_overlapping_stem_much_less_than_patch_noise(k, bound):
    deep = build("deep_stem")  # 3x3/s2 pad 1, 8 x 9: exact patch-level null space, injective operator
    x = images(deep, count=8)
    operator = ENCODERS.create("operator", {"k": k}).encode(x, deep, 10.0, torch.Generator().manual_seed(1))
    patch = ENCODERS.create("patch").encode(x, deep, 10.0, torch.Generator().manual_seed(1))
    assert torch.allclose(operator.achieved_psnr, patch.achieved_psnr, atol=1e-3)  # same noise energy
    ratio = float(first_layer_gain(deep, x, operator.images).mean() / first_layer_gain(deep, x, patch.images).mean())
    print(f"operator/patch first-layer response, deep stem, k={k}: {ratio:.3f}")
    assert ratio < bound
    assert (
        operator.info["patch_sigma_s"] == 0.0 and operator.info["exact_null"] == 0
    )  # the patch null is not an image null


def fashion_zoo_models() -> list:
    specs = load_zoo(ROOT / "suites/zoo/fashion.yaml").models
    return [pytest.param(spec, id=spec.name) for spec in specs if spec.name != "vit_b"]  # vit_b: vit_a's geometry


@pytest.mark.parametrize("spec", fashion_zoo_models())
def test_every_fashion_zoo_stem_geometry_encodes(spec):
    torch.manual_seed(spec.seed)
    model = ZooModel(spec, timm.create_model(spec.arch, pretrained=False, **spec.kwargs))  # untrained is enough here
    x = images(model, count=2)
    encoding = ENCODERS.create("operator").encode(x, model, 10.0, torch.Generator().manual_seed(0))
    assert torch.allclose(encoding.achieved_psnr, torch.full((2,), 10.0, dtype=torch.float64), atol=1e-3)
    gain = first_layer_gain(model, x, encoding.images)
    assert bool((gain <= encoding.info["sigma_s"] * (1 + 1e-4) + 1e-5 * encoding.info["sigma_max_operator"]).all())
    assert encoding.info["converged"] + encoding.info["ritz_settled"] == 1.0  # not stopped by the iteration cap


ENCODE_IN_A_FRESH_PROCESS = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from tests.encoders.test_operator_encoder import build, images
from nonxfer_bench.encoders import ENCODERS
model = build(sys.argv[2])
x = images(model, count=3)
encoding = ENCODERS.create("operator", {"k": 8}).encode(x, model, 20.0, torch.Generator().manual_seed(7))
torch.save(encoding.images, sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["overlapping", "patchify_null"])
def test_a_release_is_a_function_of_its_key_and_inputs_not_of_the_thread_count(name, tmp_path):
    """The operator subspace of a small input is exact (dense Gram matrix) and the noise a projection onto it,
    so 1 and 2 torch threads release the same images (they differed by up to 4.45 pixel units before)."""
    import subprocess
    import sys

    released = {}
    for threads in (1, 2):
        path = tmp_path / f"{threads}.pt"
        subprocess.run(
            [sys.executable, "-c", ENCODE_IN_A_FRESH_PROCESS, str(threads), name, str(path)],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        released[threads] = torch.load(path)
    assert (released[1] - released[2]).abs().max() < 1e-5


def test_the_dense_subspace_is_the_exact_smallest_spectrum():
    from nonxfer_bench.linalg.operator import dense_operator_matrix, operator_subspace

    model = build("overlapping")
    subspace = operator_subspace(model.first_conv, (1, 16, 16), 6, input_scale=model.pixel_scale())
    dense = dense_operator_matrix(model.first_conv, (1, 16, 16), model.pixel_scale())
    exact = torch.linalg.svdvals(dense).flip(0)[:6]
    assert subspace.stop == "dense" and subspace.converged
    assert torch.allclose(subspace.singular_values.double(), exact, rtol=1e-8, atol=1e-10)


def test_the_basis_reaches_the_images_device_and_dtype_once_per_subspace():
    """The float64 basis is converted for the batch once, not per batch (on a GPU: one host-to-device copy)."""
    from nonxfer_bench.encoders.operator import pixel_space_operator_subspace

    deep = build("deep_stem")
    encoder = ENCODERS.create("operator", {"k": 4})
    x = images(deep, count=2)
    subspace = pixel_space_operator_subspace(deep, tuple(x.shape[1:]), encoder.params)
    basis = encoder.basis(subspace, x)
    assert basis.dtype == x.dtype and basis.device == x.device and basis.shape == (4, x[0].numel())
    assert encoder.basis(subspace, images(deep, count=3, seed=1)) is basis  # another batch: the same tensor
    assert encoder.basis(subspace, x.double()).dtype == torch.float64  # another dtype: its own conversion
    first = encoder.encode(x, deep, 10.0, torch.Generator().manual_seed(1)).images
    assert torch.equal(
        first, ENCODERS.create("operator", {"k": 4}).encode(x, deep, 10.0, torch.Generator().manual_seed(1)).images
    )


def test_the_solve_time_estimate_times_a_cpu_copy_of_the_layer(monkeypatch):
    """The cold-cache estimate builds its operator on the CPU whatever the layer's device (it built it on the layer's
    and crashed on CUDA against its CPU test tensors; tests/test_cuda_path.py runs it on a pretend CUDA device)."""
    from nonxfer_bench.encoders import operator

    seen = []
    real = operator.ConvOperator.of
    monkeypatch.setattr(operator.ConvOperator, "of", lambda *a, **k: seen.append(k.get("device")) or real(*a, **k))
    deep = build("deep_stem")
    assert operator.estimate_solve_seconds(deep.first_conv, (1, 16, 16), 4, deep.pixel_scale(), 100) > 0
    assert seen == ["cpu"]
