"""A suite's cells read back from MLflow: ``mlflow.search_runs`` over one invocation's group runs.

The tracker logs each encoding group's cells, exactly as the cell store holds them, as the group run's
``cells.json`` artifact (:mod:`nonxfer_bench.tracking.tracker`). Reading them back in the groups' start order
reproduces the store's cell order, so a leaderboard built from MLflow is the one built from the store.
An invocation's groups are its own nested runs plus the earlier runs it reuses (parent tags
``nxb.reuses.<group key>``: groups whose cells were already logged, by a rerun that computed nothing new).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.tracking.tracker import CELLS_ARTIFACT, REUSES_TAG, check_tracking_uri, shown_uri, sqlite_path


@dataclass
class TrackedSuite:
    """One invocation read back: its parent run, its group runs (a search_runs frame) and their cells."""

    uri: str
    experiment: str
    parent_id: str
    suite_name: str
    models: list[str]
    groups: pd.DataFrame
    cells: list[Cell] = field(default_factory=list)

    def download_samples(self, folder: Path) -> dict[str, Path]:
        """The group runs' sample grids under ``folder``, by group run name."""
        # heavy (~1.5 s): mlflow only where it is used; `leaderboard` from the cell store imports this module without it
        import mlflow

        client = mlflow.MlflowClient(self.uri)
        samples = {}
        for run_id, name in zip(self.groups["run_id"], self.groups["tags.mlflow.runName"]):
            for artifact in client.list_artifacts(run_id, "samples"):
                target = folder / run_id
                target.mkdir(parents=True, exist_ok=True)
                samples[name] = Path(client.download_artifacts(run_id, artifact.path, str(target)))
        return samples


def read_suite(uri: str, experiment: str, run_id: str | None = None) -> TrackedSuite:
    """The cells of the latest invocation in ``experiment`` (or of parent run ``run_id``) at ``uri``."""
    import mlflow  # heavy (~1.5 s), as in download_samples

    check_tracking_uri(uri)
    store = sqlite_path(uri)
    if store is not None and not store.is_file():  # reading must not create one
        raise UserError(f"no MLflow store at {store}; run the suite with tracking first or give --tracking-uri")
    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
    except Exception as error:  # unreachable servers raise many types
        raise UserError(
            f"MLflow tracking at {shown_uri(uri)} is not usable: {type(error).__name__}: "
            f"{excerpt((str(error).splitlines() or [''])[0], 200)}"
        ) from None
    if found is None:
        raise UserError(f"--experiment {excerpt(experiment)}: no such MLflow experiment at {shown_uri(uri)}")
    runs = mlflow.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    if "tags.mlflow.parentRunId" not in runs or "tags.nxb.kind" not in runs:
        raise UserError(
            f"experiment {experiment!r} at {uri} holds no nonxfer-bench group runs; run a suite with tracking first"
        )
    parents = runs[runs["tags.nxb.kind"] == "invocation"]
    reuse_columns = [column for column in runs.columns if column.startswith(f"tags.{REUSES_TAG}")]
    if run_id is None:
        reuses = parents[reuse_columns].notna().any(axis=1) if reuse_columns else False
        with_groups = parents[parents["run_id"].isin(runs["tags.mlflow.parentRunId"]) | reuses]
        if with_groups.empty:
            raise UserError(
                f"experiment {experiment!r} at {uri} holds no nonxfer-bench group runs; run a suite with tracking first"
            )
        parent = with_groups.iloc[-1]
    elif run_id in set(parents["run_id"]):
        parent = parents[parents["run_id"] == run_id].iloc[0]
    else:
        raise UserError(
            f"--run-id {run_id}: not a suite invocation in experiment {experiment!r}; valid: "
            f"{', '.join(parents['run_id'])}"
        )
    reused = {parent[column] for column in reuse_columns if isinstance(parent[column], str)}
    own = (runs["tags.mlflow.parentRunId"] == parent["run_id"]) & (runs["tags.nxb.kind"] == "encoding")
    groups = runs[own | runs["run_id"].isin(reused)].reset_index(drop=True)
    cells: dict[str, Cell] = {}
    with tempfile.TemporaryDirectory() as folder:
        for group_id in groups["run_id"]:
            path = mlflow.artifacts.download_artifacts(run_id=group_id, artifact_path=CELLS_ARTIFACT, dst_path=folder)
            for record in json.loads(Path(path).read_text())["cells"]:
                cell = Cell.from_record(record)
                cells[cell.key] = cell
    return TrackedSuite(
        uri=uri,
        experiment=experiment,
        parent_id=str(parent["run_id"]),
        suite_name=str(parent["tags.nxb.suite"]),
        models=str(parent["params.zoo"]).split(","),
        groups=groups,
        cells=list(cells.values()),
    )


def log_to_parent(tracked: TrackedSuite, paths: list[Path], artifact_path: str = "leaderboard") -> None:
    """Log files (the rebuilt leaderboard and plots) to the invocation's parent run."""
    import mlflow  # heavy (~1.5 s), as in download_samples

    client = mlflow.MlflowClient(tracked.uri)
    for path in paths:
        client.log_artifact(tracked.parent_id, str(path), artifact_path)
