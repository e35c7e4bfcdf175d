"""The command line: one-line errors with exit code 2 and no traceback; listings."""

import subprocess
import sys

import pytest
import yaml

from nonxfer_bench.cli import main


def test_a_bad_suite_exits_2_with_one_line_and_no_traceback(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(yaml.safe_dump({"name": "x", "dataset": {"name": "digits"}, "zoo": [], "authorized": ["a"],
                                     "encoders": [{"name": "patch", "strengths": [1]}], "attacks": [{"name": "jpg"}]}))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "nonxfer_bench.cli", "run", str(suite)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(suite) in lines[0] and "authorized[0]" in lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "no/such/suite.yaml"], "no/such/suite.yaml: file not found"),
        (["leaderboard", "no/such/suite.yaml"], "file not found"),
        (["zoo", "train", "no/such/zoo.yaml"], "file not found"),
        (["list", "models"], "give a suite file"),
    ],
)
def test_user_errors_are_reported_not_raised(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("what, expected", [("attacks", "jpeg_pil"), ("encoders", "reference"), ("datasets", "fashion_mnist")])
def test_list_shows_registered_components_with_a_summary(what, expected, capsys):
    assert main(["list", what]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(expected))
    assert len(line.split()) > 1


def test_list_attacks_shows_each_attacks_knowledge_tier(capsys):
    assert main(["list", "attacks"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "[none]" in lines["jpeg_pil"] and "[white_box]" in lines["oracle_projection"] and "[labelled_nes]" in lines["finetune"]


def test_missing_dataset_files_say_how_to_get_them(tmp_path, digits_zoo, capsys):
    from tests.conftest import digits_suite

    suite = digits_suite(tmp_path, digits_zoo, dataset={"name": "fashion_mnist", "params": {"root": str(tmp_path)}})
    import nonxfer_bench.datasets.fashion_mnist as data

    original = data.DEBIAN_FASHION_MNIST
    data.DEBIAN_FASHION_MNIST = tmp_path / "nowhere"
    try:
        assert main(["run", str(suite)]) == 2
    finally:
        data.DEBIAN_FASHION_MNIST = original
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "download: true" in err
