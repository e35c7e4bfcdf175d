"""A protection that cannot be applied to an authorized model is one line at suite load, before any work."""

from pathlib import Path

import pytest

from tests.helpers import write_yaml
from tests.hostile.conftest import refused

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "authorized, params, expected",
    [
        ("resnet", {"scramble": False}, ("non-overlapping patch embedding", "conv1 is 7x7/2x2")),
        ("mobilenet", {}, ("non-overlapping patch embedding", "conv_stem")),
        ("convnext", {}, ("VisionTransformer", "scramble: false")),
    ],
)
def test_the_keyed_transform_on_a_model_it_cannot_fold_into_is_refused(
    tmp_path: Path, cwd: Path, authorized: str, params: dict, expected: tuple
) -> None:
    suite = {
        "name": "keyed",
        "dataset": {"name": "digits", "limit": 20},
        "zoo": str(ROOT / "suites/zoo/fashion.yaml"),
        "authorized": ["vit_a", authorized],
        "encoders": [{"name": "clean", "strengths": [0]}, {"name": "keyed_block", "strengths": [0], "params": params}],
        "attacks": [{"name": "identity"}],
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results")},
        "tracking": {"enabled": False},
    }
    path = write_yaml(tmp_path / "suite.yaml", suite)
    refused("run", path, cwd=cwd, expected=(str(path), "encoders[1]", f"authorized model {authorized!r}", *expected))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
