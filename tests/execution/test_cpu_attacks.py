"""CPU-only attacks (libjpeg, scikit-image) run on a thread pool beside the device work, with the cells of the
sequential run (#14)."""

from __future__ import annotations

import threading

import pytest

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.compression import JpegPil
from nonxfer_bench.attacks.denoising import DenoiseNlm
from nonxfer_bench.execution.runner import Runner
from tests.execution.small import small_suite

ATTACK_LIST = [
    {"name": "identity"},
    {"name": "jpeg_pil", "strengths": [0.5, 1.0]},
    {"name": "blur", "strengths": [0.5]},
    {"name": "denoise_nlm", "strengths": [1.0]},
    {"name": "cutout", "strengths": [0.5]},
]


def test_the_attacks_that_compute_on_the_cpu_say_so():
    assert [name for name in ("jpeg_pil", "denoise_nlm", "blur", "jpeg_kornia") if ATTACKS.get(name).cpu_only] == [
        "jpeg_pil",
        "denoise_nlm",
    ]


def run(folder, monkeypatch, overlap: bool | None) -> tuple[Runner, list[str], object]:
    """Run the suite (overlap None: as the device decides); returns the runner, the threads the CPU-only attacks ran on,
    the result."""
    threads: list[str] = []
    for cls in (JpegPil, DenoiseNlm):
        forward = cls.forward

        def spy(self, images, strength, generator, forward=forward):
            threads.append(threading.current_thread().name)
            return forward(self, images, strength, generator)

        monkeypatch.setattr(cls, "forward", spy)
    suite = small_suite(
        folder,
        encoders=[{"name": "gaussian", "strengths": [20.0]}],
        attacks=ATTACK_LIST,
        output={"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 4},
    )
    runner = Runner(suite)
    if overlap is not None:
        runner.overlap_cpu_attacks = overlap  # as on an accelerator: the CPU itself never overlaps
    return runner, threads, runner.run()


@pytest.fixture
def sequential(tmp_path, monkeypatch):
    runner, threads, result = run(tmp_path / "sequential", monkeypatch, overlap=None)
    assert runner.overlap_cpu_attacks is False  # the CPU run: nothing changes
    assert set(threads) == {threading.main_thread().name}
    return result


def test_overlapped_cpu_attacks_run_on_pool_threads_and_give_the_sequential_cells_and_grids(
    tmp_path, monkeypatch, sequential
):
    _, threads, overlapped = run(tmp_path / "overlapped", monkeypatch, overlap=True)
    assert (
        len(threads) == 3 * 4
    )  # the gaussian group (the clean images face no attack) x three CPU-only steps x four batches
    assert all(name.startswith("nxb-cpu-attack") for name in threads)
    assert {cell.key: cell for cell in overlapped.cells} == {cell.key: cell for cell in sequential.cells}
    assert overlapped.samples.keys() == sequential.samples.keys()
    for label, path in overlapped.samples.items():  # the grid's rows stay in the suite's order
        assert path.read_bytes() == sequential.samples[label].read_bytes()
    assert {cell.device for cell in overlapped.cells if cell.attack in ("jpeg_pil", "denoise_nlm")} == {"cpu"}
