"""Input files cannot run code: suites are plain YAML, checkpoints are tensors, components come from the
package or registered entry points, never from a module a suite names."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import torch

from tests.helpers import DIGITS_ZOO, digits_suite, write_yaml
from tests.test_bad_inputs import fails

PACKAGE = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_suite_with_a_python_object_tag_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    fails(["run", suite], capsys, "not valid YAML", "python/object/apply")
    assert not marker.exists()


def test_an_encoder_parameter_with_a_python_object_tag_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    argv = ["encode", str(tmp_path), str(tmp_path / "out"), "--zoo", "z.yaml", "--model", "m", "--encoder", "patch",
            "--strength", "20", "--param", f"k=!!python/object/apply:builtins.open ['{marker}', 'w']"]  # fmt: skip
    fails(argv, capsys, "is not a plain YAML value")
    assert not marker.exists()


def test_a_checkpoint_holding_a_malicious_pickle_is_refused(tmp_path, digits_zoo, capsys):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "vit_a.pth"
    torch.save({"patch_embed.proj.weight": Payload(marker)}, checkpoint)
    zoo = copy.deepcopy(DIGITS_ZOO)
    for model in zoo["models"]:
        model["weights"]["path"] = str(digits_zoo.parent / model["weights"]["path"])
    zoo["models"][0]["weights"]["path"] = str(checkpoint)
    suite = digits_suite(tmp_path, write_yaml(tmp_path / "zoo.yaml", zoo))
    fails(
        ["run", suite],
        capsys,
        f"cannot read weights {checkpoint}",
        "refused by torch.load(weights_only=True)",
        "io.open",
    )
    assert not marker.exists()


def test_a_component_name_that_is_a_module_path_is_never_imported(tmp_path, digits_zoo, capsys, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = digits_suite(tmp_path, digits_zoo, attacks=[{"name": "evil_plugin"}, {"name": "evil_plugin.Attack"}])
    fails(["run", suite], capsys, "unknown attack 'evil_plugin'")
    assert not marker.exists() and "evil_plugin" not in sys.modules


def calls(name: str):
    """Every call of ``name`` (e.g. 'torch.load') in the package and its attacks, as (file, ast.Call)."""
    for path in sorted((PACKAGE / "nonxfer_bench").rglob("*.py")) + sorted((PACKAGE / "attacks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path.relative_to(PACKAGE), node


def test_the_code_loads_checkpoints_and_yaml_only_in_their_safe_forms():
    for path, call in calls("torch.load"):
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("weights_only") == "True", f"{path}:{call.lineno} torch.load without weights_only=True"
    for unsafe in ("yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads", "torch.jit.load"):
        assert not list(calls(unsafe)), f"{unsafe} in {[str(p) for p, _ in calls(unsafe)]}"
