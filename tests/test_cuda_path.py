"""The CUDA path of every registered attack and encoder: on a pretend CUDA device here, on the real one where there is
one.

Pretend CUDA (runs on the CPU, in every test run): :class:`PretendCuda` makes ``device="cuda"`` work on a machine
without a GPU. Tensors sent to CUDA become :class:`CudaLike` tensors: they report ``cuda:0`` (``.device``,
``.is_cuda``) and hold real CPU data, and every operator they meet checks devices the way CUDA does (all tensors
of one operator on one device, CPU 0-dim scalars and CPU index tensors allowed; a generator must be on the device it
draws on; ``.numpy()`` refuses; ``torch.linalg.lstsq`` has only CUDA's ``gels`` driver) before it runs on the CPU
data. So an attack or encoder that makes a tensor on the CPU and meets a CUDA one fails here as it would on a GPU
("Expected all tensors to be on the same device"), and one that runs through computes what the CPU computes (up to
channels-last convolutions, which the models use on CUDA), which the tests compare with the CPU run.

Why not ``torch._subclasses.fake_tensor.FakeTensorMode``: fake tensors have no values, so any code that reads one
(``float(...)``, ``.item()``, ``.tolist()``, ``bool(a < b)``) stops with DataDependentOutputException. Every fitted
attack reads values while it fits (ridge scales, ranks, the fold-gain decision), the diffusion purifier lists its
timesteps with ``.tolist()``, cutout places its squares from drawn numbers and the torchattacks adapter reads the
batch's range: under FakeTensorMode only hand-assembled pieces of them could run (as the review's probe did), while
pretend CUDA runs each attack and encoder whole, fit included, and lets its values be checked.

What pretend CUDA covers: every registered attack (fit, attack, and ``adapt`` for the model-adapting ones) on the
Fashion-MNIST zoo, and every registered encoder on every stem geometry of that zoo (the operator encoder from a cold
subspace cache, so its up-front time estimate runs too). What it cannot cover, and why:

- numerics of CUDA kernels (cuDNN/cuBLAS/cuSOLVER rounding, TF32, nondeterministic kernels): it computes with CPU
  kernels; the tests marked ``cuda`` below compare the real device with the CPU within tolerances;
- the host libraries the CPU-only attacks call (PIL's libjpeg in ``jpeg_pil``, scikit-image in ``denoise_nlm``) run on
  the CPU on a GPU machine too: pretend CUDA checks only that their inputs come back from the device and their outputs
  go back to it;
- CUDA generators: the encoders that draw on the images' device (``gaussian``, ``patch``, ``operator`` through
  ``core.device.generator_on``) get a CPU generator standing in for a CUDA one (seeded the same way), so their
  pretend-CUDA draws are neither CUDA's nor the CPU's: those encoders are checked for device, exact PSNR and
  determinism, not compared with the CPU; the adaptation attacks that train on such encodings (``finetune``,
  ``augment_finetune``) likewise;
- the global CUDA random generator (PGD's random start draws from it): pretend CUDA draws from the CPU's;
- autocast (bf16/fp16 on CUDA), memory, streams (``torch.cuda.current_stream``/``synchronize``, which kornia calls,
  do nothing here) and multi-GPU placement.

Marked ``cuda`` (skipped without a GPU; benchmarks/gpu.py runs them on a lent machine): the same runs on the real
device, each compared with the CPU within the tolerance in :data:`TOLERANCES` where the attack is deterministic across
devices, with TF32 off so that float32 is float32. Attacks whose packages a machine lacks (diffusers, torchattacks:
benchmarks/gpu_bundle.py does not carry them) are skipped there, by name.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from nonxfer_bench.attacks import ATTACKS, Attack, testing
from nonxfer_bench.attacks.base import AttackContext
from nonxfer_bench.attacks.testing import check_shape_dtype_and_determinism, fitting_context
from nonxfer_bench.core import device as core_device
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.zoo import ZooModel
from tests.attacks.test_registry import deterministic_cuda, requires, spec_params  # noqa: F401 - deterministic_cuda: a fixture
from tests.helpers import encoders_with_defaults

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


# --- pretend CUDA ---------------------------------------------------------------------------------------------


class CudaLike(torch.Tensor):
    """A tensor that says it is on ``cuda:0`` and holds its values in ``data_``, a CPU tensor (see the module
    docstring)."""

    data_: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> "CudaLike":
        tensor = torch.Tensor._make_wrapper_subclass(
            cls, data.size(), strides=data.stride(), storage_offset=data.storage_offset(), dtype=data.dtype,
            layout=data.layout, device=data.device, requires_grad=data.requires_grad,
        )  # fmt: skip
        tensor.data_ = data
        return tensor

    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"CudaLike({self.data_!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        _check_devices(func, args, kwargs)
        schema = func._schema
        if schema.name in METADATA_IN_PLACE and isinstance(args[0], CudaLike):
            raise NotImplementedError(f"pretend CUDA: {schema.name} would change a CudaLike tensor's shape in place")
        if func is torch.ops.aten.linalg_lstsq.default:
            if kwargs.get("driver") not in (None, "gels"):
                raise RuntimeError(
                    "torch.linalg.lstsq: `driver` other than `gels` is not supported on CUDA (got "
                    f"{kwargs['driver']!r})"
                )
            kwargs["driver"] = "gels"
        out = func(*tree_map(_host, args), **tree_map(_host, kwargs))
        if "out" in kwargs:
            return kwargs["out"]
        if schema.arguments and schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write:
            return args[0]  # in place: the tensor it was called on
        return tree_map(_wrap, out)


def _host(value):
    return value.data_ if isinstance(value, CudaLike) else value


def _wrap(value):
    return CudaLike(value) if type(value) in (torch.Tensor, torch.nn.Parameter) else value


METADATA_IN_PLACE = {
    "aten::squeeze_",
    "aten::unsqueeze_",
    "aten::t_",
    "aten::transpose_",
    "aten::swapdims_",
    "aten::as_strided_",
    "aten::resize_",
    "aten::resize_as_",
    "aten::set_",
}
CROSS_DEVICE = {
    "aten::copy_",
    "aten::_to_copy",
    "aten::_copy_from",
    "aten::_copy_from_and_resize",
    "aten::_local_scalar_dense",
}
INDEXING = {
    "aten::index",
    "aten::index_put",
    "aten::index_put_",
    "aten::_index_put_impl_",
}  # CPU indices are fine on CUDA
_CUDA_GENERATORS: dict[
    int, torch.Generator
] = {}  # CPU generators standing in for CUDA ones (kept alive: ids stay theirs)


def _generator_type(generator: torch.Generator) -> str:
    return "cuda" if id(generator) in _CUDA_GENERATORS else generator.device.type


def _check_devices(func, args, kwargs) -> None:
    """CUDA's rules for one operator that meets a CudaLike tensor."""
    name = func._schema.name
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    if name in INDEXING:
        tensors = tensors[:1] + [t for t in tensors[1:] if isinstance(t, CudaLike) or t.dtype.is_floating_point]
    on_cuda = any(isinstance(t, CudaLike) for t in tensors)
    if name not in CROSS_DEVICE and on_cuda:
        cpu = [tuple(t.shape) for t in tensors if not isinstance(t, CudaLike) and t.dim() > 0]
        if cpu:
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                f"({name}, CPU tensors of shapes {cpu})"
            )
    generator = kwargs.get("generator")
    if generator is not None and _generator_type(generator) != ("cuda" if on_cuda else "cpu"):
        raise RuntimeError(
            f"Expected a '{'cuda' if on_cuda else 'cpu'}' device type for generator but found "
            f"'{_generator_type(generator)}' ({name})"
        )


def _is_cuda(device) -> bool:
    return isinstance(device, CudaLike) or (
        isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda"
    )


def _target(args, kwargs) -> torch.device | None:
    """The device a ``Tensor.to`` call asks for (None: it keeps the device)."""
    for value in [*args, kwargs.get("device"), kwargs.get("other")]:
        if isinstance(value, CudaLike):
            return CUDA
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, (str, torch.device)) or (isinstance(value, int) and not isinstance(value, bool)):
            return torch.device("cuda", value) if isinstance(value, int) else torch.device(value)
    return None


class PretendCuda(TorchFunctionMode):
    """``device="cuda"`` on a machine without CUDA (module docstring); a context manager, not re-entrant."""

    def __enter__(self):
        self._patches = contextlib.ExitStack()
        previous = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.__future__.set_overwrite_module_params_on_conversion(True)  # module.to(cuda): CudaLike parameters
        self._patches.callback(torch.__future__.set_overwrite_module_params_on_conversion, previous)
        stream = type("Stream", (), {"synchronize": lambda self: None, "wait_stream": lambda self, other: None})()
        self._patch(torch.cuda, "current_stream", lambda device=None: stream)
        self._patch(torch.cuda, "synchronize", lambda device=None: None)
        self._patch(torch.cuda, "get_rng_state", lambda device="cuda": torch.get_rng_state())
        self._patch(torch.cuda, "set_rng_state", lambda state, device="cuda": None)
        original = core_device.generator_on
        for module in [m for n, m in sys.modules.items() if n.startswith("nonxfer_bench") and m is not None]:
            if getattr(module, "generator_on", None) is original:
                self._patch(module, "generator_on", _generator_on)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._patches.close()

    def _patch(self, owner, name: str, value) -> None:
        previous = getattr(owner, name)
        setattr(owner, name, value)
        self._patches.callback(setattr, owner, name, previous)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if (
            func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
            and not kwargs
            and any(isinstance(a, CudaLike) for a in args)
        ):
            a, b = args  # matmul squeezes a vector operand's result in place (squeeze_), which a wrapper cannot follow
            if a.dim() == 1 and b.dim() == 1:
                return torch.dot(a, b)
            if a.dim() == 1:
                return torch.matmul(a.unsqueeze(0), b).squeeze(-2)
            if b.dim() == 1:
                return torch.matmul(a, b.unsqueeze(-1)).squeeze(-1)
        if func is torch.Tensor.__rmatmul__ and any(isinstance(a, CudaLike) for a in args):
            return torch.matmul(args[1], args[0])
        if func is torch.Tensor.to:
            target = _target(args[1:], kwargs)
            if target is None:
                return func(*args, **kwargs)
            rest = tuple(
                a.dtype
                if isinstance(a, torch.Tensor)
                else CPU
                if isinstance(a, (str, torch.device)) or type(a) is int
                else a
                for a in args[1:]
            )
            kwargs.pop("other", None)
            if "device" in kwargs:
                kwargs["device"] = CPU
            source = args[0]
            if target.type == "cuda":
                moved = func(source, *rest, **kwargs)
                return moved if isinstance(moved, CudaLike) else CudaLike(moved)
            if isinstance(source, CudaLike):
                if source.requires_grad and torch.is_grad_enabled():
                    raise NotImplementedError("pretend CUDA: a tensor that requires grad moved to the CPU")
                source = source.data_
            return func(source, *rest, **kwargs)
        if func is torch.Tensor.cuda:
            return (
                args[0]
                if isinstance(args[0], CudaLike)
                else CudaLike(args[0].detach().clone() if args[0].requires_grad else args[0])
            )
        if func is torch.Tensor.cpu:
            return args[0].data_ if isinstance(args[0], CudaLike) else args[0]
        if func is torch.Tensor.tolist and isinstance(args[0], CudaLike):
            return args[0].data_.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], CudaLike):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory "
                "first."
            )
        if func in (
            torch.Tensor.new_tensor,
            torch.Tensor.new_zeros,
            torch.Tensor.new_ones,
            torch.Tensor.new_empty,
            torch.Tensor.new_full,
        ) and isinstance(args[0], CudaLike):
            if kwargs.get("device") is None or _is_cuda(kwargs["device"]):
                kwargs.pop("device", None)
                return CudaLike(func(args[0].data_, *args[1:], **kwargs))
        if func is torch.Tensor.type_as and isinstance(args[1], CudaLike):
            return args[0].to(args[1])
        if _is_cuda(kwargs.get("device")):  # factories: made on the CPU, handed out as CUDA tensors
            kwargs["device"] = CPU
            generator = kwargs.get("generator")
            if generator is not None and _generator_type(generator) != "cuda":
                raise RuntimeError(
                    f"Expected a 'cuda' device type for generator but found '{_generator_type(generator)}' "
                    f"({func.__name__})"
                )
            return tree_map(_wrap, func(*args, **kwargs))
        return func(*args, **kwargs)


def _generator_on(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``core.device.generator_on`` with a CPU generator standing in for a CUDA one."""
    if _generator_type(generator) == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    stand_in = torch.Generator().manual_seed(seed)
    if torch.device(device).type == "cuda":
        _CUDA_GENERATORS[id(stand_in)] = stand_in
    return stand_in


def host(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's values on the CPU, from a CudaLike, CUDA or CPU tensor."""
    return tensor.data_ if isinstance(tensor, CudaLike) else tensor.detach().cpu()


def test_pretend_cuda_fails_where_cuda_fails_and_computes_what_the_cpu_computes():
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    with PretendCuda():
        on = x.to("cuda")
        assert on.is_cuda and on.device == CUDA and isinstance(on * 2, CudaLike)
        assert torch.equal(host(on @ on.T), x @ x.T) and float(on.sum()) == float(x.sum())
        assert (on * torch.tensor(2.0)).is_cuda  # a CPU scalar is fine, as on CUDA
        assert float(on[torch.tensor([True, False, True])].sum()) == float(x[[0, 2]].sum())  # and CPU indices
        with pytest.raises(RuntimeError, match="same device"):
            on + torch.zeros(4)
        with pytest.raises(RuntimeError, match="same device"):
            torch.nn.Linear(4, 2)(on)
        assert torch.nn.Linear(4, 2).to("cuda")(on).is_cuda
        with pytest.raises(RuntimeError, match="device type for generator"):
            torch.randn(3, generator=torch.Generator(), device="cuda")
        with pytest.raises(TypeError, match="numpy"):
            on.numpy()
        assert torch.zeros(2, device=on.device).is_cuda and not on.cpu().is_cuda and on.new_zeros(2).is_cuda
        leaf = torch.rand(2, 4).to("cuda").requires_grad_(True)
        (leaf @ on.T).sum().backward()
        assert leaf.grad.is_cuda and torch.equal(host(leaf.grad), x.sum(0).expand(2, 4))


# --- what every test here runs: the Fashion-MNIST zoo, digits images at its 28 px ----------------------------------

ATTACK_NAMES = ATTACKS.names()
ENCODER_NAMES = encoders_with_defaults()
CANDIDATES = ["vit_a", "vit_b", "resnet", "convnext"]  # convnext takes 32 px: a candidate surrogate/identify must skip
STEMS = ["vit_a", "convnext", "resnet", "resnet_deep", "mobilenet"]  # every first-layer geometry of the zoo
STRENGTHS = (0.5, 1.0)
FASHION_PARAMS = {
    "surrogate_projection": {"candidates": CANDIDATES},
    "identify": {"candidates": CANDIDATES},
    "learned_inverse": {"pairs": "identified", "candidates": CANDIDATES, "m": 8, "steps": 5, "width": 8, "depth": 2},
}
DRAWS_ON_THE_DEVICE = {"gaussian", "patch", "operator"}  # generator_on: their CUDA draws are not the CPU's
# [0, 1] outputs by design (reconstructions, clipped); everything else keeps the (unclipped) release's units
UNIT_RANGE = {"autoencoder", "diffusers_vae", "diffusion", "img2img"}
# results not comparable across devices, with why (they are still run and checked for device, shape, range, determinism)
DEVICE_DRAWS = {
    "finetune": "trains on labelled NEs the patch encoder draws on the device (generator_on)",
    "augment_finetune": "trains on noise the patch encoder draws on the device (generator_on)",
    "learned_inverse": "trains its inverse on pairs the patch encoder draws on the device (generator_on)",
}
NOT_COMPARED_ON_CUDA = DEVICE_DRAWS | {
    "pgd": "random start from the global CUDA generator, not the CPU's",
    "torchattacks": "PGD by default: random start from the global CUDA generator",
    "cw": "50 Adam steps with a keep-the-best-adversarial decision per image: rounding flips whole images",
}
# max |CUDA - CPU| in the release's units (about [0, 1] here) on the real device; default 1e-4. Guesses sized from the
# computation (fp32 networks without TF32, float64 linear algebra), not yet measured on a GPU: widen with a measurement.
TOLERANCES = {
    "denoise_tv": 1e-3, "jpeg_kornia": 1e-3, "autoencoder": 1e-3, "bn_adapt": 1e-3,
    "diffusers_vae": 1e-2, "diffusion": 5e-2, "img2img": 5e-2,
}  # fmt: skip
# most values equal, a few may not: FGSM's sign(gradient) where the gradient is ~0; jpeg_pil where a value rounds to
# the other 8-bit level and libjpeg codes its 8x8 block differently. Compared by the share of values that differ.
SHARE_DIFFERENT = {"fgsm": 0.02, "jpeg_pil": 0.1}


def fashion_params(name: str) -> dict | None:
    return FASHION_PARAMS.get(name) or spec_params(name)


@functools.cache
def fashion_models() -> dict[str, ZooModel]:
    """The committed Fashion-MNIST zoo (trained weights), on the CPU."""
    from nonxfer_bench.loading import load_zoo
    from nonxfer_bench.zoo import build_model

    return {spec.name: build_model(spec) for spec in load_zoo(ROOT / "suites/zoo/fashion.yaml").models}


@functools.cache
def digits(split: str, count: int) -> torch.Tensor:
    """Real images at the zoo's 28 px, always installed (scikit-learn's digits, upsampled)."""
    from nonxfer_bench.datasets.base import load_dataset

    return load_dataset("digits", {"split": split, "size": 28}).subset(count, 0).as_float()


def fashion_context(device: torch.device | str) -> AttackContext:
    """An attack context on ``device`` for vit_a: 24 public digits, 8 released (patch NEs), the zoo as candidates."""
    models = {name: copy.deepcopy(model) for name, model in fashion_models().items()}  # moved in place on the device
    return fitting_context(
        models, "vit_a", digits("train", 24), digits("test", 8), torch.Generator().manual_seed(3), device
    )


def attack_outputs(name: str, device: torch.device | str) -> dict:
    """The attack fitted on :func:`fashion_context` and run on 4 released NEs at each strength (twice at 1), with
    the adapted resnet's logits for model-adapting attacks: what the device tests compare with the CPU."""
    context = fashion_context(device)
    released = context.released[:4]
    attack = ATTACKS.create(name, fashion_params(name))
    if type(attack).fit is not Attack.fit:
        attack.prepare(replace(context, batch_labels=context.public_labels[:4]))
    out: dict = {"input": released}
    for strength in STRENGTHS:
        out[strength] = attack(released, strength, torch.Generator().manual_seed(1))
    out["again"] = attack(released, 1.0, torch.Generator().manual_seed(1))
    if attack.adapts_model:
        adapted = attack.adapt(context.model("resnet"), 1.0)
        with torch.no_grad():
            out["adapted"] = adapted(released).float()
    return out


def check_attack_outputs(
    name: str, cpu: dict, device_out: dict, tolerance: float | None, share: float | None = None
) -> None:
    """Device, dtype, shape, finite values, range, determinism; and, with a tolerance, the CPU's values."""
    released = device_out["input"]
    for key, value in device_out.items():
        where = f"{name} ({key})"
        assert value.device == released.device, f"{where}: on {value.device}, the release is on {released.device}"
        assert value.dtype == cpu[key].dtype and value.shape == cpu[key].shape, (
            f"{where}: {value.dtype} {tuple(value.shape)}"
        )
        values = host(value)
        assert torch.isfinite(values).all(), f"{where}: non-finite values"
        if name in UNIT_RANGE and key not in ("input", "adapted"):
            assert 0 <= float(values.min()) and float(values.max()) <= 1, f"{where}: outside [0, 1]"
        if tolerance is not None or share is not None:
            difference = (values.double() - cpu[key].double()).abs()
            scale = max(1.0, float(cpu[key].abs().max())) if key == "adapted" else 1.0  # logits: relative
            if share is not None:
                assert float((difference > 1e-4).double().mean()) <= share, (
                    f"{where}: {float((difference > 1e-4).double().mean()):.2%} of values differ from the CPU's"
                )
            else:
                assert float(difference.max()) <= tolerance * scale, (
                    f"{where}: max |device - CPU| = {float(difference.max()):.3g} > {tolerance * scale:.3g}"
                )
    assert torch.equal(host(device_out["again"]), host(device_out[1.0])), (
        f"{name}: not deterministic for one generator seed on the device"
    )


def encoder_outputs(name: str, stem: str, device: torch.device | str) -> dict:
    """The encoder on 4 clean digits for one zoo stem at 20 dB, twice with one seed, on ``device``."""
    model = copy.deepcopy(fashion_models()[stem])
    images = digits("test", 4)
    if model.input_size[-1] != images.shape[-1]:
        images = model.prepare(images)
    device = torch.device(device)
    if device.type != "cpu":
        model.to_device(device)
    images = images.to(device)
    encoder = ENCODERS.create(name)
    encodings = [encoder.encode(images, model, 20.0, torch.Generator().manual_seed(5)) for _ in range(2)]
    return {
        "input": images,
        "images": encodings[0].images,
        "again": encodings[1].images,
        "psnr": encodings[0].achieved_psnr,
    }


def check_encoder_outputs(name: str, stem: str, cpu: dict, device_out: dict, tolerance: float) -> None:
    """Device, dtype, shape, determinism, the PSNR it promises; the CPU's values where the draws are the CPU's."""
    where = f"{name} on {stem}"
    images, released = device_out["input"], device_out["images"]
    assert released.device == images.device and released.dtype == images.dtype and released.shape == images.shape, (
        f"{where}: {released.device} {released.dtype}"
    )
    assert torch.isfinite(host(released)).all(), f"{where}: non-finite values"
    assert torch.equal(host(released), host(device_out["again"])), (
        f"{where}: not deterministic for one generator seed on the device"
    )
    psnr = host(device_out["psnr"]).double()
    if name in DRAWS_ON_THE_DEVICE:  # exact standard PSNR
        assert torch.allclose(psnr, torch.full_like(psnr, 20.0), atol=1e-3), f"{where}: PSNR {psnr.tolist()}"
    else:  # clean, and reference: draws (if any) from the CPU generator, the CPU's release (reference: with its basis
        # made on the CPU, as linalg.subspace is to make it; a CUDA SVD may pick another basis of a null space)
        difference = float((host(released).double() - cpu["images"].double()).abs().max())
        assert difference <= tolerance * max(1.0, float(cpu["images"].abs().max())), (
            f"{where}: max |device - CPU| = {difference:.3g}"
        )


# --- pretend CUDA: every attack and encoder (CPU, always run) -------------------------------------------------------

PRETEND_TOLERANCE = 1e-5  # CPU kernels on both sides; only the models' channels-last layout differs


@pytest.fixture
def pretend_cuda():
    """A :class:`PretendCuda` to enter; afterwards the specification's cached contexts are dropped (those made on
    the pretend device hold CudaLike tensors, which a real CUDA test must not meet)."""
    yield PretendCuda()
    testing._context.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_meets_the_specification_on_pretend_cuda(name, pretend_cuda):
    """attacks.testing's device parameter: its first check (shape, dtype, device, determinism; 1 and 3 channels)."""
    with pretend_cuda:
        check_shape_dtype_and_determinism(name, spec_params(name), device="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_runs_on_pretend_cuda_as_on_the_cpu(name, pretend_cuda):
    cpu = attack_outputs(name, "cpu")
    with pretend_cuda:
        pretend = attack_outputs(name, "cuda")
        tolerance = None if name in DEVICE_DRAWS else PRETEND_TOLERANCE
        check_attack_outputs(name, cpu, pretend, tolerance)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_runs_on_pretend_cuda_as_on_the_cpu(name, tmp_path, monkeypatch, pretend_cuda):
    from nonxfer_bench.linalg import operator

    for stem in STEMS:
        cpu = encoder_outputs(name, stem, "cpu")
        monkeypatch.setenv("NXB_CACHE", str(tmp_path / stem))  # a cold subspace cache: the operator encoder estimates
        monkeypatch.setattr(operator, "_CACHE", type(operator._CACHE)())  # its solve time first (it crashed there)
        with pretend_cuda:
            check_encoder_outputs(name, stem, cpu, encoder_outputs(name, stem, "cuda"), PRETEND_TOLERANCE)


# --- the real device (marked cuda: skipped without one) -----------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.usefixtures("deterministic_cuda")
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_on_cuda_agrees_with_the_cpu(name):
    requires(name)
    cpu = attack_outputs(name, "cpu")
    compared = name not in NOT_COMPARED_ON_CUDA and name not in SHARE_DIFFERENT
    check_attack_outputs(
        name,
        cpu,
        attack_outputs(name, "cuda"),
        TOLERANCES.get(name, 1e-4) if compared else None,
        SHARE_DIFFERENT.get(name),
    )


@pytest.mark.cuda
@pytest.mark.usefixtures("deterministic_cuda")
@pytest.mark.parametrize("name", ENCODER_NAMES)
@pytest.mark.parametrize("stem", STEMS)
def test_encoder_on_cuda_agrees_with_the_cpu(name, stem):
    check_encoder_outputs(name, stem, encoder_outputs(name, stem, "cpu"), encoder_outputs(name, stem, "cuda"), 1e-4)


def test_the_cuda_tables_name_registered_attacks_once():
    assert set(NOT_COMPARED_ON_CUDA) | set(TOLERANCES) | set(SHARE_DIFFERENT) | set(UNIT_RANGE) <= set(ATTACK_NAMES)
    assert all(len(reason) > 20 for reason in NOT_COMPARED_ON_CUDA.values())
    assert not set(NOT_COMPARED_ON_CUDA) & (set(TOLERANCES) | set(SHARE_DIFFERENT)) and not set(TOLERANCES) & set(
        SHARE_DIFFERENT
    )
