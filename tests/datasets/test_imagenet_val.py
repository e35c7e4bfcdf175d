"""The official flat ImageNet-val folder with devkit or LOC_val_solution labels, mapped to timm's class order."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.datasets import DATASETS, load_dataset
from nonxfer_bench.datasets.imagenet_val import timm_classes

CLASSES = timm_classes()
WNIDS = [CLASSES[i] for i in (0, 999, 1, 500, 0, 123)]  # image i has class WNIDS[i - 1]


def write_folder(root: Path, count: int = len(WNIDS)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        Image.fromarray(np.full((30 + i, 40, 3), 20 * i, dtype=np.uint8)).save(
            root / f"ILSVRC2012_val_{i:08d}.JPEG", quality=95
        )
    return root


def write_solution(path: Path, wnids: list[str]) -> Path:
    rows = [f"ILSVRC2012_val_{i:08d},{wnid} 10 20 30 40 {wnid} 1 2 3 4" for i, wnid in enumerate(wnids, 1)]
    path.write_text("\n".join(["ImageId,PredictionString", *reversed(rows)]) + "\n")  # row order must not matter
    return path


def write_devkit(folder: Path, wnids: list[str]) -> Path:
    """A devkit whose class IDs are a permutation of timm's order (as the real one's are), plus non-leaf synsets."""
    order = np.random.default_rng(0).permutation(1000)
    devkit_id = {CLASSES[j]: position + 1 for position, j in enumerate(order)}
    entries = [(position + 1, CLASSES[j], 0) for position, j in enumerate(order)] + [
        (1001, "n00001740", 3),
        (1002, "n00002137", 2),
    ]
    synsets = np.array(entries, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    (folder / "data").mkdir(parents=True, exist_ok=True)
    savemat(folder / "data" / "meta.mat", {"synsets": synsets})
    (folder / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{devkit_id[w]}\n" for w in wnids))
    return folder


def expected() -> list[int]:
    return [CLASSES.index(w) for w in WNIDS]


def test_loc_solution_labels_are_timm_class_indices(tmp_path):
    root = write_folder(tmp_path / "val")
    data = load_dataset(
        "imagenet_val", {"root": str(root), "solution": str(write_solution(tmp_path / "sol.csv", WNIDS)), "size": 16}
    )
    assert data.images.shape == (len(WNIDS), 3, 16, 16)
    assert data.labels.tolist() == expected() == [0, 999, 1, 500, 0, 123]
    assert data.classes == sorted(data.classes) and len(data.classes) == 1000


def test_devkit_labels_map_its_class_ids_through_meta_mat_to_timm_order(tmp_path):
    root = write_folder(tmp_path / "val")
    devkit = write_devkit(tmp_path / "ILSVRC2012_devkit_t12", WNIDS)
    data = load_dataset("imagenet_val", {"root": str(root), "devkit": str(devkit), "size": 16})
    assert data.labels.tolist() == expected()
    solution = load_dataset(
        "imagenet_val", {"root": str(root), "solution": str(write_solution(tmp_path / "sol.csv", WNIDS)), "size": 16}
    )
    assert (data.images == solution.images).all()  # images decoded in file order either way


def test_the_synset_mapping_must_list_timms_classes(tmp_path):
    root = write_folder(tmp_path / "val")
    solution = write_solution(tmp_path / "sol.csv", WNIDS)
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} some words, more\n" for w in reversed(CLASSES)))  # any order: labels use timm's
    assert (
        load_dataset(
            "imagenet_val", {"root": str(root), "solution": str(solution), "synsets": str(mapping), "size": 16}
        ).labels.tolist()
        == expected()
    )
    mapping.write_text("".join(f"{w} words\n" for w in CLASSES[:-1] + ["n99999999"]))
    with pytest.raises(UserError, match="1 unknown, first: \\['n99999999'\\]"):
        load_dataset(
            "imagenet_val", {"root": str(root), "solution": str(solution), "synsets": str(mapping), "size": 16}
        )


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_label", "1 image\\(s\\) in .* have no label in .*sol.csv \\(first: ILSVRC2012_val_00000006.JPEG\\)"),
        ("unknown_wnid", "sol.csv line \\d: 'n99999999' is not an ImageNet-1k WordNet ID"),
        ("extra_label", "labels 7 images, .* holds 6 \\(first without a file: ILSVRC2012_val_00000007\\)"),
        ("duplicate", "a second label for ILSVRC2012_val_00000001"),
        ("bad_name", "photo.JPEG in .* is not named like the official"),
        ("bad_header", "expected the header 'ImageId,PredictionString'"),
        ("devkit_bad_id", "ground_truth.txt line 2: '1005' is not a class ID"),
        ("class_folders", "no images in .*use the dataset 'image_folder'"),
    ],
)
def test_every_mismatch_is_one_line(tmp_path, case, message):
    root = write_folder(tmp_path / "val")
    solution = tmp_path / "sol.csv"
    wnids = {
        "missing_label": WNIDS[:-1],
        "unknown_wnid": WNIDS[:2] + ["n99999999"] + WNIDS[3:],
        "extra_label": WNIDS + [CLASSES[7]],
    }.get(case, WNIDS)
    write_solution(solution, wnids)
    params = {"root": str(root), "solution": str(solution), "size": 16}
    if case == "duplicate":
        solution.write_text(solution.read_text() + f"ILSVRC2012_val_00000001,{CLASSES[3]} 1 2 3 4\n")
    elif case == "bad_name":
        (root / "ILSVRC2012_val_00000006.JPEG").rename(root / "photo.JPEG")
    elif case == "bad_header":
        solution.write_text("id,label\n" + solution.read_text().split("\n", 1)[1])
    elif case == "devkit_bad_id":
        devkit = write_devkit(tmp_path / "devkit", WNIDS)
        truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
        lines = truth.read_text().splitlines()
        truth.write_text("\n".join([lines[0], "1005", *lines[2:]]) + "\n")
        params = {"root": str(root), "devkit": str(devkit), "size": 16}
    elif case == "class_folders":
        root = tmp_path / "classes"
        (root / CLASSES[0]).mkdir(parents=True)
        params["root"] = str(root)
    with pytest.raises(UserError, match=message) as error:
        DATASETS.create("imagenet_val", params).check()
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_suite_with_both_or_no_label_sources_is_refused_in_one_line(tmp_path, digits_zoo):
    from tests.helpers import digits_suite

    root = write_folder(tmp_path / "val")
    for params in ({"root": str(root)}, {"root": str(root), "solution": "a.csv", "devkit": "kit"}):
        suite = digits_suite(
            tmp_path, digits_zoo, dataset={"name": "imagenet_val", "params": {**params, "channels": 1}}
        )
        done = subprocess.run(
            [sys.executable, "-m", "nonxfer_bench.cli", "run", str(suite), "--no-tracking"],
            capture_output=True,
            text=True,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "exactly one label source" in lines[0], done.stderr
