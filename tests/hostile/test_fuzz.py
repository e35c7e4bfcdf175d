"""Property-based fuzzing (hypothesis) of the suite schema, the NXB_* variables and the command line: every
input either works or is refused with one line and exit code 2; nothing else (no traceback, no hang).

In-process (``main``), on inputs that fail or finish during validation, with modest example counts."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonxfer_bench.cli import main
from tests.helpers import digits_suite
from tests.hostile.conftest import MAX_LINE

# main() flushes denormals process-wide (torch.set_flush_denormal), so hypothesis must not draw subnormal floats.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.text(max_size=30),
    st.sampled_from(["..", ".", "/", "../x", "a/b", "", "-1", "1e999", "nan", "vit_a", "patch", "blur", "digits"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``main``; return (exit code, stderr) and check the one-line contract when it failed."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    if code != 0:
        lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("nonxfer-bench: error: "), (argv, err)
        assert len(lines[0]) <= MAX_LINE, lines[0][:300]
    return code, err


def paths_of(data: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path in nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths_of(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths_of(value, prefix + (index,))
    return found


@pytest.fixture(scope="module")
def base_suite(tmp_path_factory: pytest.TempPathFactory, digits_zoo: Path) -> dict:
    folder = tmp_path_factory.mktemp("fuzz")
    return yaml.safe_load(digits_suite(folder, digits_zoo).read_text())


@FUZZ
@given(data=st.data())
def test_suite_schema(
    base_suite: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    suite = copy.deepcopy(base_suite)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths_of(suite) or [("name",)]))
        parent = suite
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
        else:
            parent[path[-1]] = data.draw(values)
    file = tmp_path / "fuzz.yaml"
    file.write_text(
        yaml.safe_dump(json.loads(json.dumps(suite, default=str)), allow_unicode=True)
        if _json_safe(suite)
        else "name: ["
    )
    outcome(["list", "models", str(file)], capsys)


def _json_safe(data: object) -> bool:
    try:
        json.dumps(data, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


@FUZZ
@given(
    name=st.sampled_from(["NXB_CACHE_MAX_GB", "NXB_RELEASE_MAX_GB", "NXB_FAULT"]),
    value=st.one_of(st.text(max_size=40), st.floats(allow_subnormal=False).map(repr), st.integers().map(str)),
)
def test_environment_variables(
    base_suite: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    value = value.replace("\x00", "")  # the environment cannot hold NUL
    file = tmp_path / "suite.yaml"
    file.write_text(yaml.safe_dump(base_suite))
    with monkeypatch.context() as patch:
        patch.setenv(name, value)
        code, _ = outcome(["list", "models", str(file)], capsys)
    if name != "NXB_FAULT" and code == 0 and value.strip():
        number = float(value)
        assert math.isfinite(number) and number >= 0, f"{name}={value!r} accepted"


TOKENS = st.sampled_from(
    [
        "run",
        "list",
        "leaderboard",
        "report",
        "encode",
        "verify",
        "zoo",
        "train",
        "diffusion",
        "models",
        "attacks",
        "--limit",
        "--threads",
        "--workers",
        "--executor",
        "--steps",
        "--max-seconds",
        "--strength",
        "--format",
        "--param",
        "--batch-size",
        "--zoo",
        "--model",
        "--encoder",
        "--models",
        "--out",
        "--experiment",
        "--run-id",
        "--fresh",
        "--no-tracking",
        "--mlflow",
        "--seed-key",
        "0",
        "-1",
        "1e999",
        "nan",
        "x=&a [1]",
        "k=[[[",
        "/nonexistent.yaml",
        "..",
        ".",
        "",
        "\x7f",
        "-",
        "--",
        "png8",
        "jpeg0",
        "patch",
        "process",
        "ray",
    ]
)


@FUZZ
@given(argv=st.lists(st.one_of(TOKENS, st.text(max_size=12)), min_size=1, max_size=8))
def test_command_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    argv = [a.replace("\x00", "") for a in argv]
    if argv[0] == "ui" or "ui" in argv[:2]:
        argv[0] = "list"  # `ui` on a valid suite would start a server
    outcome(argv, capsys)
