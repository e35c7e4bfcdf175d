"""Defect 2: YAML that expands to billions of nodes, recursion, depth and size, in every file the CLI reads.

Each is refused with one line before validation, within the time and memory limits; no error line echoes
more than a bounded piece of the input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import digits_suite, encode_args
from tests.hostile.conftest import refused

LAUGHS = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)  # 10^9 scalars in under 1 KB


def bombs() -> dict[str, str]:
    """Small files whose naive expansion is huge, deep or self-referential."""
    return {
        "billion laughs at the top": LAUGHS + "\nname: bomb\n",
        "billion laughs in a value": LAUGHS + "\nname: bomb\ndescription: *a8\n",
        "billion laughs in the zoo": LAUGHS + "\nname: bomb\nzoo: [{name: m, arch: resnet18, kwargs: {x: *a8}}]\n",
        "laughs in mapping merges": "\n".join(
            ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
            + [f"m{i}: &m{i} [{', '.join([f'*m{i - 1}'] * 10)}]" for i in range(1, 9)]
        ),
        "recursive alias": "name: &r [*r]\n",
        "recursive mapping": "zoo: &z {models: *z}\n",
        "deep nesting": "name: " + "[" * 20000 + "]" * 20000 + "\n",
        "deep mapping nesting": "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "huge file": "# padding\n" * 2_000_000 + "name: big\n",
        "long scalar": "name: " + "A" * 3_000_000 + "\n",
        "many keys": "".join(f"k{i}: {i}\n" for i in range(300_000)),
    }


CASES = [(name, "list models") for name in bombs()] + [
    (name, command)
    for name in ("billion laughs in a value", "recursive alias", "deep nesting")
    for command in ("run", "leaderboard")
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "command"), CASES)
def test_suite_bombs(tmp_path: Path, cwd: Path, name: str, command: str) -> None:
    suite = tmp_path / "bomb.yaml"
    suite.write_text(bombs()[name])
    refused(*command.split(), suite, cwd=cwd, expected=(str(suite),), isolate=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("billion laughs at the top", "zoo train"),
        ("recursive alias", "train diffusion"),
        ("deep nesting", "encode"),
        ("huge file", "zoo train"),
        ("laughs in mapping merges", "train diffusion"),
    ],
)
def test_zoo_and_diffusion_spec_bombs(tmp_path: Path, cwd: Path, name: str, command: str) -> None:
    """The zoo file of `zoo train` and `encode --zoo`, and the DDPM config of `train diffusion`."""
    path = tmp_path / "bomb.yaml"
    path.write_text(bombs()[name])
    args = {
        "zoo train": ["zoo", "train", path],
        "train diffusion": ["train", "diffusion", path],
        "encode": encode_args(tmp_path, tmp_path / "out", path, "m", "patch", 20, seed_key="k"),
    }[command]
    refused(*args, cwd=cwd, expected=(str(path),), isolate=True)


ONE_LINE_LAUGHS = (
    "[&a0 [x,x,x,x,x,x,x,x,x,x], " + ", ".join(f"&a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)) + "]"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "value",
    [ONE_LINE_LAUGHS, "[" * 5000 + "]" * 5000, "&r [*r]", "{a: " * 3000 + "1" + "}" * 3000, "a: 1\na: 2"],
    ids=["laughs", "deep list", "recursive", "deep mapping", "duplicate key"],
)
def test_encoder_param_bombs(tmp_path: Path, cwd: Path, value: str) -> None:
    """``--param NAME=VALUE`` reads VALUE as YAML: a hostile value is one line, and the echo is bounded."""
    (tmp_path / "in").mkdir()
    line = refused(
        *encode_args(tmp_path / "in", tmp_path / "out", tmp_path / "none.yaml", "m", "patch", 20, seed_key="k"),
        "--param",
        f"k={value}",
        cwd=cwd,
        expected=("--param",),
        isolate=True,
    )
    assert len(line) < 400


@pytest.mark.parametrize("key", ["batch_size", "name", "unknown"])
def test_long_value_is_not_echoed_whole(tmp_path: Path, cwd: Path, digits_zoo: Path, key: str) -> None:
    """A wrong value (or an unknown key) of 200 KB is named in a bounded excerpt, not copied into the message."""
    long = "9" * 200_000 + "x"
    suite = digits_suite(tmp_path, digits_zoo, **({long: 1} if key == "unknown" else {key: long}))
    line = refused("list", "models", suite, cwd=cwd, expected=("key '",))
    assert len(line) < 600


def test_duplicate_keys_are_refused(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    """YAML would let the second ``batch_size`` win silently."""
    suite = digits_suite(tmp_path, digits_zoo)
    suite.write_text(suite.read_text() + "batch_size: 7\n")
    refused("list", "models", suite, cwd=cwd, expected=("duplicate key 'batch_size'", "line"))
