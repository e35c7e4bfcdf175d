"""The data owner's path gave silently wrong answers (issue 27): each defect, on the committed Fashion-MNIST zoo and
Fashion-MNIST test images exported as PNG files, as a new user would meet it."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from PIL import Image

from nonxfer_bench.cli import main
from nonxfer_bench.datasets.base import DATASETS
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.storage.formats import read_image
from nonxfer_bench.zoo import build_model
from tests.helpers import encode_args
from tests.owner.conftest import FASHION_ZOO


def encode(source: Path, output: Path, *extra: str, encoder: str = "clean", strength: str = "0") -> int:
    return main(
        [*encode_args(source, output, FASHION_ZOO, "vit_a", encoder, strength, seed_key="owner-key", threads=1), *extra]
    )


def verify(release: Path, *extra: str) -> int:
    return main(["verify", str(release), "--zoo", str(FASHION_ZOO), "--threads", "1", "--overwrite", *extra])


def vit_a():
    return build_model(next(m for m in load_zoo(FASHION_ZOO).models if m.name == "vit_a"))


def two_classes(folder: Path, names: dict[int, str], per_class: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` Fashion-MNIST test images of each class in ``names`` as PNGs in ``folder/<names[label]>/``; returns
    the images (uint8) and labels in the sorted order of their paths."""
    data = DATASETS.create("fashion_mnist", {"split": "test"}).load()
    rows = []
    for label, name in names.items():
        for index in torch.nonzero(data.labels == label).flatten()[:per_class].tolist():
            target = folder / name / f"{index:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.images[index, 0].numpy()).save(target)
            rows.append((target.relative_to(folder).as_posix(), data.images[index], label))
    rows.sort(key=lambda row: row[0])
    return torch.stack([image for _, image, _ in rows]), torch.tensor([label for _, _, label in rows])


def accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((vit_a().predict(images.float() / 255.0, 64) == labels).double().mean())


# --- 1. labels come from the classes the zoo knows, not from the class folders present -----------------------------


def test_verify_labels_class_folders_by_the_zoos_class_names_whatever_folders_are_present(tmp_path, capsys):
    """Folders '3/' and 'Sneaker/' are Dress (3) and Sneaker (7): they were labels 0 and 1 (sorted folder names), and
    vit_a's accuracy on its own release fell to a few percent."""
    images, labels = two_classes(tmp_path / "photos", {3: "3", 7: "Sneaker"})
    assert encode(tmp_path / "photos", tmp_path / "release", "--format", "float32") == 0
    assert verify(tmp_path / "release", "--labels", "--models", "vit_a", "vit_b") == 0
    report = json.loads((tmp_path / "release" / "verify.json").read_text())
    authorized = report["models"][0]
    assert report["classes"] == DATASETS.get("fashion_mnist").CLASSES
    assert authorized["model"] == "vit_a" and authorized["accuracy"] == pytest.approx(
        accuracy(images, labels), abs=1e-12
    )
    assert authorized["accuracy"] > 0.5  # vit_a knows dresses and sneakers (labels 0 and 1 left it near 0)
    capsys.readouterr()


def test_a_class_file_names_the_labels_one_name_per_line(tmp_path):
    reversed_names = list(reversed(DATASETS.get("fashion_mnist").CLASSES))  # line i names label i: here class 9 - i
    (tmp_path / "classes.txt").write_text("\n".join(reversed_names) + "\n")
    images, labels = two_classes(tmp_path / "photos", {3: "dress", 7: "sneaker"})  # any case
    assert encode(tmp_path / "photos", tmp_path / "release", "--format", "float32") == 0
    assert verify(tmp_path / "release", "--labels", "--classes", str(tmp_path / "classes.txt")) == 0
    report = json.loads((tmp_path / "release" / "verify.json").read_text())
    assert report["classes"] == reversed_names
    assert report["models"][0]["accuracy"] == pytest.approx(accuracy(images, 9 - labels), abs=1e-12)


# --- 2. a release at the model's native geometry, no lossy crop
# --------------------------------------------------------


def test_encode_takes_an_image_at_the_models_input_size_as_it_is(photos, tmp_path, capsys):
    """28 px images for a 28 px model were resized to 31 px and center-cropped (timm's crop_pct 0.9): vit_a lost 13
    points of accuracy on the whole Fashion-MNIST test set (86.9 % -> 73.7 %)."""
    source, images, labels = photos
    assert encode(source, tmp_path / "release", "--format", "float32") == 0
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["decode"]["crop_pct"] == 1.0 and manifest["notes"] == {}
    released = torch.stack([read_image(tmp_path / "release" / entry["file"])[0] for entry in manifest["images"]])
    assert torch.equal(released, images.float() / 255.0)  # the clean encoder's release is the images, pixel for pixel
    capsys.readouterr()
    assert verify(tmp_path / "release", "--labels", "--models", "vit_a") == 0
    assert json.loads((tmp_path / "release" / "verify.json").read_text())["models"][0]["accuracy"] == pytest.approx(
        accuracy(images, labels), abs=1e-12
    )


def test_encode_says_what_it_changed_in_an_image_of_another_shape(tmp_path, capsys):
    from nonxfer_bench.owner.inputs import CROPPED

    (tmp_path / "photos").mkdir()
    Image.new("L", (40, 28), 90).save(tmp_path / "photos" / "wide.png")
    assert encode(tmp_path / "photos", tmp_path / "release", "--format", "float32") == 0
    assert json.loads((tmp_path / "release" / "manifest.json").read_text())["notes"] == {CROPPED: 1}
    assert f"{CROPPED}: 1 image(s)" in capsys.readouterr().out


# --- 3. storage formats an encoder declares; what storage did, measured ---------------------------------------------


def test_encode_refuses_a_storage_format_that_breaks_the_encoder(photos, tmp_path, capsys):
    """png8, the default format, clips the reference recipe's unclipped release: vit_a agreed with itself on 37.5 % of
    the images, without a word."""
    source = photos[0]
    capsys.readouterr()
    assert encode(source, tmp_path / "release", encoder="reference", strength="15") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "encoder reference" in err[0]
        and "--format png8" in err[0]
        and "only in float32" in err[0]
        and "--force" in err[0]
    )
    assert not (tmp_path / "release").exists()
    # with --force it is written, and both encode and verify say what storage did to the authorized model
    assert encode(source, tmp_path / "release", "--force", encoder="reference", strength="15") == 0
    printed = capsys.readouterr()
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    kept = manifest["authorized_agreement"]
    assert manifest["forced_format"] and "warning (--force)" in printed.err and kept["n"] == 24 and kept["kept"] < 18
    assert "Warning" in (tmp_path / "release" / "PROTECTION.md").read_text()
    assert verify(tmp_path / "release", "--originals", str(source), "--models", "vit_a") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("after png8 storage"))
    assert (
        f"keeps its prediction on the originals for {100 * kept['kept'] / 24:.1f}% [" in line
        and "(n=24, 95% Wilson interval)" in line
    )
    assert json.loads((tmp_path / "release" / "verify.json").read_text())["stored_agreement"][
        "agreement"
    ] == pytest.approx(kept["kept"] / 24)


# --- 4. the default model list on the shipped zoo; 5. what the manifest records -------------------------------------


def test_verify_skips_zoo_models_of_another_input_size_with_a_note(photos, tmp_path, capsys):
    """convnext takes 32 px: verify with every zoo model (the default) stopped with an error."""
    assert encode(photos[0], tmp_path / "release", "--format", "float32") == 0
    capsys.readouterr()
    assert verify(tmp_path / "release", "--originals", str(photos[0])) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "release" / "verify.json").read_text())
    assert [row["model"] for row in report["models"]] == ["vit_a", "vit_b", "resnet", "resnet_deep", "mobilenet"]
    assert report["skipped"] == {"convnext": [1, 32, 32]} and "not scored: convnext (1x32x32)" in printed
    assert (
        verify(tmp_path / "release", "--originals", str(photos[0]), "--models", "convnext") == 2
    )  # named: refused, saying why
    assert "'convnext' takes 1x32x32" in capsys.readouterr().err


def test_the_manifest_records_batch_size_date_and_how_the_draws_depend_on_them(photos, tmp_path, capsys):
    source = photos[0]
    args = ("--format", "float32", "--batch-size", "8")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert encode(source, tmp_path / "release", *args, encoder="reference", strength="15") == 0
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    created = datetime.fromisoformat(manifest["created"])
    assert created.utcoffset() == timedelta(0) and before <= created <= datetime.now(timezone.utc)
    assert manifest["batch_size"] == 8 and "batch size" in manifest["draws"]
    assert (
        encode(source, tmp_path / "release", *args, encoder="reference", strength="15") == 2
    )  # never replaced silently
    assert "--overwrite" in capsys.readouterr().err
    # the same key and batch size give the same release; another batch size other draws, as the manifest says
    for folder, batch in (("same", "8"), ("other", "5")):
        assert (
            encode(
                source,
                tmp_path / folder,
                "--format",
                "float32",
                "--batch-size",
                batch,
                encoder="reference",
                strength="15",
            )
            == 0
        )
    first = manifest["images"][-1]["file"]
    assert (tmp_path / "same" / first).read_bytes() == (tmp_path / "release" / first).read_bytes()
    assert (tmp_path / "other" / first).read_bytes() != (tmp_path / "release" / first).read_bytes()


def test_encode_writes_a_protection_card_that_is_not_yet_attacked(photos, tmp_path):
    assert encode(photos[0], tmp_path / "release", "--format", "float32", encoder="reference", strength="15") == 0
    card = json.loads((tmp_path / "release" / "protection.json").read_text())
    weights = hashlib.sha256(
        (FASHION_ZOO.parent / "weights" / "fashion" / "vit_a.safetensors").read_bytes()
    ).hexdigest()
    assert card["authorized"]["name"] == "vit_a" and card["authorized"]["weights_sha256"] == weights
    assert (
        card["protection"]["name"] == "reference"
        and card["storage"]["format"] == "float32"
        and card["evidence"] is None
    )
    assert card["authorized_agreement"]["n"] == 24 and card["authorized_agreement"]["estimate"] == 1.0
    page = (tmp_path / "release" / "PROTECTION.md").read_text()
    assert "Not yet attacked" in page and weights in page and "`reference` at strength 15" in page
    assert (
        verify(tmp_path / "release", "--originals", str(photos[0]), "--models", "vit_a") == 0
    )  # the card belongs to the release
