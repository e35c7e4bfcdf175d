"""What a bundle holds, read back: its suite (loaded from the suite file it names, inside its project folder), its
cells, and the plan those cells must be: the suite's cell keys with the zoo identities the manifest records.

A bundle lives where the run wrote it, ``<project>/results/<suite>/``; its suite file is named relative to
``<project>``. The plan uses the manifest's model identities (weight sha256 included), not the weight files on
this machine, so a bundle is checked without its weights, and a manifest that claims other weights than the
cells were computed with plans other keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nonxfer_bench.analysis.tiers import tiered_plan
from nonxfer_bench.bundles.manifest import Manifest
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.plan import EncodingGroup, stored_plan
from nonxfer_bench.loading import absolute, load_suite, suite_protocol
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite


@dataclass
class Contents:
    """A bundle's suite (as loaded here), its suite file, the project folder, its cells by key and its plan."""

    suite: Suite
    suite_file: Path
    project: Path
    cells: dict[str, Cell]
    plan: list[EncodingGroup]

    def ordered(self) -> list[Cell]:
        """The cells in plan order (as ``leaderboard`` reads them), then any the plan lacks, by key."""
        planned = [key for group in self.plan for key in group.cells.values() if key in self.cells]
        return [self.cells[key] for key in planned] + [
            self.cells[key] for key in sorted(set(self.cells) - set(planned))
        ]


def project_of(folder: Path) -> Path:
    """The project folder of a bundle ``<project>/results/<suite>``."""
    return absolute(folder).parent.parent


def bundle_suite(folder: Path, manifest: Manifest) -> tuple[Suite, Path]:
    """The suite the manifest names, loaded from its file in the bundle's project folder (weights not required)."""
    project = project_of(folder)
    suite_file = project / manifest.suite_file
    if not suite_file.is_file():
        raise UserError(
            f"{folder}: its suite file {suite_file} (BUNDLE.json 'suite_file', inside the project folder {project}) "
            "is not there; check a bundle where its run wrote it, <project>/results/<suite>, in a checkout that "
            "holds its suite file"
        )
    return load_suite(suite_file, require_weights=False), suite_file


def read_cells(folder: Path) -> dict[str, Cell]:
    """The cells of the results folder ``folder``, by key (none when it holds no cells file)."""
    return CellStore(results_cells(folder), writable=False).cells


def planned(
    suite: Suite, cells: dict[str, Cell], draws: str | None, identities: dict[str, dict] | None = None
) -> list[EncodingGroup]:
    """The suite's plan as its file says, on ``draws``; with ``identities`` (a manifest's ``models``) in place of the
    weight files here, any model they lack taken from here (the manifest check names it). A protocol suite's plan is cut
    per release at the tier that settled it, by ``cells``, as its run was (:mod:`nonxfer_bench.analysis.tiers`)."""
    if identities is not None:
        identities = {model.name: identities.get(model.name) or model.identity() for model in suite.models}
    plan = stored_plan(suite, RunSettings.of(suite), draws, identities)
    protocol, _ = suite_protocol(suite)
    return plan if protocol is None else tiered_plan(plan, cells, protocol.verdict)
