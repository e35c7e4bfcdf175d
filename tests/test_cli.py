"""The command line: one-line errors with exit code 2 and no traceback; listings."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nonxfer_bench.cli import main
from nonxfer_bench.core.registry import first_sentence


@pytest.mark.slow
def test_a_bad_suite_exits_2_with_one_line_and_no_traceback(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "dataset": {"name": "digits"},
                "zoo": [],
                "authorized": ["a"],
                "encoders": [{"name": "patch", "strengths": [1]}],
                "attacks": [{"name": "jpg"}],
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "nonxfer_bench.cli", "run", str(suite)], capture_output=True, text=True
    )
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
        (["train", "zoo", "no/such/zoo.yaml"], "file not found"),
        (["list", "models"], "give a suite file"),
    ],
)
def test_user_errors_are_reported_not_raised(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    "what, expected", [("attacks", "jpeg_pil"), ("encoders", "reference"), ("datasets", "fashion_mnist")]
)
def test_list_shows_registered_components_with_a_summary(what, expected, capsys):
    assert main(["list", what]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(expected))
    assert len(line.split()) > 1


def test_list_attacks_shows_each_attacks_knowledge_tier(capsys):
    assert main(["list", "attacks"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert (
        "[none]" in lines["jpeg_pil"]
        and "[white_box]" in lines["oracle_projection"]
        and "[labelled_nes]" in lines["finetune"]
    )


def test_missing_dataset_files_say_how_to_get_them(tmp_path, digits_zoo, capsys):
    from tests.helpers import digits_suite

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


ROOT = Path(__file__).resolve().parents[1]


def test_list_suites_does_not_import_torch():
    script = "import sys; from nonxfer_bench.cli import main; main(['list', 'suites']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "False"
    listed = [line.split()[0] for line in lines[:-1] if not line.startswith(" ")]
    assert listed == [f"suites/{p.name}" for p in sorted((ROOT / "suites").glob("*.yaml"))]
    start = next(i for i, line in enumerate(lines) if line.startswith("suites/quickstart.yaml"))
    entry = " ".join(
        [
            lines[start].split(maxsplit=1)[1],
            *(line.strip() for line in itertools.takewhile(lambda line: line.startswith(" "), lines[start + 1 : -1])),
        ]
    )
    description = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())["description"]
    assert entry == first_sentence(description) and entry.startswith(
        "The protocol's fast ensemble"
    )  # the description's first sentence, wrapped


def test_list_suites_elsewhere_lists_the_checkout_s_suites_by_absolute_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["list", "suites"]) == 0
    assert str(ROOT / "suites" / "quickstart.yaml") in capsys.readouterr().out
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text("description: My study. Details follow.\n")
    (tmp_path / "suites" / "broken.yaml").write_text("description: [unclosed\n")
    (tmp_path / "suites" / "dated.yaml").write_text("description: 2024\n")
    (tmp_path / "suites" / "laughs.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi")
        )
    )
    assert main(["list", "suites"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "suites/broken.yaml  (line 2 not valid YAML (expected ',' or ']', but got '<stream end>'))",
        "suites/dated.yaml   (no description)",
        # bounded, like run
        "suites/laughs.yaml  (expands to more than 100,000 values through YAML aliases; refusing to read it)",
        "suites/mine.yaml    My study.",
    ]


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "nonxfer_bench", "--version"], capture_output=True, text=True, timeout=120
    )
    from nonxfer_bench import __version__

    assert done.returncode == 0 and done.stdout.strip() == f"nonxfer-bench {__version__}"


@pytest.mark.parametrize(
    "argv, expected", [(["--bogus"], "nonxfer-bench: error: "), (["run"], "nonxfer-bench: error: run: ")]
)
def test_command_line_mistakes_have_one_prefix(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert (
        stop.value.code == 2
        and err.startswith(expected)
        and err.count("nonxfer-bench:") == 1
        and len(err.splitlines()) == 1
    )


def test_list_attacks_shows_sentences_parameters_defaults_and_threat_models(capsys):
    from nonxfer_bench.attacks import ATTACKS

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"built-in attacks from {ROOT / 'attacks'}"
    assert "`" not in out
    entry = out.split("\njpeg_pil ")[1].split("\njpeg_kornia ")[0]
    assert entry.split()[:6] == ["[none]", "JPEG", "with", "libjpeg", "via", "PIL."]
    assert (
        "parameters: max_quality=95, min_quality=5, range='minmax'" in entry and "threat model: no knowledge" in entry
    )
    assert {line.split()[0] for line in out.splitlines()[1:] if not line.startswith(" ")} == set(ATTACKS.names())


@pytest.mark.parametrize(
    "doc, expected",
    [
        ("Uses ``x`` and :class:`~a.B`.\n    Then more. And more.", "Uses x and a.B."),
        (
            "Quality 95 -> 5, e.g. for\n    uploads (as in Doe et al. 2023). Second.",
            "Quality 95 -> 5, e.g. for uploads (as in Doe et al. 2023).",
        ),
        ("One line without a period\n\nA second paragraph.", "One line without a period"),
        (None, ""),
    ],
)
def test_first_sentence_is_whole_and_plain(doc, expected):
    from nonxfer_bench.core.registry import first_sentence

    assert first_sentence(doc) == expected


def test_every_component_description_is_one_whole_sentence():
    from nonxfer_bench.attacks import ATTACKS
    from nonxfer_bench.core.registry import first_sentence
    from nonxfer_bench.datasets.base import DATASETS
    from nonxfer_bench.encoders import ENCODERS

    for registry in (ATTACKS, ENCODERS, DATASETS):
        for name in registry.names():
            sentence = first_sentence(registry.get(name).__doc__)
            assert sentence.rstrip(")").endswith((".", "!", "?")) and "`" not in sentence, (name, sentence)


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"attacks": [{"name": "jpeg_pil", "strengths": [1.5]}]},
            "key 'attacks[0].strengths': strength 1.5 is outside [0, 1]",
        ),
        ({"storage": ["float32", "float32"]}, "key 'storage': duplicate storage format"),
        ({"storage": ["jpeg500"]}, "key 'storage': JPEG quality 500 is outside 1..100"),
        (
            {"zoo": [{"name": "a", "arch": "resnet18", "weights": {"source": "file"}}]},
            "key 'zoo[0].weights': source 'file' needs 'path'",
        ),
    ],
)
def test_validation_messages_carry_no_pydantic_prefix(change, expected, tmp_path, capsys):
    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    suite |= {"zoo": str(ROOT / "suites" / "zoo" / "fashion.yaml")} | change
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Value error" not in err and "Assertion failed" not in err


def test_train_zoo_and_zoo_train_are_one_command():
    from nonxfer_bench.cli import build_parser, command_zoo_train

    parser = build_parser()
    spelled = [parser.parse_args([*words, "z.yaml", "--only", "a"]) for words in (["train", "zoo"], ["zoo", "train"])]
    assert all(args.handler is command_zoo_train and args.zoo == "z.yaml" and args.only == ["a"] for args in spelled)


def test_ui_for_a_tracking_server_that_is_down_is_one_line(tmp_path, capsys, monkeypatch):
    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    suite |= {
        "zoo": str(ROOT / "suites" / "zoo" / "fashion.yaml"),
        "tracking": {"enabled": True, "uri": "http://127.0.0.1:9"},
    }
    suite["protocol"] |= {
        "file": str(ROOT / "suites" / "protocols" / "ne-v1.yaml")
    }  # relative paths resolve beside the suite file: this copy is elsewhere
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["ui", str(path)]) == 2
    err = capsys.readouterr().err
    assert "MLflow tracking server http://127.0.0.1:9 is not reachable" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_reader_that_leaves_early_is_no_error(tmp_path):
    """`nonxfer-bench list attacks | head -1`: the closed pipe ends the listing quietly, exit 0, no error line."""
    import subprocess
    import sys

    listing = subprocess.Popen(
        [sys.executable, "-m", "nonxfer_bench", "list", "attacks"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    listing.stdout.close()  # the reader has left before the first line: every write meets a closed pipe
    assert listing.wait(timeout=120) == 0
    assert listing.stderr.read() == b""
