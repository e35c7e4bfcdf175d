"""Device and precision: resolution with one-line errors, models resident on a device, autocast to bf16/fp16.

Every behaviour has a CPU test; the CUDA twins (marked ``cuda``) run only where a GPU is (benchmarks/gpu.py).
"""

import subprocess
import sys

import pytest
import torch

from nonxfer_bench.core.device import autocast, generator_on, resolve_device
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.zoo import build_model


def test_auto_is_the_cpu_without_cuda_and_the_first_gpu_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize(
    "name, available, count, message",
    [
        ("cuda", False, 0, "CUDA is not available"),
        ("cuda:2", True, 2, "has 2 CUDA device"),
        ("gpu", True, 1, "expected auto, cpu"),
    ],
)
def test_a_device_that_is_not_there_is_one_line(monkeypatch, name, available, count, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    with pytest.raises(UserError, match=message) as error:
        resolve_device(name)
    assert "\n" not in str(error.value)


def test_fp32_adds_no_autocast_and_bf16_autocasts_on_the_cpu():
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": ""}
    return subprocess.run([sys.executable, "-m", "nonxfer_bench.cli", *argv], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_cuda_asked_for_without_cuda_exits_2_with_one_line(tmp_path, digits_zoo):
    from tests.helpers import digits_suite

    done = run_cli("run", str(digits_suite(tmp_path, digits_zoo)), "--device", "cuda", "--no-tracking")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before any work


@pytest.mark.slow
def test_cuda_on_ray_tasks_that_request_no_gpu_exits_2_with_one_line(tmp_path, digits_zoo):
    from tests.helpers import digits_suite

    done = run_cli(
        "run", str(digits_suite(tmp_path, digits_zoo)), "--device", "cuda", "--executor", "ray", "--no-tracking"
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "nonxfer-bench: error: device 'cuda' with --executor ray needs resources: {gpus: 1} in the suite (Ray hides "
        "GPUs from tasks that request none)"
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("key, value, expected", [("device", "gpu0", "device"), ("precision", "int8", "precision")])
def test_a_bad_device_or_precision_in_the_suite_is_one_line(tmp_path, digits_zoo, key, value, expected):
    from tests.helpers import digits_suite

    done = run_cli("run", str(digits_suite(tmp_path, digits_zoo, **{key: value})), "--no-tracking")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0]


def test_a_bad_precision_flag_is_one_line():
    done = run_cli("run", "suite.yaml", "--precision", "fp8")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--precision" in done.stderr


def digits_models(zoo) -> list:
    return [build_model(spec) for spec in load_zoo(zoo).models]


def digits_images() -> torch.Tensor:
    from nonxfer_bench.datasets import load_dataset

    return load_dataset("digits", {}).as_float()[:400]


def test_fp32_on_the_cpu_is_bit_identical_to_a_model_never_placed(digits_zoo):
    images = digits_images()[:64]
    for model in digits_models(digits_zoo):
        with torch.no_grad():
            before = model(images)
        placed = model.to_device(torch.device("cpu"), "fp32")
        assert not placed.training and not placed.channels_last
        with torch.no_grad():
            assert torch.equal(placed(images), before)


def test_bf16_on_the_cpu_agrees_with_fp32_on_most_images(digits_zoo):
    images = digits_images()
    for model in digits_models(digits_zoo):
        fp32 = model.predict(images, 100)
        model.to_device(torch.device("cpu"), "bf16")
        bf16 = model.predict(images, 100)
        assert model(images[:2]).dtype == torch.float32  # logits come back in float32
        agreement = float((fp32 == bf16).float().mean())
        assert 0.95 <= agreement, f"{model.name}: bf16 agrees with fp32 on {agreement:.1%}"


def test_predict_runs_in_inference_mode_and_returns_cpu_predictions(digits_zoo):
    model = digits_models(digits_zoo)[0]
    predictions = model.predict(digits_images()[:10], 4)
    assert predictions.device.type == "cpu" and predictions.is_inference()


@pytest.mark.cuda
def test_cuda_models_are_channels_last_and_bf16_agrees_with_fp32(digits_zoo):
    images = digits_images()
    device = resolve_device("cuda")
    for model in digits_models(digits_zoo):
        fp32 = model.to_device(device, "fp32").predict(images, 100)
        assert model.channels_last and model.device == device
        bf16 = model.to_device(device, "bf16").predict(images, 100)  # CPU images are moved by the model
        assert bf16.device.type == "cpu"
        assert float((fp32 == bf16).float().mean()) >= 0.95


def test_a_generator_already_on_the_device_is_used_as_it_is():
    generator = torch.Generator().manual_seed(3)
    assert generator_on(generator, torch.device("cpu")) is generator
    assert torch.equal(torch.randn(4, generator=generator), torch.randn(4, generator=torch.Generator().manual_seed(3)))


@pytest.mark.cuda
def test_a_cpu_generator_seeds_a_cuda_one_reproducibly():
    device = resolve_device("cuda")
    draws = [
        torch.randn(8, generator=generator_on(torch.Generator().manual_seed(5), device), device=device)
        for _ in range(2)
    ]
    assert draws[0].is_cuda and torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("encoder", ["gaussian", "patch", "reference"])
def test_encoders_draws_do_not_depend_on_the_models_precision(encoder, digits_zoo):
    from nonxfer_bench.encoders import ENCODERS

    model = digits_models(digits_zoo)[0]
    images = digits_images()[:8]
    encode = lambda: ENCODERS.create(encoder).encode(images, model, 20.0, torch.Generator().manual_seed(1)).images
    first = encode()
    model.to_device(torch.device("cpu"), "bf16")  # precision changes the networks, never the encoders' draws
    assert torch.equal(encode(), first) and not torch.equal(first, images)


def test_a_bf16_suite_runs_end_to_end_with_its_own_keys_and_fp32_keys_unchanged(tmp_path, digits_zoo):
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite
    from tests.helpers import digits_suite

    encoders = [{"name": "reference", "strengths": [20.0]}]
    for name in ("fp32", "default", "bf16"):
        (tmp_path / name).mkdir()
    fp32_suite = load_suite(digits_suite(tmp_path / "fp32", digits_zoo, encoders=encoders, precision="fp32"))
    default_suite = load_suite(digits_suite(tmp_path / "default", digits_zoo, encoders=encoders))
    keys = lambda suite: [sorted(g.cells.values()) for g in plan_suite(suite)]  # noqa: E731
    assert keys(fp32_suite) == keys(default_suite)  # fp32 is the old key
    fp32 = Runner(fp32_suite).run().cells
    bf16_suite = load_suite(
        digits_suite(tmp_path / "bf16", digits_zoo, encoders=encoders, precision="bf16", device="cpu")
    )
    bf16 = Runner(bf16_suite).run().cells
    assert {c.precision for c in bf16} == {"bf16"} and {c.device for c in bf16} == {"cpu"}
    assert not {c.key for c in bf16} & {c.key for c in fp32} and not {c.group for c in bf16} & {c.group for c in fp32}
    assert all(g.label.endswith("/bf16") for g in plan_suite(bf16_suite))
    record = fp32[0].record()
    assert "precision" not in record and record["device"] == "cpu" and bf16[0].record()["precision"] == "bf16"
    by_cell = {(c.encoder, c.attack, c.attack_strength, c.model): c for c in fp32}
    for cell in bf16:
        twin = by_cell[(cell.encoder, cell.attack, cell.attack_strength, cell.model)]
        assert cell.encoded_psnr == twin.encoded_psnr  # the same draws: precision changes the models only
        assert abs(cell.accuracy - twin.accuracy) <= 0.05, (cell.model, cell.attack, cell.accuracy, twin.accuracy)


def test_a_ray_worker_computes_on_the_gpu_ray_assigned_it():
    from nonxfer_bench.execution.executors import worker_device

    assert worker_device("auto", [3]) == "cuda" and worker_device("cuda:2", [0]) == "cuda"  # its GPU is cuda:0 there
    assert worker_device("cpu", [1]) == "cpu" and worker_device("auto", []) == "auto"


def test_a_ray_run_plans_cuda_draws_when_each_task_gets_a_gpu_and_refuses_cuda_without_one():
    from nonxfer_bench.execution.executors import ray_device

    assert ray_device("auto", 1) == ray_device("cuda:1", 0.5) == "cuda" and ray_device("cpu", 1) == "cpu"
    assert ray_device("auto", 0) == ray_device("cpu", 0) == "cpu"
    with pytest.raises(UserError, match=r"device 'cuda' with --executor ray needs resources: \{gpus: 1\}"):
        ray_device("cuda", 0)


def test_cuda_draws_have_keys_of_their_own_and_cpu_keys_stay_as_they_were(tmp_path, digits_zoo, monkeypatch):
    from nonxfer_bench.core.device import draw_kind
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.loading import load_suite
    from tests.helpers import digits_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert draw_kind("auto") == draw_kind("cpu") == "cpu" and draw_kind("cuda") == draw_kind("cuda:3") == "cuda"
    suites = {}
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        (tmp_path / device).mkdir()
        suites[device] = plan_suite(load_suite(digits_suite(tmp_path / device, digits_zoo, device=device)))
    keys = {
        device: [(g.key, g.draw_key, sorted(g.cells.values())) for g in groups] for device, groups in suites.items()
    }
    assert keys["auto"] == keys["cpu"] and keys["cuda"] == keys["cuda:1"]  # any GPU draws the same numbers
    cpu_keys = {k for g, d, cells in keys["cpu"] for k in (g, d, *cells)}
    assert not cpu_keys & {
        k for g, d, cells in keys["cuda"] for k in (g, d, *cells)
    }  # cells, groups and draws (cached attacks)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert draw_kind("auto") == "cuda"


def test_deterministic_cuda_computes_fp32_as_fp32_and_leaves_the_cpu_alone(monkeypatch):
    from nonxfer_bench.core.device import make_deterministic

    flags = lambda: (
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,  # noqa: E731
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    before = flags()
    make_deterministic(torch.device("cpu"))
    assert flags() == before
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        make_deterministic(torch.device("cuda", 0))  # sets flags only: no GPU needed
        assert flags() == ("ieee", "ieee", True, False, True, True)
        assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before[:2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:4]
        torch.use_deterministic_algorithms(before[4], warn_only=before[5])


def test_the_low_sensitivity_basis_is_computed_on_the_cpu_whatever_the_weights_device(monkeypatch):
    from nonxfer_bench.linalg import subspace

    seen = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda a, **kw: seen.append(a.device.type) or svd(a, **kw))
    weight = torch.randn(8, 27, generator=torch.Generator().manual_seed(0))
    result = subspace.patch_subspace(weight)
    assert seen == ["cpu"] and result.k == 27 - 8 and result.basis.device.type == "cpu"


@pytest.mark.cuda
def test_a_cuda_weight_gets_the_cpu_basis_exactly_on_its_device():
    from nonxfer_bench.linalg.subspace import patch_subspace

    weight = torch.randn(8, 27, generator=torch.Generator().manual_seed(0))
    cpu, cuda = patch_subspace(weight), patch_subspace(weight.cuda())
    assert cuda.basis.device.type == "cuda" and torch.equal(cuda.basis.cpu(), cpu.basis)


def test_cells_computed_on_the_cpu_are_found_by_a_reader_on_a_gpu_machine(tmp_path, digits_zoo, monkeypatch):
    """The suite's 'auto' on a machine with CUDA means CUDA draws, whose keys no CPU-computed cell has; leaderboard and
    report plan with the draws the cells record (their device), so committed CPU results stay readable there."""
    from nonxfer_bench.cells.store import draws
    from nonxfer_bench.cli import main
    from nonxfer_bench.execution.plan import plan_suite, stored_plan
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite
    from nonxfer_bench.schema.settings import RunSettings
    from tests.helpers import digits_suite

    path = digits_suite(tmp_path, digits_zoo, encoders=[{"name": "patch", "strengths": [0.0]}])
    suite = load_suite(path)
    cells = Runner(suite, RunSettings.of(suite, device="cpu")).run().cells
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    here = RunSettings.of(suite)
    assert here.draws == "cuda" and draws(cells) == "cpu"
    cpu = stored_plan(suite, here, draws(cells))
    assert (
        [g.key for g in cpu]
        == [g.key for g in plan_suite(suite, here.on("cpu"))]
        != [g.key for g in plan_suite(suite, here)]
    )
    assert main(["leaderboard", str(path), "--out", str(tmp_path / "board")]) == 0
    rows = (tmp_path / "board" / "cells.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(cells)  # every CPU cell, none missing
