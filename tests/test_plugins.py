"""Third-party components: entry points register them, and one that fails to import is one line, not a crash. The
example protection plugin (tests/plugin_example, installed without pip) meets the encoder specification, is listed
with its threat model, and editing its code recomputes its cells and no others."""

import shutil
import sys
import tomllib
from importlib import import_module, metadata
from pathlib import Path

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.attacks.testing import CHECKS
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.cli import main
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.encoders import testing as encoder_spec
from nonxfer_bench.execution.plan import component_identity, plugin_files, plugin_source
from tests.helpers import write_yaml
from tests.hostile.test_component_params import TINY_MODEL

GROUP = "nonxfer_bench.attacks"
EXAMPLE = Path(__file__).parent / "plugin_example"  # a protection plugin as its author would write it


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
    assert (
        "'broken = nxb_no_such_plugin.attacks'" in lines[0]
        and "ModuleNotFoundError: No module named 'nxb_no_such_plugin'" in lines[0]
    )
    listed = " ".join(captured.out.split())
    assert (
        f"negate [none] Mirrors the images around 0.5 by the strength. [plugin: {__name__}:Negate]" in listed
        and "jpeg_pil" in listed
    )
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
    done = subprocess.run(
        [sys.executable, "-m", "nonxfer_bench", "list", "suites"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert f"nonxfer_bench is imported from {tmp_path}" in done.stderr and "pip install -e ." in done.stderr


# --- the example protection plugin -----------------------------------------------------------------------------------


def install_example(folder: Path) -> Path:
    """The example plugin installed into ``folder`` as pip would (without pip): its package copied next to a
    dist-info made from its pyproject.toml (name, version, entry points); ``folder`` on sys.path finds it."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "my_protections", folder / "my_protections", ignore=shutil.ignore_patterns("__pycache__"))
    info = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"].items()
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n" for group, entries in groups
        )
    )
    return folder


def forget_plugins() -> None:
    """As a new process would start: the example's modules unimported, ENCODERS to be loaded again (built-ins kept)."""
    for name in [name for name in sys.modules if name.partition(".")[0] == "my_protections"]:
        del sys.modules[name]
    for name in ENCODERS.plugins:
        ENCODERS._classes.pop(name, None)
    ENCODERS._loaded, ENCODERS.plugins, ENCODERS.broken = False, {}, {}


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """The example plugin installed for one test (its folder); ENCODERS as it was afterwards."""
    ENCODERS.names()
    for attribute in ("_classes", "plugins", "broken"):
        monkeypatch.setattr(ENCODERS, attribute, dict(getattr(ENCODERS, attribute)))
    monkeypatch.setattr(ENCODERS, "_loaded", False)
    monkeypatch.syspath_prepend(str(install_example(tmp_path / "site")))
    yield tmp_path / "site"
    forget_plugins()


@pytest.mark.parametrize("params", [None, {"shared": True}])
@pytest.mark.parametrize("check", encoder_spec.CHECKS.values(), ids=encoder_spec.CHECKS.keys())
def test_the_example_protection_plugin_meets_the_encoder_specification(example_plugin, check, params):
    ENCODERS.names()
    assert ENCODERS.plugins["uniform"] == "my-protections"
    check("uniform", params)


def test_the_example_plugin_is_listed_with_its_threat_model(example_plugin, capsys):
    assert main(["list", "encoders"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    assert (
        "uniform Adds uniform noise scaled per image to the target standard PSNR; ignores the model. "
        "[plugin: my-protections]" in listed
    )
    assert "threat model: Only the noise draws: noise blind to the model" in listed


def test_a_plugins_source_is_its_top_level_package_wherever_it_is_installed(example_plugin, tmp_path):
    """Every .py file of the package, named relative to it: another install of the same code hashes the same, an
    edit of any of its files hashes otherwise; built-in components have no source in their identity."""
    cls = ENCODERS.get("uniform")
    assert [name for name, _ in plugin_files(cls)] == ["my_protections/__init__.py", "my_protections/uniform.py"]
    identity = component_identity(ENCODERS, "uniform", {})
    assert identity == {"name": "uniform", "params": {}, "version": "1", "source": plugin_source(cls)}
    assert "source" not in component_identity(ENCODERS, "gaussian", {})
    copy = install_example(tmp_path / "elsewhere") / "my_protections"
    (copy / "helpers").mkdir()
    (copy / "helpers" / "noise.py").write_text("SCALE = 1\n")
    forget_plugins()
    sys.path.insert(0, str(tmp_path / "elsewhere"))
    try:
        moved = ENCODERS.get("uniform")
        assert Path(sys.modules[moved.__module__].__file__).is_relative_to(tmp_path / "elsewhere")
        assert [name for name, _ in plugin_files(moved)] == [
            "my_protections/__init__.py",
            "my_protections/helpers/noise.py",
            "my_protections/uniform.py",
        ]
        (copy / "helpers" / "noise.py").unlink()
        assert plugin_source(moved) == identity["source"]  # the same files elsewhere
        (copy / "uniform.py").write_text((copy / "uniform.py").read_text() + "\n")
        assert plugin_source(moved) != identity["source"]
    finally:
        sys.path.remove(str(tmp_path / "elsewhere"))


def test_a_single_module_plugin_hashes_its_file(tmp_path, monkeypatch):
    (tmp_path / "nxb_single_module.py").write_text("class Probe:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert plugin_files(import_module("nxb_single_module").Probe) == [
            ("nxb_single_module.py", tmp_path / "nxb_single_module.py")
        ]
    finally:
        del sys.modules["nxb_single_module"]


def run_plugin_suite(folder: Path, capsys) -> tuple[str, dict[str, dict]]:
    """``run`` of a two-protection suite (gaussian and the plugin's uniform) in a fresh registry, as a new process
    would; returns its output and the stored cells by key."""
    forget_plugins()
    suite = {
        "name": "plugin",
        "dataset": {"name": "digits", "limit": 12},
        "zoo": [{"name": "a", **TINY_MODEL}, {"name": "b", **TINY_MODEL, "seed": 1}],
        "authorized": ["a"],
        "encoders": [{"name": "gaussian", "strengths": [20.0]}, {"name": "uniform", "strengths": [20.0]}],
        "attacks": [{"name": "identity"}],
        "batch_size": 6,
        "bounds": False,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results")},
        "tracking": {"enabled": False},
    }
    assert main(["run", str(write_yaml(folder / "suite.yaml", suite))]) == 0
    store = CellStore(folder / "runs" / "plugin" / "cells.jsonl", writable=False)
    return capsys.readouterr().out, {key: cell.model_dump() for key, cell in store.cells.items()}


@pytest.mark.slow
def test_editing_a_plugin_recomputes_its_cells_and_no_others(example_plugin, tmp_path, capsys):
    out, first = run_plugin_suite(tmp_path, capsys)
    assert "3 encodings computed, 0 reused" in out and len(first) == 3 * 2  # clean, gaussian, uniform x models a, b
    out, again = run_plugin_suite(tmp_path, capsys)
    assert "nothing to compute" in out and again == first
    module = example_plugin / "my_protections" / "uniform.py"
    module.write_text(
        module.read_text().replace(
            "psnr_per_image(images, released))", 'psnr_per_image(images, released), info={"edited": 1.0})'
        )
    )
    out, edited = run_plugin_suite(tmp_path, capsys)
    assert "1 encodings computed, 2 reused" in out
    new = {key: cell for key, cell in edited.items() if key not in first}
    assert len(new) == 2 and all(
        cell["encoder"] == "uniform" and cell["encoder_info"] == {"edited": 1.0} for cell in new.values()
    )
    assert {key: cell for key, cell in edited.items() if key in first} == first  # the others kept as they were
