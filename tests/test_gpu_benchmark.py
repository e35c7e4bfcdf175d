"""benchmarks/gpu.py, the prepared GPU measurement, runs end to end as a dry check on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_script_runs_as_a_dry_check_on_the_cpu(tmp_path):
    command = [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--images", "32", "--threads", "1", "--repeats", "2",
               "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["precision"] == "bf16" and report["data"]["images"] == 32
    assert set(report["bare"]) == set(report["agreement"]) == {"mobilenetv2", "efficientnet_b0"}
    assert all(0.5 <= value <= 1.0 for value in report["agreement"].values())  # the same random weights in fp32 and bf16
    sections = ("throughput", "encoders", "projection", "imagenet_mini")
    assert not [name for name in sections if "error" in report[name]], {name: report[name] for name in sections}
    assert report["throughput"]["ratio"] > 0 and report["data"]["loader_over_eval"] > 0
    assert {"reference", "patch", "gaussian", "plain_noise_add"} <= set(report["encoders"]["encoders"])
    assert report["projection"]["groups"] == 2 and report["projection"]["full_groups"] == 11  # the dry check's reduced grid
    mini = report["imagenet_mini"]
    assert "skipped" in mini or (mini["cells"] > 0 and 0.5 <= mini["image_agreement"] <= 1.0)
    assert (tmp_path / "out" / "gpu.md").read_text().startswith("# GPU figures: cpu")
