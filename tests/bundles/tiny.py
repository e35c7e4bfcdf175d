"""A tiny bundle for the bundle tests: a project folder with a digits suite (the tests' trained digits zoo copied into
it, so a copy of the project carries its weights), run on the CPU and bundled."""

from __future__ import annotations

import shutil
from pathlib import Path
from unittest import mock

from nonxfer_bench.cli import main
from tests.helpers import write_yaml

# The code stamp the tiny run's cells record: a checkout under development has uncommitted changes, which a bundle
# refuses (its cells could not be recomputed from a commit); the tests of that refusal use the real stamp.
CLEAN_CODE = "nonxfer-bench 0.1.0, git 0123456789ab"
TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "limit": 60},
    "zoo": "zoo/zoo.yaml",
    "authorized": ["vit_a"],
    "encoders": [{"name": "patch", "strengths": [10.0]}, {"name": "reference", "strengths": [20.0]}],
    "attacks": [{"name": "identity"}, {"name": "blur", "strengths": [0.5]}, {"name": "cutout", "strengths": [0.5]}],
    "batch_size": 30,
    "threads": 1,
    "device": "cpu",
    "tracking": {"enabled": False},
}


def tiny_bundle(project: Path, zoo: Path, **overrides: object) -> Path:
    """``project/suites/<name>.yaml`` (:data:`TINY` with ``overrides``) run and bundled; returns its bundle folder
    ``project/results/<name>``."""
    suites = project / "suites"
    shutil.copytree(zoo.parent, suites / "zoo", dirs_exist_ok=True)
    settings = {**TINY, **overrides}
    suite = write_yaml(suites / f"{settings['name']}.yaml", settings)
    with mock.patch("nonxfer_bench.execution.runner.code_version", return_value=CLEAN_CODE):
        assert main(["run", str(suite), "--no-tracking"]) == 0
    assert main(["bundle", str(suite)]) == 0
    return project / "results" / settings["name"]
