"""Releasable NEs: storage formats keep what they promise; encode/verify end to end; the suite's storage axis."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nonxfer_bench.cli import main
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.owner.inputs import CROPPED, RESIZED
from nonxfer_bench.schema.storage import parse_format
from nonxfer_bench.storage.formats import apply_storage, read_image, write_image
from tests.helpers import digits_suite, encode_args

CHANNELS = [1, 3]


def _batch(channels: int, unclipped: bool = True) -> torch.Tensor:
    images = torch.rand(3, channels, 12, 10, generator=torch.Generator().manual_seed(channels))
    return images * 1.4 - 0.2 if unclipped else images


def _smooth(channels: int) -> torch.Tensor:
    """Natural-image-like content (smooth gradients) on which JPEG at high quality is near lossless."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    planes = [0.2 + 0.6 * x, 0.2 + 0.6 * y, 0.5 + 0.3 * torch.sin(6 * x * y)][:channels]
    return torch.stack(planes)[None]


@pytest.mark.parametrize("channels", CHANNELS)
def test_float32_is_bit_exact_including_unclipped_values(channels, tmp_path):
    images = _batch(channels)
    assert torch.equal(apply_storage(images, "float32"), images)
    back, notes = read_image(write_image(tmp_path / "a.npy", images[0], "float32"))
    assert torch.equal(back, images[0]) and notes == []
    assert images.min() < 0 and images.max() > 1  # the unclipped range survived


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("fmt, levels", [("png16", 65535), ("png8", 255)])
def test_png_clips_and_quantizes_within_one_level_and_files_match(channels, fmt, levels, tmp_path):
    images = _batch(channels)
    stored = apply_storage(images, fmt)
    assert stored.min() >= 0 and stored.max() <= 1
    assert (stored - images.clamp(0, 1)).abs().max() <= 0.5 / levels + 1e-7
    for i in range(len(images)):
        back, _ = read_image(write_image(tmp_path / f"{i}.png", images[i], fmt))
        assert back.shape == images[i].shape
        assert torch.equal(back, stored[i])  # the file holds exactly what apply_storage predicts
    with Image.open(tmp_path / "0.png") as image:
        assert image.size == (10, 12)


@pytest.mark.parametrize("channels", CHANNELS)
def test_jpeg_at_high_quality_keeps_psnr_above_a_floor_and_files_match(channels, tmp_path):
    images = _smooth(channels)
    stored = apply_storage(images, "jpeg95")
    assert stored.shape == images.shape
    assert float(psnr_per_image(images, stored).min()) > 38.0
    assert float(psnr_per_image(images, apply_storage(images, "jpeg20")).min()) < float(
        psnr_per_image(images, stored).min()
    )
    back, _ = read_image(write_image(tmp_path / "a.jpg", images[0], "jpeg95"))
    assert torch.equal(back, stored[0])


def test_format_names_are_validated():
    assert parse_format("jpeg").quality == 95 and parse_format("jpeg95").name == "jpeg"
    assert parse_format("jpeg70").name == "jpeg70"
    for bad in ("png4", "jpeg0", "jpeg101", "tiff"):
        with pytest.raises(ValueError, match="storage format|quality"):
            parse_format(bad)


def test_an_unreadable_image_is_a_user_error(tmp_path):
    from nonxfer_bench.core.errors import UserError

    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        read_image(tmp_path / "bad.png")


# --- encode / verify through the CLI ----------------------------------------------------------------

ZOO = {
    "models": [
        {
            "name": name,
            "arch": "resnet18",
            "kwargs": {"in_chans": 3, "layers": [1, 1, 1, 1], "channels": [4, 8, 8, 8], "num_classes": 2},
            "preprocess": {"input_size": [3, 16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "weights": {"source": "none"},
            "seed": seed,
        }
        for name, seed in (("auth", 0), ("other", 1))
    ]
}


def _image_folder(root):
    """ImageNet-val-like layout with RGB JPEG, grayscale PNG, RGBA PNG and 16-bit grayscale PNG inputs."""
    import png

    rng = np.random.default_rng(0)
    for label in ("n01", "n02"):
        folder = root / label
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
        Image.fromarray(rng.integers(0, 256, (18, 18), dtype=np.uint8)).save(folder / "gray.png")
        Image.fromarray(rng.integers(0, 256, (18, 18, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
        with open(folder / "deep.png", "wb") as handle:
            png.Writer(20, 18, greyscale=True, bitdepth=16).write(
                handle, rng.integers(0, 65536, (18, 20), dtype=np.uint16).tolist()
            )
    return root


def _classes(folder):
    """A class file naming the folders of :func:`_image_folder` (ZOO names no dataset, so no class names)."""
    path = folder / "classes.txt"
    path.write_text("n01\nn02\n")
    return str(path)


@pytest.mark.parametrize("fmt", ["png16", "png8"])
def test_encode_then_verify_end_to_end(fmt, tmp_path, capsys):
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump(ZOO))
    source = _image_folder(tmp_path / "in")
    out = tmp_path / "out"
    argv = encode_args(source, out, zoo, "auth", "patch", 30, format=fmt, seed_key="s3cret-key", batch_size=3)
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "s3cret-key" not in (out / "manifest.json").read_text()
    assert manifest["format"] == fmt and manifest["model"]["name"] == "auth" and len(manifest["key_id"]) == 16
    assert manifest["encoder"]["name"] == "patch" and manifest["encoder"]["strength"] == 30
    assert manifest["notes"] == {
        "alpha dropped": 2,
        "16-bit source": 2,
        RESIZED: 4,
        CROPPED: 4,
    }  # 18 px squares; 20 x 24 and 18 x 20 images
    assert sorted(e["source"] for e in manifest["images"]) == sorted(
        p.relative_to(source).as_posix() for p in source.rglob("*.*")
    )
    for entry in manifest["images"]:
        image, _ = read_image(out / entry["file"])
        assert image.shape == (3, 16, 16) and entry["file"].endswith(".png")
        assert 25 < entry["psnr"] < 35  # achieved PSNR after storage, near the 30 dB asked for
    # the same key gives the same release; another key another one
    again, other_key = tmp_path / "again", tmp_path / "other_key"
    assert main(argv[:2] + [str(again)] + argv[3:]) == 0
    assert main([str(other_key) if a == str(out) else "other-key" if a == "s3cret-key" else a for a in argv]) == 0
    first = manifest["images"][0]["file"]
    assert torch.equal(read_image(out / first)[0], read_image(again / first)[0])
    assert not torch.equal(read_image(out / first)[0], read_image(other_key / first)[0])
    capsys.readouterr()

    assert (
        main(
            [
                "verify",
                str(out),
                "--zoo",
                str(zoo),
                "--originals",
                str(source),
                "--labels",
                "--classes",
                _classes(tmp_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "authorized" in printed and "unauthorized" in printed
    report = json.loads((out / "verify.json").read_text())
    rows = {r["model"]: r for r in report["models"]}
    assert rows["auth"]["role"] == "authorized" and rows["other"]["role"] == "unauthorized"
    assert report["classes"] == ["n01", "n02"]
    for row in rows.values():
        assert row["n"] == 8 and 0 <= row["agreement"] <= 1 and 0 <= row["accuracy"] <= 1
        for metric in (
            "agreement",
            "accuracy",
            "clean_accuracy",
        ):  # every share with its 95% Wilson interval over the n images
            interval = wilson(round(row[metric] * row["n"]), row["n"])
            assert row[f"{metric}_ci"] == pytest.approx([interval.lo, interval.hi])
            assert f"{100 * row[metric]:.1f} [{100 * interval.lo:.1f}, {100 * interval.hi:.1f}]" in printed
    # the last lines: the verdict (accuracy, as labels are known), then where the report went
    verdict_line = printed.splitlines()[-2]
    assert verdict_line == report["verdict"]["text"] and report["verdict"]["metric"] == "accuracy"
    assert (
        verdict_line.startswith("verdict: the release is ")
        and "vs best unauthorized other" in verdict_line
        and "(accuracy, n=8" in verdict_line
    )


def _release(tmp_path):
    """A png8 release of the ImageNet-like folder for 'auth' of ZOO: (zoo file, source folder, release folder)."""
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump(ZOO))
    source = _image_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(encode_args(source, out, zoo, "auth", "patch", 30, seed_key="k")) == 0
    return zoo, source, out


def test_verify_without_originals_or_labels_says_what_to_pass(tmp_path, capsys):
    zoo, _, out = _release(tmp_path)
    capsys.readouterr()
    assert main(["verify", str(out), "--zoo", str(zoo)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--originals" in err and "--labels" in err
    assert not (out / "verify.json").exists()


def test_verify_never_overwrites_an_earlier_report_without_overwrite(tmp_path, capsys):
    zoo, source, out = _release(tmp_path)
    assert main(["verify", str(out), "--zoo", str(zoo), "--labels", "--classes", _classes(tmp_path)]) == 0
    before = (out / "verify.json").read_text()
    capsys.readouterr()
    assert main(["verify", str(out), "--zoo", str(zoo), "--originals", str(source)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "verify.json" in err and "--overwrite" in err
    assert (out / "verify.json").read_text() == before
    assert main(["verify", str(out), "--zoo", str(zoo), "--originals", str(source), "--overwrite"]) == 0
    assert json.loads((out / "verify.json").read_text())["verdict"]["metric"] == "agreement"


def test_verify_labels_controls_as_controls(tmp_path, capsys):
    zoo, _, out = _release(tmp_path)
    assert (
        main(
            ["verify", str(out), "--zoo", str(zoo), "--labels", "--classes", _classes(tmp_path), "--controls", "other"]
        )
        == 0
    )
    rows = {r["model"]: r["role"] for r in json.loads((out / "verify.json").read_text())["models"]}
    assert rows == {"auth": "authorized", "other": "control"}
    assert "control" in capsys.readouterr().out
    # a suite file's controls are controls too
    suite = digits_suite(tmp_path, zoo, authorized=["auth"], controls=["other"])
    assert (
        main(["verify", str(out), "--zoo", str(suite), "--labels", "--classes", _classes(tmp_path), "--overwrite"]) == 0
    )
    report = json.loads((out / "verify.json").read_text())
    assert {r["model"]: r["role"] for r in report["models"]} == {"auth": "authorized", "other": "control"}
    assert report["verdict"]["non_transferable"] is None and report["verdict"]["text"].startswith(
        "verdict: none: no unauthorized model"
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"auth": {"seed": 7}}, "does not hold the release's authorized model 'auth'"),  # other weights, same name
        ({"auth": {"name": "renamed", "seed": 7}}, "it has no model of that name"),
        (
            {
                "other": {
                    "preprocess": {"input_size": [1, 16, 16], "mean": [0.5], "std": [0.25]},
                    "kwargs": {**ZOO["models"][1]["kwargs"], "in_chans": 1},
                }
            },
            "'other' takes 1x16x16, but the release's images are 3x16x16",
        ),
        (
            {"other": {"preprocess": {**ZOO["models"][1]["preprocess"], "input_size": [3, 24, 24]}}},
            "'other' takes 3x24x24",
        ),
    ],
)
def test_verify_refuses_a_zoo_that_does_not_fit_the_release(change, expected, tmp_path, capsys):
    _, source, out = _release(tmp_path)
    other = tmp_path / "other-zoo.yaml"
    other.write_text(yaml.safe_dump({"models": [{**m, **change.get(m["name"], {})} for m in ZOO["models"]]}))
    capsys.readouterr()
    assert main(["verify", str(out), "--zoo", str(other), "--originals", str(source), "--models", "auth", "other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(other) in err
    assert not (out / "verify.json").exists()


def test_the_verdict_rule_compares_95_percent_intervals():
    from nonxfer_bench.owner.verdict import verdict

    def rows(auth, best, n=200):
        return [
            {"model": "a", "role": "authorized", "n": n, "accuracy": auth},
            {"model": "u", "role": "unauthorized", "n": n, "accuracy": best},
            {"model": "c", "role": "control", "n": n, "accuracy": 0.99},
        ]

    clear = verdict(rows(0.9, 0.3), "accuracy")
    assert clear["non_transferable"] is True
    assert (
        clear["text"].startswith("verdict: the release is non-transferable: authorized a 90.0% [")
        and "vs best unauthorized u 30.0% [" in clear["text"]
    )
    close = verdict(rows(0.9, 0.85), "accuracy")  # intervals overlap at n = 200; the control never counts
    assert close["non_transferable"] is False and "NOT shown" in close["text"] and "more images" in close["text"]
    assert verdict(rows(0.9, 0.85, n=20000), "accuracy")["non_transferable"] is True
    worse = verdict(rows(0.5, 0.6), "accuracy")
    assert worse["non_transferable"] is False and "scores as high as the authorized one" in worse["text"]


def test_encode_and_verify_errors_are_one_line_exit_2(tmp_path, capsys):
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump(ZOO))
    source = tmp_path / "in"
    source.mkdir()
    (source / "broken.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    assert main(encode_args(source, out, zoo, "auth", "patch", 30, seed_key="k")) == 2
    assert "broken.png: cannot read image" in capsys.readouterr().err
    assert main(encode_args(source, out, zoo, "auth", "patch", 30, seed_key="k", format="png4")) == 2
    assert "unknown storage format 'png4'" in capsys.readouterr().err
    assert main(encode_args(source, out, zoo, "nope", "patch", 30, seed_key="k")) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--zoo", str(zoo), "--labels"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


# --- the suite's storage axis -----------------------------------------------------------------------


def test_unknown_storage_in_a_suite_is_one_line(tmp_path, digits_zoo, capsys):
    path = digits_suite(tmp_path, digits_zoo, storage=["float32", "png5"])
    assert main(["run", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "storage" in err and "png5" in err and "png16" in err


def test_storage_axis_keeps_float32_keys_and_stores_the_release(tmp_path, digits_zoo):
    from nonxfer_bench.execution.plan import plan_suite
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite

    small = {"dataset": {"name": "digits", "limit": 40}, "encoders": [{"name": "patch", "strengths": [25.0]}],
             "attacks": [{"name": "identity"}], "batch_size": 40}  # fmt: skip
    plain = plan_suite(load_suite(digits_suite(tmp_path, digits_zoo, **small)))
    suite = load_suite(digits_suite(tmp_path, digits_zoo, storage=["float32", "png8"], **small))
    groups = plan_suite(suite)
    assert [g.key for g in groups if g.storage == "float32"] == [g.key for g in plain]
    assert [g.cells for g in groups if g.storage == "float32"][0].values().__len__() == len(plain[0].cells)
    png8 = [g for g in groups if g.storage == "png8"]
    assert len(png8) == len(plain) and not {g.key for g in png8} & {g.key for g in plain}
    assert all(g.label.endswith("/png8") for g in png8)

    cells = Runner(suite).run().cells
    by = {(c.encoder, c.storage, c.model): c for c in cells}
    lossless, stored = by[("patch", "float32", "vit_a")], by[("patch", "png8", "vit_a")]
    assert lossless.stored_psnr == pytest.approx(lossless.encoded_psnr, abs=0.01)
    assert stored.encoded_psnr == lossless.encoded_psnr  # same draws, only the storage differs
    assert stored.stored_psnr != lossless.stored_psnr
    assert 20 < stored.stored_psnr < 30


# --- the operator encoder's one-time solve is announced -----------------------------------------------


def test_encode_announces_the_one_time_operator_solve_then_the_cache_hit(tmp_path, monkeypatch, capsys):
    from collections import OrderedDict

    import nonxfer_bench.linalg.operator as linalg_operator

    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(linalg_operator, "_CACHE", OrderedDict())  # as in a fresh process
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump(ZOO))
    source = _image_folder(tmp_path / "in")
    argv = encode_args(source, tmp_path / "out", zoo, "auth", "operator", 30, param="k=8", seed_key="k")
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()
    solve = [line for line in first if "one-time solve" in line]
    assert len(solve) == 1, first
    entry = next(iter((tmp_path / "cache" / "operator").glob("*.npy")))
    for part in (
        "auth's first layer (conv1)",
        "3x16x16 = 768 input pixels, k=8",
        "exact (dense)",
        "estimated about",
        str(entry),
    ):
        assert part in solve[0]
    assert not any("loaded from the cache" in line for line in first)

    monkeypatch.setattr(linalg_operator, "_CACHE", OrderedDict())
    assert main(argv[:2] + [str(tmp_path / "again")] + argv[3:]) == 0
    second = capsys.readouterr().out
    assert "one-time solve" not in second
    assert (
        "operator subspace of auth's first layer (conv1) on 3x16x16 = 768 input pixels, k=8: loaded from "
        f"the cache {entry}" in second
    )


def test_a_run_logs_the_operator_solve_before_it_starts(tmp_path, digits_zoo, monkeypatch, capsys):
    from collections import OrderedDict

    import nonxfer_bench.linalg.operator as linalg_operator

    monkeypatch.setenv("NXB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(linalg_operator, "_CACHE", OrderedDict())
    small = {
        "dataset": {"name": "digits", "limit": 20},
        "encoders": [{"name": "operator", "strengths": [30.0], "params": {"k": 4}}],
        "attacks": [{"name": "identity"}],
        "batch_size": 20,
    }
    path = digits_suite(tmp_path, digits_zoo, **small)
    assert main(["run", str(path), "--no-tracking"]) == 0
    printed = capsys.readouterr().out
    log = (tmp_path / "runs" / "digits" / "run.log").read_text()
    for text in (printed, log):
        line = next(line for line in text.splitlines() if "one-time solve" in line)
        assert (
            "digits: operator encoder: one-time solve" in line
            and "vit_a's first layer" in line
            and "1x16x16 = 256 input pixels, k=4" in line
        )
        assert "estimated about" in line and str(tmp_path / "cache" / "operator") in line
