"""Defect 1: `train diffusion` with bad values destroyed the committed DDPM. Every value is validated before
anything is written, and a finished training replaces the output folder in one rename."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.hostile.conftest import REPO, refused, run_cli, tree_digest

DDPM = REPO / "suites" / "zoo" / "weights" / "fashion-ddpm"
SPEC = REPO / "suites" / "zoo" / "fashion-ddpm.yaml"


@pytest.fixture
def ddpm_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the committed DDPM and a copy of its spec writing into it: tests never risk the real folder."""
    folder = tmp_path / "weights" / "fashion-ddpm"
    shutil.copytree(DDPM, folder)
    spec = yaml.safe_load(SPEC.read_text())
    spec["output"] = str(folder)
    path = tmp_path / "fashion-ddpm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, folder


@pytest.mark.parametrize(
    "argument",
    [
        ["--steps", "-5"],
        ["--steps", "0"],
        ["--steps", "1.5"],
        ["--steps", "many"],
        ["--max-seconds", "-1"],
        ["--max-seconds", "nan"],
        ["--max-seconds", "inf"],
        ["--max-seconds", "0"],
        ["--threads", "0"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_leave_the_model_untouched(ddpm_copy: tuple[Path, Path], cwd: Path, argument: list[str]) -> None:
    spec, folder = ddpm_copy
    before = tree_digest(folder)
    refused("train", "diffusion", spec, *argument, cwd=cwd, expected=(argument[0],))
    assert tree_digest(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train_steps", 0),
        ("train_steps", -5),
        ("image_size", 10**9),
        ("batch_size", 10**12),
        ("block_out_channels", []),
        ("block_out_channels", [0, 64]),
        ("block_out_channels", [10**7]),
        ("num_train_timesteps", 10**12),
        ("lr", float("nan")),
        ("layers_per_block", 10**6),
        ("ema_decay", float("nan")),
    ],
)
def test_bad_spec_values_leave_the_model_untouched(
    ddpm_copy: tuple[Path, Path], cwd: Path, key: str, value: object
) -> None:
    spec, folder = ddpm_copy
    data = yaml.safe_load(spec.read_text())
    data[key] = value
    spec.write_text(yaml.safe_dump(data))
    before = tree_digest(folder)
    big = key in ("image_size", "batch_size", "block_out_channels", "layers_per_block", "num_train_timesteps")
    refused("train", "diffusion", spec, cwd=cwd, expected=(key,), isolate=big)  # a missed bound would allocate
    assert tree_digest(folder) == before


def test_failure_during_training_leaves_the_model_untouched(
    ddpm_copy: tuple[Path, Path], cwd: Path, tmp_path: Path
) -> None:
    """A dataset that turns out unreadable only when training starts: the old model stays whole."""
    spec, folder = ddpm_copy
    data = yaml.safe_load(spec.read_text())
    broken = tmp_path / "broken-fashion"
    broken.mkdir()
    (broken / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (broken / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    data["dataset"] = {"name": "fashion_mnist", "params": {"split": "train", "root": str(broken)}}
    spec.write_text(yaml.safe_dump(data))
    before = tree_digest(folder)
    refused("train", "diffusion", spec, "--steps", "1", cwd=cwd)
    assert tree_digest(folder) == before


@pytest.mark.slow
def test_killed_training_leaves_the_model_untouched_and_a_finished_one_replaces_it(
    ddpm_copy: tuple[Path, Path], cwd: Path
) -> None:
    """A tiny real training: killed after writing its staging folder, nothing changed; finished, every file is new."""
    spec, folder = ddpm_copy
    data = yaml.safe_load(spec.read_text())
    data.update(image_size=8, block_out_channels=[8, 8], attention=False, num_train_timesteps=20, batch_size=4)
    data["dataset"]["limit"] = 16
    spec.write_text(yaml.safe_dump(data))
    before = tree_digest(folder)
    killed = run_cli(
        "train", "diffusion", spec, "--steps", "2", cwd=cwd, env={"NXB_FAULT": "diffusion_staged"}, isolate=True
    )
    assert killed.code == -9, killed.err[-2000:]
    assert tree_digest(folder) == before
    done = run_cli("train", "diffusion", spec, "--steps", "2", cwd=cwd)
    assert done.code == 0, done.err[-2000:]
    after = tree_digest(folder)
    assert {Path(p).name for p in after} >= {"MODEL_CARD.md", "quality.json", "samples.png", "train_card.json"}
    weights = str(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert after[weights] != before[weights]
    assert json.loads((folder / "train_card.json").read_text())["steps_taken"] == 2
    assert [p.name for p in folder.parent.iterdir()] == [folder.name], "a staging folder was left behind"
