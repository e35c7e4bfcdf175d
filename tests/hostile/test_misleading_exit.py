"""Misleading exit 0: a command that names something that is not there (a zoo model, an address to serve on, a
device) said it succeeded. `train zoo --only <unknown>` printed "all weights present", `ui` printed a link
nobody could open when its port was taken or its host unknown, and device spellings torch refuses (or, for
`train diffusion`, any spelling at all) ended in a traceback. Each is now one line, exit 2, naming the value and
what would be valid, before any work or write."""

from __future__ import annotations

import argparse
import socket
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nonxfer_bench.cli import build_parser, device_name
from nonxfer_bench.core.device import resolve_device
from nonxfer_bench.core.errors import UserError
from tests.helpers import DIGITS_ZOO, write_yaml
from tests.hostile.conftest import refused, run_cli

NETWORK = {
    "arch": "resnet18",
    "kwargs": {"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10},
    "preprocess": {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4]},
}
BAD_DEVICES = ["CUDA", "cuda:", "cuda:01", "cpu:0", " cuda", "cuda ", "mps", "cuda\n", "cuda:\u0661", "gpu", ""]
ZOO_NAMES = [model["name"] for model in DIGITS_ZOO["models"]]


def tiny_suite(folder: Path) -> Path:
    """A suite of two random-weight ResNets on 10 digits: it loads without trained weights."""
    return write_yaml(
        folder / "suite.yaml",
        {
            "name": "tiny",
            "dataset": {"name": "digits", "limit": 10},
            "zoo": [{"name": "a", **NETWORK}, {"name": "b", "seed": 1, **NETWORK}],
            "authorized": ["a"],
            "encoders": [{"name": "patch", "strengths": [20.0]}],
            "attacks": [{"name": "identity"}],
        },
    )


def ddpm_config(folder: Path) -> Path:
    """A DDPM config on digits writing into ``folder``/ddpm."""
    return write_yaml(
        folder / "ddpm.yaml",
        {
            "dataset": {"name": "digits"},
            "output": "ddpm",
            "image_size": 8,
            "block_out_channels": [8],
            "num_train_timesteps": 10,
            "train_steps": 1,
            "batch_size": 4,
        },
    )


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """The tests' digits zoo file, with no weight file trained yet."""
    (tmp_path / "zoo").mkdir()
    return write_yaml(tmp_path / "zoo" / "zoo.yaml", DIGITS_ZOO)


@pytest.mark.parametrize("command", [["train", "zoo"], ["zoo", "train"]])
@pytest.mark.parametrize("only", [["nosuch"], ["vit_a", "nosuch"], ["VIT_A"]])
def test_train_zoo_only_an_unknown_name_is_refused(zoo: Path, cwd: Path, command: list[str], only: list[str]) -> None:
    refused(*command, zoo, "--only", *only, cwd=cwd, expected=(f"--only '{only[-1]}'", "valid: vit_a, vit_b, res"))
    assert not list(zoo.parent.glob("*.safetensors")), "a model was trained before the unknown name was refused"


def test_train_zoo_only_known_names_whose_weights_exist_says_so(zoo: Path, cwd: Path) -> None:
    for name in ZOO_NAMES:
        (zoo.parent / f"{name}.safetensors").write_bytes(b"")  # present: train_zoo only looks whether the file is there
    done = run_cli("train", "zoo", zoo, "--only", "vit_b", "res", cwd=cwd)
    assert done.code == 0 and "all weights present" in done.out, done.err


@pytest.fixture
def taken_port():
    """A port something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.slow
def test_ui_refuses_a_taken_port(tmp_path: Path, cwd: Path, taken_port: int) -> None:
    line = refused(
        "ui",
        tiny_suite(tmp_path),
        "--port",
        taken_port,
        cwd=cwd,
        isolate=True,
        timeout=30,
        expected=(f"--port {taken_port}",),
    )
    assert "http://" not in line


@pytest.mark.slow
@pytest.mark.parametrize("host", ["nosuchhost.invalid", "x" * 300, "8.8.8.8"])
def test_ui_refuses_a_host_it_cannot_serve_on(tmp_path: Path, cwd: Path, host: str) -> None:
    refused(
        "ui", tiny_suite(tmp_path), "--host", host, cwd=cwd, isolate=True, timeout=30, expected=("--host", host[:40])
    )


def commands_with(option: str) -> set[str]:
    """Every (sub)command of the CLI that takes ``option``, as its usage names it ("train diffusion")."""
    found = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            found.update([parser.prog.removeprefix("nonxfer-bench ")] if option in action.option_strings else [])
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return found


def device_commands(folder: Path) -> dict[str, list[object]]:
    """Every command that takes --device (found in the parser, so a new one is covered), with its other arguments."""
    release = [
        "--zoo",
        tiny_suite(folder),
        "--model",
        "a",
    ]  # the device is checked before the zoo or any folder is read
    arguments = {
        "run": [tiny_suite(folder), "--no-tracking"],
        "train diffusion": [ddpm_config(folder)],
        "encode": [folder / "photos", folder / "release", *release, "--encoder", "patch", "--strength", "10"],
        "verify": [folder / "release", *release[:2], "--labels"],
        "attack": [
            folder / "release",
            "--originals",
            folder / "photos",
            *release[:2],
            "--protocol",
            folder / "protocol.yaml",
        ],
    }
    assert commands_with("--device") == set(arguments), "a command takes --device: give it its arguments here"
    return {command: [*command.split(), *rest] for command, rest in arguments.items()}


NOT_HERE = [f"cuda:{torch.cuda.device_count() + 7}"]  # a spelling that is valid, of a device this machine lacks


@pytest.mark.parametrize("value", BAD_DEVICES + NOT_HERE)
def test_every_device_spelling_that_is_not_there_is_one_line(tmp_path: Path, cwd: Path, value: str) -> None:
    for command, arguments in device_commands(tmp_path).items():
        refused(*arguments, f"--device={value}", cwd=cwd, expected=("device", repr(value).strip("'")))
        assert not (tmp_path / "ddpm").exists(), f"{command} wrote its output before refusing the device"


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_value_that_names_nothing_here_never_exits_0(tmp_path: Path, cwd: Path, data: st.DataObject) -> None:
    """The class: for every command option that names a thing (a device of every command taking --device, a zoo model
    for --only), a value naming nothing that exists is one line and exit 2 that quotes it; never a success."""
    zoo = tmp_path / "zoo.yaml"
    if not zoo.exists():
        write_yaml(zoo, DIGITS_ZOO)
        for name in ZOO_NAMES:
            (tmp_path / f"{name}.safetensors").write_bytes(b"")  # present, so that a valid --only trains nothing
    choices = {**device_commands(tmp_path), "train zoo": ["train", "zoo", zoo], "zoo train": ["zoo", "train", zoo]}
    command = data.draw(st.sampled_from(sorted(choices)))
    near = st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:99", *BAD_DEVICES, *ZOO_NAMES])
    noise = st.text(alphabet=string.ascii_letters + string.digits + ":_ \t\n\u0661.", max_size=10)
    value = data.draw(st.one_of(near, noise, st.builds(str.__add__, near, noise)))
    if command.endswith("zoo") or command == "zoo train":
        assume(not value.startswith("-") and value not in ZOO_NAMES)
        argv = [*choices[command], "--only", value]
    else:
        try:
            resolve_device(device_name(value))
            assume(False)  # a device this machine has: the command would start its work
        except (ValueError, UserError):
            pass
        argv = [*choices[command], f"--device={value}"]
    refused(*argv, cwd=cwd, expected=(repr(value).strip("'"),))
