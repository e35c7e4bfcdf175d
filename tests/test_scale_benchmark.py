"""benchmarks/scale.py, the CPU harness benchmarks, runs end to end on a small size (its figures are not checked:
they are timings; results/bench/bench.md holds a full run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_scale_benchmark_runs_its_throughput_memory_and_ray_figures(tmp_path):
    command = [
        sys.executable,
        "benchmarks/scale.py",
        "--images",
        "20",
        "--memory-images",
        "4",
        "--batch",
        "8",
        "--repeats",
        "1",
        "--only",
        "throughput",
        "memory",
        "ray",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["throughput"]["throughput_ratio"] > 0 and report["memory"]["images"] == [4, 40]
    assert report["ray"]["identical_cells"] is True  # Ray workers compute the cells the local executor does
    assert "## (e) Ray" in (tmp_path / "bench.md").read_text()
