"""The bad-input corpus: every mistake a user or their machine can make is one line through the CLI.

Each case runs ``nonxfer-bench`` (its ``main``) and expects exit code 2 and exactly one stderr line,
``nonxfer-bench: error: ...``, that names what is wrong and what would be valid; an unexpected
exception would fail the test with its traceback. Input that is valid but unusual (grayscale, RGBA,
palette and 16-bit images, a damaged cache entry) is converted or rebuilt instead, and a write error in
the middle of a run keeps every cell finished before it.
"""

from __future__ import annotations

import copy
import errno
import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.cli import main
from tests.helpers import DIGITS_ZOO, digits_suite, write_yaml

# tqdm's progress bar (redrawn with carriage returns) and a run's plan and progress lines: not error lines
PROGRESS = re.compile(r"^suite \S+: +\d+%\||^\S+: plan: |^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+: ")


def fails(argv: list[str], capsys, *expected: str) -> str:
    """Run the CLI; it must exit 2 with one error line (besides progress bars) that contains every ``expected`` text."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.match(line)]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("nonxfer-bench: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def suite_with(tmp_path: Path, zoo: Path, **overrides) -> Path:
    return digits_suite(tmp_path, zoo, **overrides)


# --- suite files: syntax, schema, names, types and ranges -------------------------------------------------

# (suite overrides, texts the error line must contain); each value replaces that key of a valid digits suite
SCHEMA_CASES = {
    "unknown top-level key": ({"atacks": []}, ["'atacks'", "unknown key; valid keys here:", "attacks"]),
    "wrong type": ({"batch_size": "big"}, ["'batch_size'", "valid integer", "'big'"]),
    "negative batch size": ({"batch_size": -4}, ["'batch_size'", "greater than or equal to 1"]),
    "NaN encoder strength": (
        {"encoders": [{"name": "patch", "strengths": [float("nan")]}]},
        ["encoders[0].strengths", "finite number"],
    ),
    "negative attack strength": (
        {"attacks": [{"name": "blur", "strengths": [-0.5]}]},
        ["attacks[0].strengths", "outside [0, 1]"],
    ),
    "attack strength above 1": (
        {"attacks": [{"name": "blur", "strengths": [1.5]}]},
        ["attacks[0].strengths", "outside [0, 1]"],
    ),
    "infinite attack strength": (
        {"attacks": [{"name": "blur", "strengths": [float("inf")]}]},
        ["attacks[0].strengths", "finite number"],
    ),
    "empty encoder list": ({"encoders": []}, ["'encoders'", "at least 1"]),
    "empty authorized list": ({"authorized": []}, ["'authorized'", "at least 1"]),
    "empty strengths": ({"encoders": [{"name": "patch", "strengths": []}]}, ["encoders[0].strengths", "at least 1"]),
    "empty seeds": ({"seeds": []}, ["'seeds'", "at least 1"]),
    "fractional seed": ({"seeds": [1.5]}, ["seeds[0]", "valid integer"]),
    "dataset limit 0": ({"dataset": {"name": "digits", "limit": 0}}, ["dataset.limit", "greater than or equal to 1"]),
    "suite name with spaces": ({"name": "my suite"}, ["'name'", "pattern"]),
    "unknown attack": ({"attacks": [{"name": "jpg"}]}, ["attacks[0].name", "unknown attack 'jpg'", "jpeg_pil"]),
    "unknown encoder": (
        {"encoders": [{"name": "nullspace", "strengths": [1]}]},
        ["encoders[0].name", "unknown encoder", "reference"],
    ),
    "unknown dataset": ({"dataset": {"name": "mnist"}}, ["dataset.name", "unknown dataset 'mnist'", "fashion_mnist"]),
    "unknown attack parameter": (
        {"attacks": [{"name": "jpeg_pil", "params": {"quality": 50}}]},
        ["attacks[0].params.quality", "unknown key; valid keys here: max_quality"],
    ),
    "attack parameter out of range": (
        {"attacks": [{"name": "jpeg_pil", "params": {"max_quality": 101}}]},
        ["attacks[0].params.max_quality", "less than or equal to 100"],
    ),
    "encoder parameter of the wrong type": (
        {"encoders": [{"name": "patch", "strengths": [0], "params": {"tau": "small"}}]},
        ["encoders[0].params.tau", "valid number"],
    ),
    "negative encoder parameter": (
        {"encoders": [{"name": "patch", "strengths": [0], "params": {"tau": -1e-5}}]},
        ["encoders[0].params.tau", "greater than 0"],
    ),
    "unknown dataset parameter": (
        {"dataset": {"name": "digits", "params": {"splt": "test"}}},
        ["dataset.params.splt", "unknown key; valid keys here: size, split"],
    ),
    "authorized model not in the zoo": (
        {"authorized": ["vit_c"]},
        ["authorized[0]", "'vit_c' is not in the zoo", "vit_a, vit_b, res"],
    ),
    "unknown storage format": ({"storage": ["png7"]}, ["'storage'", "png7", "png8"]),
    "negative sample count": (
        {"output": {"sample_images": -1}},
        ["output.sample_images", "greater than or equal to 0"],
    ),
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_a_schema_error_names_the_key_the_value_and_what_is_valid(case, tmp_path, digits_zoo, capsys):
    overrides, expected = SCHEMA_CASES[case]
    suite = suite_with(tmp_path, digits_zoo, **overrides)
    fails(["run", suite], capsys, str(suite), *expected)


def test_a_missing_key_is_named(tmp_path, digits_zoo, capsys):
    suite = suite_with(tmp_path, digits_zoo)
    data = yaml.safe_load(suite.read_text())
    del data["dataset"]
    fails(["run", write_yaml(suite, data)], capsys, "key 'dataset': Field required")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nattacks: [identity\n", "not valid YAML"),
        ("name: x\n\tdataset: digits\n", "line 2 not valid YAML"),
        ("- a list\n- not a mapping\n", "expected a mapping of keys at the top level, got list"),
        ("", "expected a mapping of keys at the top level, got NoneType"),
    ],
    ids=["unclosed bracket", "tab indentation", "a list", "an empty file"],
)
def test_a_suite_that_is_not_a_yaml_mapping_is_one_line(text, expected, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    fails(["run", suite], capsys, str(suite), expected)


def test_a_binary_file_given_as_suite_is_one_line(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    fails(["run", suite], capsys, str(suite), "not a text file (expected UTF-8 YAML)")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "SUITE", "--limit", "0"], ["--limit", "integer from 1 to", "value: '0'"]),
        (["run", "SUITE", "--threads", "-2"], ["--threads", "integer from 1 to", "value: '-2'"]),
        (["run"], ["the following arguments are required: suite"]),
        (["runn", "SUITE"], ["invalid choice: 'runn'", "'run'"]),
        (
            ["encode", "in", "out", "--zoo", "z", "--model", "m", "--encoder", "patch", "--strength", "nan"],
            ["--strength", "value: 'nan'"],
        ),
    ],
    ids=["limit 0", "negative threads", "no suite", "unknown command", "NaN strength"],
)
def test_command_line_mistakes_are_one_line_too(argv, expected, tmp_path, digits_zoo, capsys):
    suite = suite_with(tmp_path, digits_zoo)
    with pytest.raises(SystemExit) as exit_:
        main([str(suite) if a == "SUITE" else a for a in argv])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nonxfer-bench: error: ")
    assert all(text in lines[0] for text in expected), lines[0]


# --- zoo files and checkpoints -----------------------------------------------------------------------------


def zoo_copy(tmp_path: Path, digits_zoo: Path, **changes) -> Path:
    """The digits zoo written anew with vit_a's entry changed; other weights point at the trained files."""
    zoo = copy.deepcopy(DIGITS_ZOO)
    for model in zoo["models"]:
        model["weights"]["path"] = str(digits_zoo.parent / model["weights"]["path"])
    zoo["models"][0].update(changes)
    return write_yaml(tmp_path / "zoo.yaml", zoo)


def test_a_missing_zoo_file_is_named(tmp_path, capsys):
    suite = digits_suite(tmp_path, tmp_path / "no-zoo.yaml")
    fails(["run", suite], capsys, "key 'zoo': zoo file", "no-zoo.yaml not found")


def test_a_duplicate_model_name_is_named(tmp_path, digits_zoo, capsys):
    zoo = zoo_copy(tmp_path, digits_zoo, name="vit_b")
    fails(
        ["run", digits_suite(tmp_path, zoo, authorized=["vit_b"])], capsys, "models[1].name", "duplicate name 'vit_b'"
    )


def test_a_missing_weight_file_says_how_to_get_it(tmp_path, digits_zoo, capsys):
    zoo = zoo_copy(tmp_path, digits_zoo, weights={"source": "file", "path": str(tmp_path / "gone.safetensors")})
    fails(
        ["run", digits_suite(tmp_path, zoo)],
        capsys,
        "zoo[0].weights.path",
        "gone.safetensors not found",
        "nonxfer-bench train zoo",
    )


def test_an_unknown_architecture_is_named(tmp_path, digits_zoo, capsys):
    zoo = zoo_copy(tmp_path, digits_zoo, arch="resnet9000")
    fails(["run", digits_suite(tmp_path, zoo)], capsys, "model 'vit_a'", "'resnet9000'", "Unknown model")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_corrupt_checkpoint_is_named(suffix, tmp_path, digits_zoo, capsys):
    bad = tmp_path / f"vit_a{suffix}"
    bad.write_bytes((digits_zoo.parent / "vit_a.safetensors").read_bytes()[:300])  # a truncated copy
    zoo = zoo_copy(tmp_path, digits_zoo, weights={"source": "file", "path": str(bad)})
    fails(["run", digits_suite(tmp_path, zoo)], capsys, "model 'vit_a'", f"cannot read weights {bad}")


def test_a_checkpoint_that_is_not_a_state_dict_is_named(tmp_path, digits_zoo, capsys):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    zoo = zoo_copy(tmp_path, digits_zoo, weights={"source": "file", "path": str(tmp_path / "list.pth")})
    fails(
        ["run", digits_suite(tmp_path, zoo)],
        capsys,
        "model 'vit_a'",
        "list.pth hold a list, not a state dict of tensors",
    )


def test_a_checkpoint_with_the_wrong_shapes_is_named(tmp_path, digits_zoo, capsys):
    zoo = zoo_copy(tmp_path, digits_zoo, weights={"source": "file", "path": str(digits_zoo.parent / "res.safetensors")})
    fails(["run", digits_suite(tmp_path, zoo)], capsys, "model 'vit_a'", "res.safetensors do not fit the architecture",
          "missing tensors (first: cls_token)", "unexpected tensors (first: bn1.")  # fmt: skip


# --- datasets and images -----------------------------------------------------------------------------------


def folder_suite(tmp_path: Path, zoo: Path, root: Path | None, **params) -> Path:
    dataset = {
        "name": "image_folder",
        "params": {"channels": 1, "size": 16, "crop_pct": 1.0, **({"root": str(root)} if root else {}), **params},
    }
    return digits_suite(
        tmp_path, zoo, dataset=dataset, encoders=[{"name": "patch", "strengths": [0.0]}], attacks=[{"name": "identity"}]
    )


def test_a_missing_dataset_folder_says_what_to_point_at(tmp_path, digits_zoo, capsys):
    fails(
        ["run", folder_suite(tmp_path, digits_zoo, tmp_path / "val")],
        capsys,
        "key 'dataset'",
        f"{tmp_path / 'val'} does not exist",
        "one sub-folder of images per class",
    )


def test_a_dataset_path_that_is_a_file_is_named(tmp_path, digits_zoo, capsys):
    (tmp_path / "val.tar").write_bytes(b"")
    fails(
        ["run", folder_suite(tmp_path, digits_zoo, tmp_path / "val.tar")],
        capsys,
        f"{tmp_path / 'val.tar'} is a file, not a folder",
    )


def test_an_unset_dataset_folder_names_the_variable(tmp_path, digits_zoo, capsys, monkeypatch):
    monkeypatch.delenv("NXB_TEST_IMAGES", raising=False)
    suite = folder_suite(tmp_path, digits_zoo, None, root_env="NXB_TEST_IMAGES")
    fails(["run", suite], capsys, "no dataset folder", "dataset.params.root", "NXB_TEST_IMAGES")


def test_a_dataset_folder_without_class_folders_is_named(tmp_path, digits_zoo, capsys):
    (tmp_path / "val").mkdir()
    fails(
        ["run", folder_suite(tmp_path, digits_zoo, tmp_path / "val")],
        capsys,
        "has no class sub-folders",
        "root/<class>/<image>",
    )


def test_an_empty_dataset_is_named(tmp_path, digits_zoo, capsys):
    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat" / "notes.txt").write_text("not an image")
    fails(
        ["run", folder_suite(tmp_path, digits_zoo, tmp_path / "val")],
        capsys,
        "no images (.bmp, .jpeg",
        str(tmp_path / "val"),
    )


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda data: data[:-100], "truncated IDX file"),
        (lambda data: b"\x1f\x8b" + data[2:], "not an unsigned-byte IDX file"),
    ],
    ids=["truncated", "wrong magic"],
)
def test_damaged_fashion_mnist_files_are_named(damage, expected, tmp_path, digits_zoo, capsys):
    images, labels = np.zeros((10, 28, 28)), np.arange(10)
    data = damage(idx_bytes(images))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    suite = digits_suite(tmp_path, digits_zoo, dataset={"name": "fashion_mnist", "params": {"root": str(tmp_path)}})
    fails(["run", suite], capsys, str(tmp_path / "t10k-images-idx3-ubyte"), expected)


def image_tree(root: Path, images: dict[str, bytes]) -> Path:
    """``root/<class>/<name>`` files from raw bytes; the class is the first letter of the name."""
    for name, data in images.items():
        (root / name[0]).mkdir(parents=True, exist_ok=True)
        (root / name[0] / name).write_bytes(data)
    return root


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def gradient(mode: str, size: int = 20) -> Image.Image:
    ramp = np.linspace(0, 1, size * size).reshape(size, size)
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    rgb = Image.fromarray((np.stack([ramp, ramp[::-1], ramp.T], -1) * 255).astype(np.uint8))
    return rgb.convert(mode)


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: data[:8] + bytes(200)],
    ids=["truncated PNG", "corrupt PNG"],
)
def test_a_truncated_or_corrupt_image_names_the_file(damage, tmp_path, digits_zoo, capsys):
    root = image_tree(
        tmp_path / "val", {"a1.png": encoded(gradient("RGB")), "b1.png": damage(encoded(gradient("RGB", 64)))}
    )
    fails(["run", folder_suite(tmp_path, digits_zoo, root)], capsys, f"{root / 'b' / 'b1.png'}: cannot read image")


def test_grayscale_rgba_palette_and_16_bit_images_are_converted_not_refused(tmp_path, digits_zoo, capsys):
    images = {
        f"{c}{i}.png": encoded(gradient(mode))
        for i, mode in enumerate(["L", "RGBA", "P", "I;16", "RGB", "LA"])
        for c in "ab"
    }
    images["c1.jpg"] = encoded(gradient("RGB"), "JPEG")
    root = image_tree(tmp_path / "val", images)
    assert main(["run", str(folder_suite(tmp_path, digits_zoo, root))]) == 0, capsys.readouterr().err
    assert len(CellStore(tmp_path / "runs" / "digits" / "cells.jsonl").cells) == 2 * 3


def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped(tmp_path):
    from nonxfer_bench.datasets.base import decode_image

    path = tmp_path / "deep.png"
    gradient("I;16").save(path)
    decoded = decode_image(path, size=20, crop_pct=1.0, channels=1)
    expected = torch.from_numpy((np.asarray(gradient("I;16")) / 257.0).round()[None])
    assert torch.equal(decoded.double(), expected)  # the same ramp in 8 bits, not saturated at 255


# --- caches, the cell store, tracking and the output folder ------------------------------------------------


def test_a_damaged_cell_store_line_names_the_file_and_line(tmp_path, digits_zoo, capsys):
    suite = suite_with(tmp_path, digits_zoo, attacks=[{"name": "identity"}])
    assert main(["run", str(suite)]) == 0
    store = tmp_path / "runs" / "digits" / "cells.jsonl"
    lines = store.read_text().splitlines()
    store.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    capsys.readouterr()
    fails(["run", suite], capsys, f"{store}: line 3 is not a finished cell", "delete that line")


def test_a_damaged_autoencoder_cache_entry_is_retrained(tmp_path, monkeypatch, capsys):
    from nonxfer_bench.generative.autoencoder import AutoencoderConfig, load_or_train

    monkeypatch.setenv("NXB_CACHE", str(tmp_path))
    config = AutoencoderConfig(
        dataset={"name": "digits", "params": {"split": "train"}, "limit": 64}, epochs=1, width=4, bottleneck=1
    )
    first = load_or_train(config)
    (entry,) = (tmp_path / "autoencoders").iterdir()
    entry.write_bytes(entry.read_bytes()[:100])
    again = load_or_train(config)
    assert "is unreadable" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert load_or_train(config) is not None and len(entry.read_bytes()) > 100  # the entry was rewritten


def test_an_unreachable_tracking_server_is_reported_at_once(tmp_path, digits_zoo, capsys, monkeypatch):
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    fails(
        ["run", suite_with(tmp_path, digits_zoo, tracking={"enabled": True})],
        capsys,
        "http://127.0.0.1:9 is not reachable",
        "--no-tracking",
    )
    assert time.monotonic() - start < 30  # MLflow's own retries take about 4 minutes


def test_an_unusable_tracking_uri_is_one_line(tmp_path, digits_zoo, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://store")
    fails(
        ["run", suite_with(tmp_path, digits_zoo, tracking={"enabled": True})],
        capsys,
        "MLflow tracking at nosuchscheme://store is not usable",
    )


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path, digits_zoo, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    suite = suite_with(
        tmp_path, digits_zoo, output={"dir": str(blocker / "runs"), "results": str(tmp_path / "results")}
    )
    fails(
        ["run", suite],
        capsys,
        str(blocker / "runs"),
        "Not a directory",
        "check the path, its permissions and free disk space",
    )


def test_a_full_disk_mid_run_keeps_the_finished_cells_and_a_rerun_resumes(tmp_path, digits_zoo, capsys, monkeypatch):
    suite = suite_with(tmp_path, digits_zoo, attacks=[{"name": "identity"}])  # three groups: clean, patch, reference
    real_fsync, calls = os.fsync, []

    def fsync_until_full(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    store = tmp_path / "runs" / "digits" / "cells.jsonl"
    fails(
        ["run", suite],
        capsys,
        f"{store}: No space left on device",
        f"finished cells are kept in {store}",
        "run the same command again",
    )
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert len(CellStore(store).cells) >= 3  # the first group's cells (the second group's may have reached the file)
    assert main(["run", str(suite)]) == 0
    assert len(CellStore(store).cells) == 3 * 3


def test_an_unwritable_results_folder_keeps_every_cell(tmp_path, digits_zoo, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    suite = suite_with(
        tmp_path,
        digits_zoo,
        attacks=[{"name": "identity"}],
        output={"dir": str(tmp_path / "runs"), "results": str(blocker)},
    )
    fails(["run", suite], capsys, str(blocker), "finished cells are kept in")
    assert len(CellStore(tmp_path / "runs" / "digits" / "cells.jsonl").cells) == 3 * 3


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, digits_zoo, capsys):
    from nonxfer_bench.cells.store import exclusive

    suite = suite_with(tmp_path, digits_zoo)
    with exclusive(tmp_path / "runs" / "digits"):  # as a first run would hold it
        fails(
            ["run", suite],
            capsys,
            f"{tmp_path / 'runs' / 'digits'} is in use by another run (pid {os.getpid()})",
            "another output.dir",
        )
