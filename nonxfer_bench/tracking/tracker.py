"""MLflow tracking: experiment per suite, parent run per invocation, nested run per encoding group.

The store is a local SQLite file beside the run folders unless ``MLFLOW_TRACKING_URI`` (first) or the
suite's ``tracking.uri`` names another. A run killed before it finished is resumed by the next
invocation of the same suite (same parent run, groups already logged are not logged again), so the
store never holds duplicate groups and no parent is left RUNNING after a successful rerun. A parent is
resumed only by a run writing the same run folder (tag ``nxb.run_dir``), so concurrent runs of one suite
into different folders keep separate parents; MLflow's filter strings cannot escape a quote, so they hold only
hashes and run ids (:func:`tag_equals`) and the run folder, any path, is compared in Python. Nested runs that a killed
invocation left unfinished are
deleted (MLflow's soft delete) and their groups logged again. An ``http(s)`` tracking server is probed
with a short connection first, so an unreachable one is reported at once instead of after minutes of
MLflow's retries.

Names are fixed so the MLflow UI groups without hand work: tags ``nxb.authorized``, ``nxb.encoder``,
``nxb.strength``, ``nxb.seed``; metrics ``acc.<attack>.<model>`` and ``agree.<attack>.<model>`` with
step = round(100 x attack strength); per-group summaries ``auth.acc``, ``unauth.acc_mean``,
``unauth.acc_max`` (no attack) and ``psnr.encoded``; the strongest attack of the group (highest mean
unauthorized accuracy over every attack step, see ``leaderboard.strongest_attack``) as
``unauth.best_attack_acc`` (its mean unauthorized accuracy), ``unauth.best_attack_acc_max`` and
``auth.best_attack_acc``, with tag ``nxb.best_attack`` = ``<attack>@<strength>``.

``<attack>`` in these names is the attack's name (``acc.blur.vit_a``) when it has one step per strength in the
group. An attack with several steps at one strength (one MLflow step), e.g. a budget sweep or two suite entries,
names every one of its steps ``<attack>/<step>`` (:func:`attack_names`), so each step is its own series and none
overwrites another: ``<step>`` is ``key_value`` for each param that tells the attack's steps at one strength apart,
sorted by key and joined by '_', from the step's identity as the leaderboard has it
(:meth:`~nonxfer_bench.cells.cell.Cell.step_param`: settings and budgets, and the suite entry's params where two
entries read the same). Values are made safe: a '.' between digits becomes 'p', any other run of characters other
than ASCII letters, digits, '_' and '-' one '_'; a name alike another once made safe, or longer than
:data:`STEP_NAME_MAX`, ends in a hash of the step. E.g. ``acc.patch_mean/public_2000_released_10.vit_a``,
``unauth.acc_mean.finetune/lr_0p01_scope_first_layer``. The attack part never holds a '.', so
``name.split('.', 2)`` gives metric, attack (with its step) and model (:func:`split_cell_metric`).

For the UI's group-by and chart views, every group run also has params ``authorized``, ``encoder``,
``strength``, ``seed``, ``storage`` (only these: MLflow's compare view offers the first differing params,
sorted, as axes), the encoder's own parameters as tags ``nxb.encoder_param.<name>``, tag
``nxb.attack_families`` (its attacks, comma-separated), tag ``nxb.attack_tiers`` (``attack:tier`` per attack,
the threat model's knowledge tier), tag ``nxb.kind`` (``invocation`` on parents, ``encoding`` on groups) and
per attack (per step series, named as above) one curve per role: ``auth.acc.<attack>``, ``unauth.acc_mean.<attack>``
and ``unauth.acc_max.<attack>`` (agreement as ``auth.agree.<attack>`` ...), step = round(100 x attack strength).
Every accuracy and agreement metric ``<metric>`` above (per cell, per role curve, summaries, strongest attack)
comes with ``<metric>_lo`` and ``<metric>_hi``, its 95% interval, and ``<metric>_n``, the images it counts
(labeled images for accuracy), at the same step: Wilson's interval for one model's proportion, and for the
unauthorized mean and max a bootstrap over images paired across models where the cells keep per-image outcomes
(Wilson's at the mean otherwise), as the leaderboard computes them (:mod:`nonxfer_bench.analysis.uncertainty`).
E.g. ``unauth.acc_mean``, ``unauth.acc_mean_lo``, ``unauth.acc_mean_hi``, ``unauth.acc_mean_n``.

Cells that record their attack's threat model add the security curves
(:mod:`nonxfer_bench.analysis.security`): ``security.<budget>.<tier>.unauth_mean`` and
``security.<budget>.<tier>.unauth_max`` (with ``_lo``, ``_hi``, ``_n``), step = the budget, where ``<budget>`` is
``nes`` (released + labelled NEs the attack used) or ``public`` (clean public images) and ``<tier>`` the knowledge
tier; each point is the tier's strongest attack step at that budget. The plots, ``security_curves_<authorized>.png``,
are with
the other plots among the parent run's ``leaderboard/`` artifacts (:meth:`Tracker.log_results`). The models'
``precision`` (fp32, ...) is a param of the parent run, with the suite's other settings.

The experiment is tagged as classic model development (``mlflow.experimentKind``), and the links this
package prints (:func:`experiment_url`) carry MLflow 3.17's ``workflowType=machine_learning``, whose UI
otherwise opens every experiment in its GenAI view. The group's cells, exactly as in the cell store, are its
``cells.json`` artifact, so leaderboards can be rebuilt from MLflow alone (:mod:`nonxfer_bench.readback`).

A group whose cells an earlier finished group run of the same run folder already holds (tags ``nxb.group``,
``nxb.cells_hash`` and ``nxb.run_dir`` equal) is not logged again: the invocation's parent run gets the tag
``nxb.reuses.<group key>`` = that run's id instead, so a rerun that computes nothing adds one parent run and
no group runs, and :mod:`nonxfer_bench.readback` reads the reused runs as part of the invocation.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.core import faults
from nonxfer_bench.core.errors import EXCERPT, UserError, excerpt
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.execution.plan import EncodingGroup
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import Suite
from nonxfer_bench.tracking.metrics import group_metrics
from nonxfer_bench.zoo import resolve_preprocessing

PARENT_TAG = "nxb.suite_hash"
GROUP_TAG = "nxb.group"
CELLS_ARTIFACT = "cells.json"
RUN_DIR_TAG = "nxb.run_dir"
CELLS_HASH_TAG = "nxb.cells_hash"
REUSES_TAG = "nxb.reuses."  # + group key, on a parent run: the id of the earlier group run holding the same cells
# MLflow 3 opens experiments without this tag in its GenAI view (traces, prompts); ours are classic runs
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow 3.17's UI picks the view from this query (or the browser's last choice), not from the tag
CLASSIC_VIEW = "workflowType=machine_learning"
PROBE_SECONDS = 5.0
T = TypeVar("T")
SQLITE = "sqlite:///"


def sqlite_uri(path: Path) -> str:
    """The MLflow tracking URI of a SQLite store file; one line if the path holds '?', '#' or '%', which a URI
    reads as query, fragment or escape (the store would land somewhere else)."""
    if any(char in str(path) for char in "?#%"):
        raise UserError(
            f"{excerpt(str(path))}: a SQLite tracking store path cannot hold '?', '#' or '%'; choose another "
            "output.dir, set tracking.uri, or run with --no-tracking"
        )
    return f"{SQLITE}{path}"


def sqlite_path(uri: str) -> Path | None:
    """The store file of a ``sqlite:///`` tracking URI; None for any other store (a server, another database)."""
    return Path(uri.removeprefix(SQLITE)) if uri.startswith(SQLITE) else None


def tracking_uri(suite: Suite) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if suite.tracking.uri:
        return suite.tracking.uri
    return sqlite_uri((suite.output.dir / "mlflow.db").resolve())


def experiment_url(server: str, experiment_id: str | None) -> str:
    """The MLflow UI link that opens the experiment (or, without one, the experiment list) in the classic runs view."""
    return (
        f"{server.rstrip('/')}/#/experiments/{experiment_id}?{CLASSIC_VIEW}"
        if experiment_id
        else f"{server.rstrip('/')}/#/?{CLASSIC_VIEW}"
    )


def find_experiment(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` at ``uri``, or None; a SQLite store that does not exist is not created."""
    store = sqlite_path(uri)
    if store is not None and not store.is_file():
        return None
    # heavy (~1.5 s): mlflow only where it is used; `leaderboard` from the cell store imports this module without it
    import mlflow

    experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")
HTTP_TIMEOUT = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
}  # MLflow's own: 120 s x 7 retries


def shown_uri(uri: str) -> str:
    """A tracking URI for messages: without user and password, at most ~80 characters."""
    try:
        parts = urlsplit(uri)
        if parts.username or parts.password:
            uri = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    except ValueError:
        pass  # not parseable as a URL: it has no credentials to strip, shown as it is
    uri = uri.replace("\n", " ")
    return uri if len(uri) <= EXCERPT else f"{uri[: EXCERPT - 3]}..."


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI MLflow cannot use, and probe an http(s) server with one bounded request, so a
    dead, silent, failing or wrong-protocol server is one line within ``PROBE_SECONDS`` instead of a hang
    (MLflow retries for minutes). Later MLflow requests get a bounded timeout and retry count too."""
    shown = shown_uri(uri)
    hint = (
        "point MLFLOW_TRACKING_URI, --tracking-uri or the suite's tracking.uri at a usable store, or run with "
        "--no-tracking"
    )
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535
    except ValueError as error:
        raise UserError(f"MLflow tracking at {shown} is not usable: malformed URI ({error}); {hint}") from None
    scheme = parts.scheme.partition("+")[0]
    if scheme and scheme not in SCHEMES and len(scheme) > 1:  # one letter: a Windows drive
        raise UserError(
            f"MLflow tracking at {shown} is not usable: unsupported scheme {excerpt(scheme, 20)}; valid: "
            f"{', '.join(SCHEMES)}, or a folder path"
        )
    if scheme == "sqlite" and not uri.removeprefix("sqlite:///").strip("/"):
        raise UserError(f"MLflow tracking at {shown} is not usable: no database file; use sqlite:////ABSOLUTE/PATH.db")
    if scheme not in ("http", "https"):
        return
    if not parts.hostname:
        raise UserError(f"MLflow tracking at {shown} is not usable: no host; use e.g. http://HOST:5000")
    for name, value in HTTP_TIMEOUT.items():
        os.environ.setdefault(name, value)
    url = parts._replace(path=parts.path.rstrip("/") + "/health", query="", fragment="").geturl()
    context = None
    if scheme == "https" and os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl._create_unverified_context()  # noqa: S323 - the user asked MLflow for it
    try:
        with urllib.request.urlopen(url, timeout=PROBE_SECONDS, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"MLflow tracking server {shown} is not reachable or does not answer HTTP within {PROBE_SECONDS:g} s "
            f"({type(reason).__name__}: {excerpt(str(reason), 100)}); start it or {hint}"
        ) from None
    if status >= 500:
        raise UserError(f"MLflow tracking server {shown} answers with HTTP {status}; {hint}")


# What another process writing the same store at the same moment looks like: SQLite's lock, the other
# process's table creation or migration, or its experiment of the same name created just before ours.
CONCURRENT = ("database is locked", "already exists", "duplicate column", "UNIQUE constraint failed")


def retry_concurrent(call: Callable[[], T], attempts: int = 6, delay: float = 0.5) -> T:
    """``call()``, retried with a growing pause while another process holds or is creating the store."""
    for attempt in range(attempts - 1):
        try:
            return call()
        except Exception as error:  # MLflow wraps SQLAlchemy errors in its own types
            if not any(text in str(error) for text in CONCURRENT):
                raise
        time.sleep(delay * 2**attempt)
    return call()


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, one process at a time creates (migrates) the file and the experiment: MLflow's
    table creation is not safe against a second process doing the same at the same moment."""
    store = sqlite_path(uri)
    if store is None:
        yield
        return
    with open(f"{store}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


FILTER_VALUE = re.compile(r"[A-Za-z0-9_.-]+")  # what a value in an MLflow filter string may hold here: hashes, run ids


def tag_equals(tag: str, value: str) -> str:
    """The MLflow filter clause ``tags.`tag` = 'value'`` for a hash or run id. MLflow's filter syntax has no escape
    for a quote, so a free-form value (a path, a name) never goes into a filter: it is compared in Python instead."""
    if not FILTER_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a hash or run id: compare it in Python, not in an MLflow filter string")
    return f"tags.`{tag}` = '{value}'"


class Tracker:
    """Logs one suite invocation to MLflow; use as a context manager around the runner."""

    def __init__(self, suite: Suite, suite_path: Path, settings: RunSettings | None = None) -> None:
        import mlflow  # heavy (~1.5 s), as in find_experiment

        logging.getLogger("mlflow").setLevel(
            logging.WARNING
        )  # its INFO lines (store migrations) are not the run's progress
        self.mlflow = mlflow
        self.suite = suite
        self.settings = settings or RunSettings.of(suite)
        self.suite_path = suite_path
        self.uri = tracking_uri(suite)
        self.suite_hash = stable_hash(self._invocation())
        self.run_dir = str(suite.run_dir().resolve())
        self.parent_id: str | None = None
        self.logged_groups: set[str] = set()

    def __enter__(self) -> "Tracker":
        mlflow = self.mlflow
        store = sqlite_path(self.uri)
        if store is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
        check_tracking_uri(self.uri)
        mlflow.set_tracking_uri(self.uri)
        try:
            with creation_lock(self.uri):
                experiment_id = retry_concurrent(self._experiment_id)
        except Exception as error:  # unreachable servers raise many types
            raise UserError(
                f"MLflow tracking at {self.uri} is not usable: {type(error).__name__}: {str(error).splitlines()[0]}"
            ) from None
        self.experiment_id = experiment_id
        unfinished = mlflow.search_runs(
            [experiment_id],
            filter_string=f"{tag_equals(PARENT_TAG, self.suite_hash)} and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        previous = [run for run in unfinished if run.data.tags.get(RUN_DIR_TAG) == self.run_dir]
        if previous:
            self.parent_id = previous[0].info.run_id
            children = mlflow.search_runs(
                [experiment_id], filter_string=tag_equals("mlflow.parentRunId", self.parent_id), output_format="list"
            )
            client = mlflow.MlflowClient()
            for run in children:
                if run.info.status == "FINISHED":
                    self.logged_groups.add(run.data.tags.get(GROUP_TAG))
                else:  # killed while it was being logged: its metrics may be incomplete
                    client.delete_run(run.info.run_id)
            mlflow.start_run(run_id=self.parent_id)
        else:  # the identifying tags are written with the run itself, so a kill cannot leave an orphan parent
            tags = {
                PARENT_TAG: self.suite_hash,
                RUN_DIR_TAG: self.run_dir,
                "nxb.suite": self.suite.name,
                "nxb.kind": "invocation",
            }
            run_name = f"{self.suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.parent_id = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags).info.run_id
            faults.point("mlflow_parent_started")
        # logged again on resume (same values), in case the killed invocation died before logging them
        mlflow.log_params(self._suite_params())
        mlflow.log_artifact(str(self.suite_path), artifact_path="suite")
        self._log_preprocessing()
        return self

    def _experiment_id(self) -> str:
        """The suite's experiment, created if missing (artifacts beside a SQLite store)."""
        name = self.suite.tracking.experiment or self.suite.name
        experiment = self.mlflow.get_experiment_by_name(name)
        if experiment is not None:
            for key, value in EXPERIMENT_KIND.items():  # experiments created before the tag existed
                if experiment.tags.get(key) != value:
                    self.mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
            return experiment.experiment_id
        location = None
        store = sqlite_path(self.uri)
        if store is not None:
            location = (store.parent / "mlartifacts").resolve().as_uri()
        return self.mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)

    def _log_preprocessing(self) -> None:
        """Each model's resolved input pipeline (timm data config + zoo overrides): a param per model and
        ``preprocessing.json``; the dataset's decode settings are in ``dataset.params``."""
        resolved = {model.name: resolve_preprocessing(model) for model in self.suite.models}
        self.mlflow.log_params(
            {
                f"preprocess.{name}": f"{'x'.join(map(str, p['input_size']))} {p['interpolation']} "
                f"crop_pct={p['crop_pct']} mean={list(p['mean'])} std={list(p['std'])}"
                for name, p in resolved.items()
            }
        )
        self.mlflow.log_dict(resolved, "preprocessing.json")

    def _invocation(self) -> dict[str, Any]:
        """What identifies an invocation's parent run: the suite as run (the settings in place of its defaults)."""
        data = self.suite.model_dump(
            mode="json",
            exclude={"output", "tracking", "threads"} | ({"protocol"} if self.suite.protocol is None else set()),
        )
        data |= {"device": self.settings.device, "precision": self.settings.precision, "bounds": self.settings.bounds}
        data["dataset"]["limit"] = self.settings.limit
        return data

    def _suite_params(self) -> dict[str, Any]:
        suite, settings = self.suite, self.settings
        return {
            "dataset": suite.dataset.name,
            "dataset.params": suite.dataset.params,
            "dataset.limit": settings.limit,
            "zoo": ",".join(m.name for m in suite.models),
            "authorized": ",".join(suite.authorized),
            "encoders": ";".join(f"{e.name}{e.strengths}{e.params or ''}" for e in suite.encoders)[:6000],
            "attacks": ";".join(f"{a.name}{a.strengths}{a.params or ''}" for a in suite.attacks)[:6000],
            "seeds": suite.seeds,
            "batch_size": suite.batch_size,
            "device": settings.device,
            "precision": settings.precision,
        }

    def _run_holding(self, group: EncodingGroup, cells_hash: str) -> str | None:
        """The id of a finished group run of this experiment and run folder that holds exactly these cells, if any
        (runs into other folders keep their own group runs, as they keep their own parents)."""
        found = self.mlflow.search_runs(
            [self.experiment_id],
            filter_string=f"{tag_equals(GROUP_TAG, group.key)} and {tag_equals(CELLS_HASH_TAG, cells_hash)} and "
            "attributes.status = 'FINISHED'",
            output_format="list",
        )
        return next((run.info.run_id for run in found if run.data.tags.get(RUN_DIR_TAG) == self.run_dir), None)

    def log_group(self, group: EncodingGroup, finished: list[Cell], sample: Path | None) -> None:
        """Log one finished encoding group as a nested run, once per parent run, unless an earlier run holds its
        cells."""
        if group.key in self.logged_groups:
            return
        cells = [
            cell.record() for cell in finished
        ]  # the store's records: the cells.json artifact holds them as they are
        mlflow = self.mlflow
        cells_hash = stable_hash(cells)
        earlier = self._run_holding(group, cells_hash)
        if earlier is not None:  # nothing new: point the invocation at it instead of logging a copy
            mlflow.set_tag(f"{REUSES_TAG}{group.key}", earlier)
            self.logged_groups.add(group.key)
            return
        faults.point("mlflow_group_before")
        with mlflow.start_run(
            run_name=group.label,
            nested=True,
            experiment_id=self.experiment_id,
            tags={GROUP_TAG: group.key, RUN_DIR_TAG: self.run_dir},
        ):
            mlflow.set_tags(
                {
                    "nxb.authorized": group.authorized,
                    "nxb.encoder": group.encoder.name,
                    "nxb.strength": group.strength,
                    "nxb.seed": group.seed,
                    "nxb.kind": "encoding",
                    "nxb.attack_families": ",".join(dict.fromkeys(c["attack"] for c in cells)),
                    "nxb.attack_tiers": ",".join(
                        dict.fromkeys(f"{c['attack']}:{c['tier']}" for c in cells if c.get("tier"))
                    ),
                }
                | {f"nxb.encoder_param.{k}": v for k, v in group.encoder.params.items()}
            )
            mlflow.log_params(
                {
                    "strength": group.strength,
                    "authorized": group.authorized,
                    "encoder": group.encoder.name,
                    "seed": group.seed,
                    "storage": group.storage,
                }
            )
            faults.point("mlflow_group_started")
            mlflow.log_dict({"cells": cells}, CELLS_ARTIFACT)
            metrics, best = group_metrics(group.authorized, results_frame(finished), int(time.time() * 1000))
            if best is not None:
                mlflow.set_tag("nxb.best_attack", best)
            client = mlflow.MlflowClient()
            run_id = mlflow.active_run().info.run_id
            for start in range(0, len(metrics), 900):
                batch = metrics[start : start + 900]
                retry_concurrent(lambda: client.log_batch(run_id, metrics=batch))  # a failed batch wrote nothing
                faults.point("mlflow_metrics_logged")
            if sample is not None:
                mlflow.log_artifact(str(sample), artifact_path="samples")
            mlflow.set_tag(CELLS_HASH_TAG, cells_hash)  # last: a run killed before this point is never reused
        faults.point("mlflow_group_after")
        self.logged_groups.add(group.key)

    def log_results(self, paths: list[Path]) -> None:
        for path in paths:
            self.mlflow.log_artifact(str(path), artifact_path="leaderboard")

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            self.mlflow.end_run("FINISHED")
        else:
            self.mlflow.end_run("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
