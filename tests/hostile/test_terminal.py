"""Terminal escapes (issue 23): text from a suite, a path or the command line that the CLI prints (``list suites``,
an error that names a bad value, a notice) reaches the terminal inert. Whatever it holds, stdout and stderr carry no
control character but newline (no ESC, so no ANSI or OSC sequence; no CR, backspace, BEL or tab), no DEL, no C1
control (U+009B is a one-character CSI) and no bidirectional override: each is shown as its escape instead."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import digits_suite, write_yaml
from tests.hostile.conftest import Outcome, refused, run_cli

FORBIDDEN = re.compile("[\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]")
SEQUENCES = [
    "\x1b[31m",
    "\x1b]0;owned\x07",
    "\x1b[2J\x1b[H",
    "\r",
    "\b",
    "\x07",
    "\t",
    "\x9b31m",
    "\x7f",
    "\u202e",
    "\x1b]8;;http://x\x1b\\",
]
NOT_SPACE = [sequence for sequence in SEQUENCES if not sequence[0].isspace()]
# any text, with terminal sequences spliced in often
nasty = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(SEQUENCES),
    min_size=1,
    max_size=6,
).map("".join)
names = nasty.map(lambda text: text.replace("/", "").replace("\x00", "")[:60]).filter(
    lambda name: name not in ("", ".", "..")
)
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_inert(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.err and outcome.code in (0, 2), outcome.err[-2000:]
    for stream, text in (("stdout", outcome.out), ("stderr", outcome.err)):
        found = FORBIDDEN.search(text)
        assert found is None, (
            f"{stream} holds {found.group()!r}: {text[max(0, found.start() - 80) : found.end() + 80]!r}"
        )


@FUZZ
@given(description=nasty, name=names)
@example(description="Red \x1b[31malert\x1b[0m. Title \x1b]0;owned\x07 set.", name="x\x1b[2Jy")
def test_list_suites_shows_descriptions_and_file_names_inert(description: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        suites = Path(folder) / "suites"
        suites.mkdir()
        write_yaml(suites / "plain.yaml", {"description": description})
        (suites / f"{name}.yaml").write_text(yaml.safe_dump({"description": description}))
        (suites / "broken.yaml").write_text(f"description: [{description}")  # an error line quoting the file
        outcome = run_cli("list", "suites", cwd=Path(folder))
    assert outcome.code == 0, outcome.err
    assert_inert(outcome)


KEYS = [
    "name",
    "description",
    "dataset.name",
    "zoo",
    "authorized.0",
    "encoders.0.name",
    "attacks.0.name",
    "attacks.0.params.x",
    "output.dir",
    "seeds.0",
]


@FUZZ
@given(value=nasty, key=st.sampled_from(KEYS))
@example(value="\x1b[31mvit_a\x1b[0m", key="authorized.0")
@example(value="\x9b2J", key="encoders.0.name")
def test_a_bad_value_in_a_suite_is_echoed_inert(digits_zoo: Path, value: str, key: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = digits_suite(Path(folder), digits_zoo)
        data = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        target = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
        write_yaml(path, data)
        assert_inert(run_cli("list", "models", path, cwd=Path(folder)))


@FUZZ
@given(
    value=st.tuples(st.sampled_from(NOT_SPACE), nasty).map("".join),
    option=st.sampled_from(["suite", "--device", "--executor", "--workers"]),
)
@example(value="\x1b]0;owned\x07", option="suite")
def test_a_bad_command_line_value_is_echoed_inert(digits_zoo: Path, value: str, option: str) -> None:
    """Values refused before any work: a suite file that is not there, and option values that start with a
    terminal sequence (argparse's checks; int() would strip leading white space and accept ' 5')."""
    with tempfile.TemporaryDirectory() as folder:
        suite = digits_suite(Path(folder), digits_zoo)
        name = value.replace("\x00", "")
        args = (
            ["leaderboard", Path(folder) / f"{name.replace('/', '')}.yaml"]
            if option == "suite"
            else ["run", suite, option, name, "--no-tracking"]
        )
        assert_inert(run_cli(*args, cwd=Path(folder)))


def test_a_raw_control_character_in_a_yaml_file_is_one_line(tmp_path: Path, cwd: Path) -> None:
    """PyYAML's reader refuses ESC and friends when the loader is made, which was outside the error handling."""
    path = tmp_path / "suite.yaml"
    path.write_text("name: \x1b[31mred\n")
    refused("run", path, cwd=cwd, expected=(str(path), "not valid YAML", "#x001b"))
