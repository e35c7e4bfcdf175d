"""benchmarks/protocol.py: one release faces every tier of an ensemble (nothing breaks it), timed against its plain
evaluation in the same run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("protocol_benchmark", ROOT / "benchmarks" / "protocol.py")
protocol = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protocol)


@pytest.mark.slow
def test_the_fast_ensemble_runs_every_tier_and_reports_its_cost_as_a_multiple_of_the_plain_evaluation(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "protocol.py"), "--images", "40", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "protocol.json").read_text())
    assert list(report["tier_seconds"]) == [
        "none",
        "method",
        "architecture",
        "public_weights",
        "labelled_nes",
        "white_box",
    ]
    assert report["ratio"] == pytest.approx(report["protocol_s"] / report["baseline_s"]) and report["ratio"] > 1
    learned = [row for row in report["steps"] if row["step"].startswith("learned_inverse")]
    assert {row["tier"] for row in learned} == {"architecture", "labelled_nes"} and all(
        row["seconds"] > 0 for row in learned
    )
    assert "| **ratio** |" in (out / "protocol.md").read_text() and sorted(p.name for p in out.iterdir()) == [
        "protocol.json",
        "protocol.md",
    ]


def test_the_protocol_copy_breaks_nothing_and_the_baseline_runs_no_attack(tmp_path):
    args = protocol.argparse.Namespace(
        images=30, ensemble="full", authorized="resnet", encoder="operator", strength=10.0, threads=1
    )
    baseline, tiered = protocol.write_suites(tmp_path, args)
    copy = protocol.yaml.safe_load((tmp_path / "ne-v1-unbroken.yaml").read_text())
    assert (
        copy["verdict"]["break_fraction"] == 1.0
        and copy["full"] == protocol.yaml.safe_load(protocol.PROTOCOL.read_text())["full"]
    )
    base, suite = (protocol.yaml.safe_load(path.read_text()) for path in (baseline, tiered))
    assert base["attacks"] == [{"name": "identity"}] and "protocol" not in base
    assert (
        suite["protocol"]["ensemble"] == "full"
        and suite["public"]["limit"] == 15_000
        and suite["encoders"] == [{"name": "operator", "strengths": [10.0]}]
    )


def test_a_folder_with_someone_elses_report_is_refused_before_any_run_and_kept(tmp_path):
    mine = tmp_path / "theirs"
    mine.mkdir()
    (mine / "protocol.md").write_text("my own notes\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "protocol.py"), "--out", str(mine)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "did not write" in done.stderr
    assert (mine / "protocol.md").read_text() == "my own notes\n" and sorted(p.name for p in mine.iterdir()) == [
        "protocol.md"
    ]
    (mine / "protocol.json").write_text('{"command": "python benchmarks/protocol.py --images 40"}')
    assert protocol.check_out(mine) is None  # its own earlier report: replaced by the next run
    assert protocol.check_out(mine / "protocol.md") == f"--out {mine / 'protocol.md'}: not a folder"
