"""An encoder that cannot protect an authorized model (``Encoder.check_model``) is refused in one line before any work:
every refusal of every registered encoder on the Fashion-MNIST zoo, in a suite (naming the suite file and key) and in
``encode`` (naming its options); a plugin's refusal with hostile text, and a check_model that raises, alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonxfer_bench.encoders import ENCODERS, Encoder
from nonxfer_bench.encoders.gaussian import GaussianEncoder
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.zoo import model_structure
from tests.helpers import encoders_with_defaults, write_yaml
from tests.hostile.conftest import refused

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "suites/zoo/fashion.yaml"


def refusals() -> list[tuple[str, str, str]]:
    """(encoder, zoo model, reason) for every model of the zoo that a registered encoder (default parameters)
    refuses."""
    encoders = [ENCODERS.create(name) for name in encoders_with_defaults()]
    specs = load_zoo(ZOO).models
    return [
        (encoder.name, spec.name, reason)
        for encoder in encoders
        if type(encoder).check_model is not Encoder.check_model
        for spec in specs
        if (reason := encoder.check_model(model_structure(spec)))
    ]


REFUSALS = refusals()


def keyed_suite(tmp_path: Path, encoder: str, authorized: str) -> Path:
    return write_yaml(
        tmp_path / "suite.yaml",
        {
            "name": "refusal",
            "dataset": {"name": "digits", "limit": 20},
            "zoo": str(ZOO),
            "authorized": ["vit_a", authorized],
            "encoders": [{"name": "clean", "strengths": [0]}, {"name": encoder, "strengths": [20]}],
            "attacks": [{"name": "identity"}],
            "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
            "tracking": {"enabled": False},
        },
    )


def test_the_refusals_below_cover_every_first_layer_the_keyed_transform_cannot_fold_into():
    assert {model for encoder, model, _ in REFUSALS if encoder == "keyed_block"} == {
        "convnext",
        "resnet",
        "resnet_deep",
        "mobilenet",
    }


@pytest.mark.parametrize(
    "encoder, model, reason", REFUSALS, ids=[f"{encoder}-{model}" for encoder, model, _ in REFUSALS]
)
def test_a_suite_whose_encoder_cannot_protect_an_authorized_model_is_one_line_at_load(
    tmp_path: Path, cwd: Path, encoder: str, model: str, reason: str
):
    path = keyed_suite(tmp_path, encoder, model)
    refused(
        "run",
        path,
        cwd=cwd,
        expected=(f"{path}: key 'encoders[1]': {encoder} cannot protect authorized model {model!r}: {reason}",),
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "encoder, model, reason", REFUSALS, ids=[f"{encoder}-{model}" for encoder, model, _ in REFUSALS]
)
def test_encode_with_an_encoder_that_cannot_protect_the_model_is_one_line(
    tmp_path: Path, cwd: Path, encoder: str, model: str, reason: str
):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("L", (28, 28), 128).save(photos / "a.png")
    argv = (
        "encode",
        photos,
        tmp_path / "release",
        "--zoo",
        ZOO,
        "--model",
        model,
        "--encoder",
        encoder,
        "--strength",
        "20",
        "--seed-key",
        "k",
    )
    refused(*argv, cwd=cwd, expected=(f"--encoder {encoder} cannot protect --model {model}: {reason}",))
    assert not (tmp_path / "release").exists()


class Fussy(GaussianEncoder):
    """White noise that refuses ResNets with a hostile reason, or raises from check_model when ``error`` is set."""

    error = None

    def check_model(self, model):
        if self.error is not None:
            raise self.error
        return "no ResNets\nhere \x1b[31mred\x1b[0m" if model.spec.arch.startswith("resnet") else None


@pytest.fixture
def fussy(monkeypatch):
    ENCODERS.names()
    monkeypatch.setattr(ENCODERS, "_classes", dict(ENCODERS._classes))
    monkeypatch.setattr(Fussy, "name", "fussy", raising=False)
    ENCODERS._classes["fussy"] = Fussy


def test_a_plugins_refusal_with_line_breaks_and_escapes_is_still_one_clean_line(fussy, tmp_path: Path, cwd: Path):
    path = keyed_suite(tmp_path, "fussy", "resnet")
    line = refused(
        "run",
        path,
        cwd=cwd,
        expected=(f"{path}: key 'encoders[1]': fussy cannot protect authorized model 'resnet': no ResNets",),
    )
    assert "\x1b" not in line


def test_a_check_model_that_raises_is_one_line_naming_the_entry(fussy, monkeypatch, tmp_path: Path, cwd: Path):
    monkeypatch.setattr(Fussy, "error", RuntimeError("meta tensors have no values"))
    path = keyed_suite(tmp_path, "fussy", "vit_b")
    refused(
        "run",
        path,
        cwd=cwd,
        expected=(
            f"{path}: key 'encoders[1]': fussy cannot protect authorized model 'vit_a': its check_model raised "
            "RuntimeError",
        ),
    )
    assert not (tmp_path / "runs").exists()
