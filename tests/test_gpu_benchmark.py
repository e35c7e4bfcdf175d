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
    command = [
        sys.executable,
        "benchmarks/gpu.py",
        "--device",
        "cpu",
        "--images",
        "32",
        "--threads",
        "1",
        "--repeats",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, timeout=3000
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["precision"] == "bf16" and report["data"]["images"] == 32
    assert set(report["bare"]) == set(report["agreement"]) == {"mobilenetv2", "efficientnet_b0"}
    assert all(
        0.5 <= value <= 1.0 for value in report["agreement"].values()
    )  # the same random weights in fp32 and bf16
    sections = ("throughput", "encoders", "projection", "trained", "imagenet_mini")
    assert not [name for name in sections if "error" in report[name]], {name: report[name] for name in sections}
    assert report["throughput"]["ratio"] > 0 and report["data"]["loader_over_eval"] > 0
    assert {"reference", "patch", "gaussian", "plain_noise_add"} <= set(report["encoders"]["encoders"])
    assert (
        report["projection"]["groups"] == 2 and report["projection"]["full_groups"] == 11
    )  # the dry check's reduced grid
    for name in ("trained", "imagenet_mini"):  # trained weights in fp32 and bf16, cell by cell
        row = report[name]
        assert "skipped" in row or (
            row["cells"] > 0 and row["other_precision"] == "bf16" and 0.5 <= row["image_agreement"] <= 1.0
        ), row
    # quick: quickstart's first encoding and its protocol ensemble's first two plain attack steps (identity, jpeg_pil
    # 0.75);
    # the clean images face only the no-attack step: 2 authorized x (2 steps + 1) x 6 models
    assert report["trained"]["suite"] == "quickstart.yaml" and report["trained"]["cells"] == 2 * (2 + 1) * 6
    assert set(report["seconds"]) == {"data_and_bare", *sections}
    assert (tmp_path / "out" / "gpu.md").read_text().startswith("# GPU figures: cpu")


def test_a_report_stopped_between_sections_still_renders_what_it_finished(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    report = {
        "device": "NVIDIA H200",
        "torch": "2.11.0",
        "precision": "bf16",
        "batch": 256,
        "command": "python benchmarks/gpu.py",
        "seconds": {"data_and_bare": 50.0, "throughput": 30.0},
        "bare": {"resnet50": {"input_size": [3, 224, 224], "images_per_s": 15000.0}},
        "agreement": {"resnet50": 0.98},
        "throughput": {"bare_s": 27.0, "suite_s": 30.0, "ratio": 0.9},
        "data": {
            "images": 5000,
            "decode_images_per_s": 200.0,
            "loader_images_per_s": 20000.0,
            "zoo_images_per_s": 15000.0,
            "loader_over_eval": 1.33,
            "decode_over_eval": 0.013,
            "decode_hours": 0.07,
        },
    }
    report |= {name: gpu.NOT_REACHED for name in gpu.SECTIONS if name not in report}
    gpu.write_report(tmp_path, report)
    text = (tmp_path / "gpu.md").read_text()
    assert "ratio **0.90**" in text and text.count("failed: not reached: the run stopped before this section") == 4
    assert json.loads((tmp_path / "gpu.json").read_text()) == report and not list(tmp_path.glob("*.partial"))
