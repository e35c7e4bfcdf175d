"""The data owner's whole path on the tiny digits zoo: a folder of images in class folders is encoded, verified with
the labels its folder names give, attacked with the protocol's fast ensemble as it lies on disk, and its protection
card carries the numbers an ordinary suite reports for the same images (issue 27)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.app.sources import find_cells
from nonxfer_bench.cli import main
from nonxfer_bench.datasets.base import DATASETS
from nonxfer_bench.execution.plan import plan_suite
from nonxfer_bench.loading import load_protocol, load_suite, load_zoo
from nonxfer_bench.rendering.verdict import TIER_NAMES
from nonxfer_bench.storage.formats import read_image
from nonxfer_bench.zoo import build_model
from tests.helpers import encode_args, write_yaml
from tests.owner.conftest import NE_V1

STRENGTH = "10"  # patch: standard PSNR in dB
BATCH = 64


def digit_photos(folder: Path, count: int = 48) -> tuple[Path, torch.Tensor]:
    """``count`` digits test images of the classes 2..9 as 16 px PNGs in ``folder/<class>/<index>.png`` (no folder
    for 0 and 1: numbering the folders present would shift every label by two); returns the true labels in the sorted
    order of the files."""
    data = DATASETS.create("digits", {"split": "test"}).load()
    keep = torch.nonzero(data.labels >= 2).flatten()[:count].tolist()
    rows = []
    for index in keep:
        target = folder / str(int(data.labels[index])) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[index, 0].numpy()).save(target)
        rows.append((target.relative_to(folder).as_posix(), int(data.labels[index])))
    return folder, torch.tensor([label for _, label in sorted(rows)])


def owner_suite(tmp_path: Path, zoo: Path, photos: Path) -> Path:
    """An ordinary suite on the same images: the release's encoder (patch) at the same strength, the fast ensemble's
    attacks of the no-knowledge tier (none of which draws at random), the protocol's verdict rule."""
    fast = yaml.safe_load(NE_V1.read_text())["fast"]["none"]
    return write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": "owner-suite",
            "dataset": {
                "name": "image_folder",
                "params": {"root": str(photos), "classes": [str(i) for i in range(10)], "size": 16, "crop_pct": 1.0},
            },
            "zoo": str(zoo),
            "authorized": ["vit_a"],
            "encoders": [{"name": "patch", "strengths": [float(STRENGTH)]}],
            "attacks": fast,
            "batch_size": BATCH,
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
            "tracking": {"enabled": False},
        },
    )


@pytest.mark.slow
def test_a_folder_encoded_verified_and_attacked_gets_the_suites_numbers_on_its_card(digits_zoo, tmp_path, capsys):
    photos, labels = digit_photos(tmp_path / "photos")
    suite_file = owner_suite(tmp_path, digits_zoo, photos)
    group = next(g for g in plan_suite(load_suite(suite_file)) if g.encoder.name == "patch")
    release = tmp_path / "release"
    # the suite's draw key as the owner's seed key: the release holds the suite's NEs, file for file
    options = dict(format="float32", seed_key=group.draw_key, batch_size=BATCH, threads=1)
    assert main(encode_args(photos, release, digits_zoo, "vit_a", "patch", STRENGTH, **options)) == 0
    assert main(["verify", str(release), "--zoo", str(digits_zoo), "--labels", "--threads", "1"]) == 0
    manifest = json.loads((release / "manifest.json").read_text())
    released = torch.stack([read_image(release / entry["file"])[0] for entry in manifest["images"]])
    vit_a = build_model(next(m for m in load_zoo(digits_zoo).models if m.name == "vit_a"))
    truth = float((vit_a.predict(released, BATCH) == labels).double().mean())
    assert json.loads((release / "verify.json").read_text())["models"][0]["accuracy"] == pytest.approx(truth, abs=1e-12)
    assert truth > 0.5  # labels by class name: folders 2..9 numbered 0..7 left vit_a near chance

    assert (
        main(
            [
                "attack",
                str(release),
                "--originals",
                str(photos),
                "--zoo",
                str(digits_zoo),
                "--protocol",
                str(NE_V1),
                "--ensemble",
                "fast",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    card = json.loads((release / "protection.json").read_text())
    evidence = card["evidence"]
    assert evidence["protocol"] == {"name": "ne-v1", "version": 1, "ensemble": "fast"} and evidence["n"] + evidence[
        "tuning"
    ] == len(labels)
    assert [tier["tier"] for tier in evidence["tiers"]][:1] == ["none"] and "cheapest known break" in printed
    assert evidence["identification"].startswith(
        "`identify` ranked the authorized model first in "
    )  # the zoo's models as candidates, whatever broke it

    assert main(["run", str(suite_file), "--no-tracking"]) == 0
    found = find_cells("leaderboard", suite_file)
    suite = [
        v for v in verdicts(results_frame(found.cells), load_protocol(NE_V1).verdict) if v.release.encoder == "patch"
    ]
    assert len(suite) == 1
    none = suite[0].tiers[0]
    card_none = evidence["tiers"][0]
    assert (card_none["step"], card_none["model"], card_none["broken"]) == (none.step.label, none.model, none.broken)
    assert card_none["best"] == {"estimate": none.best.estimate, "lo": none.best.lo, "hi": none.best.hi}
    assert card_none["gap"] == {"estimate": none.gap.estimate, "lo": none.gap.lo, "hi": none.gap.hi}
    assert evidence["authorized"] == {
        "estimate": suite[0].auth.estimate,
        "lo": suite[0].auth.lo,
        "hi": suite[0].auth.hi,
    }
    assert evidence["n"] == suite[0].n and evidence["target"] == suite[0].target
    # every tier either ran or was not needed (an attacker who knows less broke it): none is reported as unknown
    ran = [tier["tier"] for tier in evidence["tiers"] if tier["tier"] != "white_box"]
    assert evidence["not_run"] == [] and ran + evidence["not_needed"] == list(TIER_NAMES)
    assert not evidence["not_needed"] or evidence["break"].startswith("broken at")
    page = (release / "PROTECTION.md").read_text()
    assert page.count("not needed: an attacker who knows less already breaks it") == len(
        evidence["not_needed"]
    )  # a row per tier, whatever happened
    assert (
        "Not yet attacked" not in page
        and f"{100 * none.best.estimate:.1f}% [{100 * none.best.lo:.1f}, {100 * none.best.hi:.1f}]" in page
    )


@pytest.mark.slow
def test_a_release_moved_with_its_originals_gets_the_same_card(digits_zoo, tmp_path):
    """The card does not depend on where the folders lie: a release and its originals copied elsewhere (under another
    name) and attacked there draw what they drew where they were made, so every tier reports the same numbers, and
    every attack gets the same result on every image."""
    photos, _ = digit_photos(tmp_path / "here" / "photos", count=26)
    release = tmp_path / "here" / "release"
    options = dict(format="float32", seed_key="the owner's key", batch_size=BATCH, threads=1)
    # 5 dB holds through no tier, and ne-v1 attacks every tier up to the first that breaks it: attackers that draw run
    assert main(encode_args(photos, release, digits_zoo, "vit_a", "patch", "5", **options)) == 0
    moved = shutil.copytree(release, tmp_path / "there" / "moved"), shutil.copytree(photos, tmp_path / "there" / "pics")
    tiers, outcomes = [], []
    for folder, originals in ((release, photos), moved):
        args = ["attack", folder, "--originals", originals, "--zoo", digits_zoo, "--protocol", NE_V1]
        assert main([*map(str, args), "--ensemble", "fast", "--threads", "1"]) == 0
        evidence = json.loads((folder / "protection.json").read_text())["evidence"]
        tiers.append(
            [(tier["tier"], tier["step"], tier["model"], tier["best"], tier["gap"]) for tier in evidence["tiers"]]
        )
        cells = find_cells("attack", folder / "attack" / "suite.yaml").cells
        ran = [c for c in cells if c.encoder == "stored_release"]  # outcomes.ids names the dataset, folder and all
        outcomes.append(
            sorted((c.attack, c.attack_strength, c.model, c.outcomes.correct, c.outcomes.agree) for c in ran)
        )
    assert len(tiers[0]) > 1  # a tier above no knowledge ran: its attackers draw at random
    assert tiers[1] == tiers[0]
    assert outcomes[1] == outcomes[0]
