"""MLflow tracking: experiment per suite, parent run per invocation, nested run per encoding group.

The store is a local SQLite file beside the run folders unless ``MLFLOW_TRACKING_URI`` (first) or the
suite's ``tracking.uri`` names another. A run killed before it finished is resumed by the next
invocation of the same suite (same parent run, groups already logged are not logged again), so the
store never holds duplicate groups and no parent is left RUNNING after a successful rerun.

Names are fixed so the MLflow UI groups without hand work: tags ``nxb.authorized``, ``nxb.encoder``,
``nxb.strength``, ``nxb.seed``; metrics ``acc.<attack>.<model>`` and ``agree.<attack>.<model>`` with
step = round(100 x attack strength); per-group summaries ``auth.acc``, ``unauth.acc_mean``,
``unauth.acc_max`` (no attack) and ``psnr.encoded``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nonxfer_bench.errors import UserError
from nonxfer_bench.plan import EncodingGroup
from nonxfer_bench.suite import Suite, stable_hash

PARENT_TAG = "nxb.suite_hash"
GROUP_TAG = "nxb.group"


def tracking_uri(suite: Suite) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if suite.tracking.uri:
        return suite.tracking.uri
    return f"sqlite:///{(suite.output.dir / 'mlflow.db').resolve()}"


class Tracker:
    """Logs one suite invocation to MLflow; use as a context manager around the runner."""

    def __init__(self, suite: Suite, suite_path: Path) -> None:
        import mlflow

        self.mlflow = mlflow
        self.suite = suite
        self.suite_path = suite_path
        self.uri = tracking_uri(suite)
        self.suite_hash = stable_hash(suite.model_dump(mode="json", exclude={"output", "tracking", "threads"}))
        self.parent_id: str | None = None
        self.logged_groups: set[str] = set()

    def __enter__(self) -> "Tracker":
        mlflow = self.mlflow
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        name = self.suite.tracking.experiment or self.suite.name
        try:
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                location = None
                if self.uri.startswith("sqlite:///"):
                    location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
                experiment_id = mlflow.create_experiment(name, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
        except Exception as error:  # unreachable servers raise many types
            raise UserError(f"MLflow tracking at {self.uri} is not usable: {type(error).__name__}: {str(error).splitlines()[0]}") from None
        self.experiment_id = experiment_id
        previous = mlflow.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.suite_hash}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if previous:
            self.parent_id = previous[0].info.run_id
            children = mlflow.search_runs(
                [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'", output_format="list"
            )
            self.logged_groups = {run.data.tags.get(GROUP_TAG) for run in children}
            mlflow.start_run(run_id=self.parent_id)
        else:
            run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{self.suite.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            self.parent_id = run.info.run_id
            mlflow.set_tags({PARENT_TAG: self.suite_hash, "nxb.suite": self.suite.name})
            mlflow.log_params(self._suite_params())
            mlflow.log_artifact(str(self.suite_path), artifact_path="suite")
        return self

    def _suite_params(self) -> dict[str, Any]:
        suite = self.suite
        return {
            "dataset": suite.dataset.name,
            "dataset.params": suite.dataset.params,
            "dataset.limit": suite.dataset.limit,
            "zoo": ",".join(m.name for m in suite.models),
            "authorized": ",".join(suite.authorized),
            "encoders": ";".join(f"{e.name}{e.strengths}{e.params or ''}" for e in suite.encoders)[:6000],
            "attacks": ";".join(f"{a.name}{a.strengths}{a.params or ''}" for a in suite.attacks)[:6000],
            "seeds": suite.seeds,
            "batch_size": suite.batch_size,
        }

    def log_group(self, group: EncodingGroup, cells: list[dict], sample: Path | None) -> None:
        """Log one finished encoding group as a nested run, once per parent run."""
        if group.key in self.logged_groups:
            return
        mlflow = self.mlflow
        with mlflow.start_run(run_name=group.label, nested=True, experiment_id=self.experiment_id):
            mlflow.set_tags(
                {
                    GROUP_TAG: group.key,
                    "nxb.authorized": group.authorized,
                    "nxb.encoder": group.encoder.name,
                    "nxb.strength": group.strength,
                    "nxb.seed": group.seed,
                }
            )
            mlflow.log_params({f"encoder.{k}": v for k, v in group.encoder.params.items()} | {"strength": group.strength})
            metrics = []
            timestamp = int(time.time() * 1000)
            for cell in cells:
                step = round(100 * cell["attack_strength"])
                metrics.append(mlflow.entities.Metric(f"acc.{cell['attack']}.{cell['model']}", cell["accuracy"], timestamp, step))
                metrics.append(mlflow.entities.Metric(f"agree.{cell['attack']}.{cell['model']}", cell["agreement"], timestamp, step))
                if "accuracy_flat" in cell:
                    metrics.append(mlflow.entities.Metric(f"acc_flat.{cell['attack']}.{cell['model']}", cell["accuracy_flat"], timestamp, step))
            plain = [c for c in cells if c["attack"] == "identity"]
            unauthorized = [c["accuracy"] for c in plain if c["role"] == "unauthorized"]
            summary = {"auth.acc": next((c["accuracy"] for c in plain if c["role"] == "authorized"), None)}
            if unauthorized:
                summary |= {"unauth.acc_mean": sum(unauthorized) / len(unauthorized), "unauth.acc_max": max(unauthorized)}
            if cells and cells[0]["encoded_psnr"] is not None:
                summary["psnr.encoded"] = cells[0]["encoded_psnr"]
            metrics += [mlflow.entities.Metric(k, v, timestamp, 0) for k, v in summary.items() if v is not None]
            client = mlflow.MlflowClient()
            run_id = mlflow.active_run().info.run_id
            for start in range(0, len(metrics), 900):
                client.log_batch(run_id, metrics=metrics[start : start + 900])
            if sample is not None:
                mlflow.log_artifact(str(sample), artifact_path="samples")
        self.logged_groups.add(group.key)

    def log_results(self, paths: list[Path]) -> None:
        for path in paths:
            self.mlflow.log_artifact(str(path), artifact_path="leaderboard")

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            self.mlflow.end_run("FINISHED")
        else:
            self.mlflow.end_run("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
