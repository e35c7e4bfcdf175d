"""Third-party components: entry points register them, and one that fails to import is one line, not a crash."""

from importlib import metadata

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.attacks.testing import CHECKS
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.cli import main
from nonxfer_bench.core.errors import UserError

GROUP = "nonxfer_bench.attacks"


class Negate(Attack):
    """Mirrors the images around 0.5 by the strength."""

    threat = ThreatModel(tier=Tier.NONE, text="no knowledge: a fixed transformation")

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        return images + strength * (1 - 2 * images)


@pytest.fixture
def plugins(monkeypatch):
    """ATTACKS reloaded with two entry points: one that imports and one whose module is missing."""
    entries = [
        metadata.EntryPoint(name="broken", value="nxb_no_such_plugin.attacks", group=GROUP),
        metadata.EntryPoint(name="negate", value=f"{__name__}:Negate", group=GROUP),
    ]
    real = metadata.entry_points

    def entry_points(**selection):
        return entries if selection.get("group") == GROUP else real(**selection)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(ATTACKS, "_classes", dict(ATTACKS._classes))
    monkeypatch.setattr(ATTACKS, "_loaded", False)
    monkeypatch.setattr(ATTACKS, "broken", {})
    monkeypatch.setattr(ATTACKS, "plugins", {})


def test_a_plugin_that_fails_to_import_is_one_line_and_the_rest_works(plugins, capsys):
    assert main(["list", "attacks"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "'broken = nxb_no_such_plugin.attacks'" in lines[0] and "ModuleNotFoundError: No module named 'nxb_no_such_plugin'" in lines[0]
    listed = " ".join(captured.out.split())
    assert f"negate [none] Mirrors the images around 0.5 by the strength. [plugin: {__name__}:Negate]" in listed and "jpeg_pil" in listed
    assert main(["list", "encoders"]) == 0  # other registries and commands are untouched
    with pytest.raises(UserError, match="plugins that failed to import: broken = nxb_no_such_plugin.attacks"):
        ATTACKS.get("broken")


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_plugin_attack_meets_the_importable_specification(plugins, check):
    check("negate", None)


def test_the_specification_catches_a_nondeterministic_attack(plugins, monkeypatch):
    monkeypatch.setattr(Negate, "forward", lambda self, images, strength, generator: images + torch.rand_like(images))
    with pytest.raises(AssertionError, match="not deterministic"):
        CHECKS["shape_dtype_and_determinism"]("negate", None)


def test_a_checkout_on_pythonpath_never_runs_the_installed_attacks(tmp_path):
    """``PYTHONPATH=.`` in a second checkout: nonxfer_bench from it, attacks from the installed package; refused."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "nonxfer_bench", tmp_path / "nonxfer_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "attacks", tmp_path / "attacks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    done = subprocess.run([sys.executable, "-m", "nonxfer_bench", "list", "suites"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert f"nonxfer_bench is imported from {tmp_path}" in done.stderr and "pip install -e ." in done.stderr
