"""The ``nonxfer-bench`` command line: run suites, train the zoo, list components, rebuild leaderboards and reports, open the UI."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from nonxfer_bench.core import faults
from nonxfer_bench.core.environment import check_environment
from nonxfer_bench.core.errors import UserError, excerpt, one_line, printable, shown_path
from nonxfer_bench.core.params import MAX_STRENGTH, MAX_TRAIN_STEPS
from nonxfer_bench.execution import EXECUTOR_NAMES

if TYPE_CHECKING:
    from nonxfer_bench.core.cell import Cell
    from nonxfer_bench.reporting.provenance import Source
    from nonxfer_bench.reporting.tracking import Tracker

SUITES_DIR = Path("suites")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill`), turned into the same clean shutdown as Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes as one line with exit code 2, like every other bad input."""

    def error(self, message: str) -> None:
        command = self.prog.removeprefix("nonxfer-bench").strip()
        self.exit(2, one_line(f"nonxfer-bench: error: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)") + "\n")


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (argparse's error names the range)."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer from {low} to {high:,}"
    return parse


def bounded_float(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
            raise ValueError(text)
        return value

    parse.__name__ = f"number {'>' if low_open else '>='} {low:g} and <= {high:g}"
    return parse


positive_int = bounded_int(1, 10**9)
threads_int = bounded_int(1, 1024)
batch_int = bounded_int(1, 65_536)


def device_name(text: str) -> str:
    """An argparse type: a device spelling (whether this machine has it is checked before any work)."""
    from nonxfer_bench.core.device import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, text):
        raise ValueError(text)
    return text


device_name.__name__ = "device (auto, cpu, cuda or cuda:N with N = 0, 1, ...)"


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


class _NoticeLine(logging.Handler):
    """A library notice as one line on standard output, written above any progress bar (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(printable(self.format(record)), file=sys.stdout)


@contextlib.contextmanager
def notices(line_format: str, log_file: Path | None = None) -> Iterator[None]:
    """Within the block, what the package logs at INFO and above (logger ``nonxfer_bench``: e.g. the operator
    encoder's one-time solve and its estimate, or a basis loaded from the cache) is printed as a line in
    ``line_format`` and, when given, appended to ``log_file``."""
    logger = logging.getLogger("nonxfer_bench")
    formatter = logging.Formatter(line_format, datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [_NoticeLine()] + ([logging.FileHandler(log_file, delay=True)] if log_file else [])
    previous = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous)


def command_run(args: argparse.Namespace) -> int:
    from nonxfer_bench.core.device import resolve_device
    from nonxfer_bench.execution.executors import WorkerDied, create_executor, ray_device
    from nonxfer_bench.execution.group import ComponentError
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.execution.store import exclusive
    from nonxfer_bench.loading import absolute, check_results_folder, claim_results_folder, load_suite
    from nonxfer_bench.reporting.destination import committed_draws, run_differences
    from nonxfer_bench.reporting.leaderboard import write_leaderboard
    from nonxfer_bench.reporting.provenance import Source
    from nonxfer_bench.reporting.tracking import Tracker

    suite = load_suite(Path(args.suite), output=args.output)
    check_results_folder(suite, Path(args.suite))  # before any work: never into another suite's results
    written = suite.model_copy(deep=True)  # the suite as its file says, before the command line changes it
    if args.limit is not None:
        suite.dataset.limit = args.limit
    suite.device = args.device or suite.device
    suite.precision = args.precision or suite.precision
    suite.bounds = suite.bounds and not args.no_bounds
    if args.executor != "ray":  # before any work: cuda asked for where there is none is one line, exit 2
        suite.device = str(resolve_device(suite.device))
    else:  # a Ray driver may have no GPU: its workers resolve their own, and the plan keys their draws
        suite.device = ray_device(suite.device, suite.resources.gpus)
    # before any work: results/<suite>/ only for the suite as written on the committed cells' draws, else a folder of the run's own
    differences = [] if args.force else run_differences(written, suite, committed_draws(suite.results_dir()))
    board = suite.run_dir() / "leaderboard" if differences else suite.results_dir()
    elsewhere = f" (not {suite.results_dir()}: this run differs from its committed results: {'; '.join(differences)}; --force replaces them)" if differences else ""
    if differences:
        print(f"{suite.name}: the leaderboard goes to {board}{elsewhere}", flush=True)
    _set_threads(args.threads or suite.threads)
    tracking = suite.tracking.enabled and not args.no_tracking
    tracker = Tracker(suite, Path(args.suite)) if tracking else None
    kept = f"finished cells are kept in {suite.run_dir() / 'cells.jsonl'}; run the same command again to resume"
    try:
        with exclusive(suite.run_dir()), notices(f"%(asctime)s {suite.name}: %(message)s", suite.run_dir() / "run.log"), tracker or contextlib.nullcontext():
            executor = create_executor(args.executor, workers=args.workers, address=args.address)
            runner = Runner(suite, fresh=args.fresh, on_group=tracker.log_group if tracker else None, executor=executor)
            result = runner.run()
            faults.point("leaderboard_before")
            if not differences:
                claim_results_folder(suite, Path(args.suite))  # after the work: a results folder that cannot be written loses no cell
            source = Source.store(Path(args.suite), suite.run_dir() / "cells.jsonl")
            paths = write_leaderboard(suite.name, result.cells, [m.name for m in suite.models], board, source=source)  # every planned cell
            faults.point("leaderboard_written")
            if tracker:
                tracker.log_results(paths)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {kept}", file=sys.stderr)
        raise
    except ComponentError as error:  # an encoder or attack of the suite raised: name its entry, keep the finished groups
        raise UserError(f"{absolute(Path(args.suite))}: {error}; {kept} once the entry is fixed") from None
    except WorkerDied as error:  # the parent run is marked FAILED; a rerun resumes it
        print(f"nonxfer-bench: {error}; {kept}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a read-only folder: the store holds every cell finished before it
        raise UserError(f"{_io_error(error)}; {kept}") from None
    print(
        f"{suite.name}: {result.computed_groups} encodings computed, {result.skipped_groups} reused; "
        f"{len(result.cells)} cells. Leaderboard: {paths[0]}{elsewhere}"
        + (f"; MLflow: {tracker.uri} (experiment {suite.tracking.experiment or suite.name}{_mlflow_link(tracker)})" if tracker else "")
    )
    return 0


def _mlflow_link(tracker: "Tracker") -> str:
    """Where to open the run's experiment: a server's own link, or how to start the UI on a local store."""
    from nonxfer_bench.reporting.tracking import experiment_url

    if tracker.uri.startswith(("http://", "https://")):
        return f", {experiment_url(tracker.uri, tracker.experiment_id)}"
    return f"; open it with `nonxfer-bench ui {tracker.suite_path}`"


def command_zoo_train(args: argparse.Namespace) -> int:
    from nonxfer_bench.training import train_zoo

    _set_threads(args.threads)
    cards = train_zoo(Path(args.zoo), fresh=args.fresh, only=args.only)
    print(f"trained {len(cards)} model(s)" if cards else "all weights present (use --fresh to retrain)")
    return 0


def command_train_diffusion(args: argparse.Namespace) -> int:
    from nonxfer_bench.core.device import resolve_device
    from nonxfer_bench.generative.diffusion import load_diffusion_spec, train_and_publish

    spec = load_diffusion_spec(Path(args.config), train_steps=args.steps)  # everything validated before any write
    device = str(resolve_device(args.device or "auto"))  # a device this machine lacks: one line before any write
    _set_threads(args.threads)
    card, quality = train_and_publish(spec, device=device, max_seconds=args.max_seconds)
    print(f"wrote {card}; purification PSNR by t*/T: {quality}")
    return 0


def _attacks_origin_problem() -> str | None:
    """Run from a checkout (``PYTHONPATH=.``), ``nonxfer_bench`` comes from the checkout but its ``attacks``
    from wherever the package was installed, or from nowhere: say so instead of running other code."""
    import importlib.util

    import nonxfer_bench

    checkout = Path(nonxfer_bench.__file__).resolve().parents[1] / "attacks"
    if not ((checkout / "__init__.py").is_file() and (checkout.parent / "pyproject.toml").is_file()):
        return None  # an installed package: attacks/ is inside it
    spec = importlib.util.find_spec("nonxfer_bench.attacks")
    where = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if where == checkout:
        return None
    found = f"from {where}" if where else "nowhere"
    return f"nonxfer_bench is imported from {checkout.parent} but nonxfer_bench.attacks {found}; install this checkout with `pip install -e .`"


def _suite_files() -> tuple[Path, list[Path]]:
    """The suite files ``list suites`` shows: ./suites/*.yaml, else those of the checkout the package runs from."""
    for folder in (SUITES_DIR.resolve(), Path(__file__).resolve().parents[1] / SUITES_DIR):
        if files := sorted(folder.glob("*.yaml")):
            return folder, files
    return SUITES_DIR.resolve(), []


def list_suites() -> int:
    """Each suite file with the first sentence of its description (read within the suite reader's bounds)."""
    import textwrap

    from nonxfer_bench.core.registry import first_sentence
    from nonxfer_bench.schema.files import read_yaml

    folder, files = _suite_files()
    if not files:
        raise UserError(f"list suites: no suite files (*.yaml) in {folder}; run it in a project with a suites/ folder")
    width = max(len(shown_path(path)) for path in files) + 2
    for path in files:
        try:
            data = read_yaml(path)
            description = data.get("description") if isinstance(data, dict) else None
            about = first_sentence(description) if isinstance(description, str) else "(no description)"
        except UserError as error:
            about = f"({str(error).removeprefix(str(path)).lstrip(':').strip()})"
        print(printable(textwrap.fill(f"{shown_path(path):{width}s}{about}", 110, subsequent_indent=" " * width)))
    return 0


def command_list(args: argparse.Namespace) -> int:
    if args.what == "suites":
        return list_suites()
    if args.what == "models":
        from nonxfer_bench.loading import load_suite

        if not args.suite:
            raise UserError("list models: give a suite file, e.g. `nonxfer-bench list models suites/quickstart.yaml`")
        suite = load_suite(Path(args.suite), require_weights=False)
        for model in suite.models:
            role = "authorized" if model.name in suite.authorized else suite.role(model.name, "")
            print(f"{model.name:16s} {model.arch:28s} {model.weights.source:5s} {role}")
        return 0
    import textwrap

    from nonxfer_bench.attacks import ATTACKS
    from nonxfer_bench.core.registry import first_sentence, parameter_defaults
    from nonxfer_bench.datasets.base import DATASETS
    from nonxfer_bench.encoders import ENCODERS

    registry = {"attacks": ATTACKS, "encoders": ENCODERS, "datasets": DATASETS}[args.what]
    names = registry.names()
    if args.what == "attacks":
        import nonxfer_bench.attacks

        print(f"built-in attacks from {Path(nonxfer_bench.attacks.__file__).parent}")
    indent = " " * 22
    for name in names:
        cls = registry.get(name)
        plugin = f" [plugin: {registry.plugins[name]}]" if name in registry.plugins else ""
        tier = f"[{cls.threat.tier}] " if args.what == "attacks" else ""  # the knowledge tier of its threat model
        print(textwrap.fill(f"{name:20s}  {tier}{first_sentence(cls.__doc__)}{plugin}", 110, subsequent_indent=indent))
        params = parameter_defaults(cls.Params)
        print(textwrap.fill(f"parameters: {', '.join(params) if params else 'none'}", 110, initial_indent=indent, subsequent_indent=indent + "  "))
        if args.what == "attacks":
            print(textwrap.fill(f"threat model: {cls.threat.text}", 110, initial_indent=indent, subsequent_indent=indent + "  "))
    return 0


def _read_cells(args: argparse.Namespace):
    """The cells for ``leaderboard`` and ``report``: from the suite's cell store, or read back from MLflow
    (``--mlflow``, ``--experiment``, ``--tracking-uri``, ``--run-id``). Returns (suite or None, name, cells,
    models, tracked invocation or None, where the cells came from, with how much of the suite's plan they are)."""
    from dataclasses import replace

    from nonxfer_bench.execution.plan import draw_plans
    from nonxfer_bench.loading import load_suite
    from nonxfer_bench.reporting.destination import coverage
    from nonxfer_bench.reporting.provenance import Source

    from_mlflow = bool(args.mlflow or args.experiment or args.tracking_uri or args.run_id)
    if not args.suite and not args.experiment:
        raise UserError(f"{args.command}: give a suite file, or --experiment NAME to read from MLflow")
    suite = load_suite(Path(args.suite), require_weights=not from_mlflow, output=args.output) if args.suite else None
    # the cells' keys depend on the draws (CPU or CUDA) of the machine that computed them, not of this one
    plans = draw_plans(suite) if suite else []
    if from_mlflow:
        import os

        from nonxfer_bench.reporting.readback import read_suite
        from nonxfer_bench.reporting.tracking import tracking_uri

        uri = args.tracking_uri or (tracking_uri(suite) if suite else os.environ.get("MLFLOW_TRACKING_URI"))
        if not uri:
            raise UserError("--experiment without a suite file needs --tracking-uri URI (or MLFLOW_TRACKING_URI)")
        tracked = read_suite(uri, args.experiment or (suite.tracking.experiment or suite.name), args.run_id)
        source = Source.mlflow(Path(args.suite) if args.suite else None, tracked.groups)
        found = max((coverage({cell.key for cell in tracked.cells}, plan) for plan in plans), key=lambda c: c.found, default=None)
        partial = None if found is None or found.complete else found.note()
        return suite, tracked.suite_name, tracked.cells, tracked.models, tracked, replace(source, partial=partial)
    from nonxfer_bench.execution.store import CellStore
    from nonxfer_bench.reporting.leaderboard import results_cells

    store = CellStore(suite.run_dir() / "cells.jsonl", writable=False)  # read-only: never truncates or locks
    committed = results_cells(suite.results_dir())
    for candidate, source in ((store, Source.store), (CellStore(committed, writable=False) if committed.is_file() else None, Source.results)):
        for plan in plans if candidate is not None else []:
            keys = [key for group in plan for key in group.cells.values()]
            if any(key in candidate for key in keys):  # the store, else a fresh clone's committed results
                cells = [candidate.cells[k] for k in keys if k in candidate]
                found = coverage(candidate, plan)
                source = replace(source(Path(args.suite), candidate.path), partial=None if found.complete else found.note())
                return suite, suite.name, cells, [m.name for m in suite.models], None, source
    raise UserError(f"{Path(args.suite).absolute()}: no finished cells in {store.path}; run `nonxfer-bench run {args.suite}` first")


def command_leaderboard(args: argparse.Namespace) -> int:
    from nonxfer_bench.loading import check_results_folder, claim_results_folder
    from nonxfer_bench.reporting.leaderboard import results_cells, write_leaderboard

    suite, name, cells, models, tracked, source = _read_cells(args)
    origin = f"MLflow {tracked.uri}, run {tracked.parent_id}" if tracked else source.origin
    if args.out:
        out = Path(args.out)
    elif not suite:  # cells from MLflow with no plan to check them against: never over results already there
        out = _project(args) / "results" / name
        if results_cells(out).is_file():
            raise UserError(f"{out} holds results, and without a suite file the cells from {origin} cannot be checked against its plan: give the suite file or --out DIR")
    else:
        out = suite.results_dir()
        check_results_folder(suite, Path(args.suite))
        _check_replaces(out, cells, source, origin, args.suite)
        claim_results_folder(suite, Path(args.suite))
    paths = write_leaderboard(name, cells, models, out, source=source)
    if tracked:
        from nonxfer_bench.reporting.readback import log_to_parent

        log_to_parent(tracked, paths)
    print(f"{paths[0]} ({len(cells)} cells from {origin}{'; ' + source.partial if source.partial else ''})")
    return 0


def _check_replaces(folder: Path, cells: "list[Cell]", source: "Source", origin: str, suite_file: str) -> None:
    """A suite's results folder is rewritten only from every planned cell, on the draws of the cells it holds
    (:mod:`nonxfer_bench.reporting.destination`); else one line naming why and ``--out``."""
    from nonxfer_bench.reporting.destination import committed_draws, draws

    if source.partial:
        raise UserError(
            f"{folder} is rewritten only from every planned cell, and {origin} holds {source.partial}: finish the run "
            f"(`nonxfer-bench run {suite_file}`) or write this leaderboard elsewhere with --out DIR"
        )
    kind, committed = draws(cells), committed_draws(folder)
    if kind and committed and kind != committed:
        raise UserError(
            f"{folder} holds cells of {committed} draws and {origin} cells of {kind} draws (other cells of the same "
            "experiment): write their leaderboard elsewhere with --out DIR"
        )


def command_report(args: argparse.Namespace) -> int:
    import tempfile

    from nonxfer_bench.reporting.report import write_report

    suite, name, cells, models, tracked, source = _read_cells(args)
    out = Path(args.out) if args.out else (suite.run_dir() if suite else _project(args) / "runs" / name) / "report"
    with tempfile.TemporaryDirectory() as downloads:
        if tracked:
            samples = tracked.download_samples(Path(downloads))
        else:
            from nonxfer_bench.execution.plan import plan_suite
            from nonxfer_bench.storage.samples import sample_file

            grids = {g.label: sample_file(suite.run_dir(), g.label) for g in plan_suite(suite)}
            samples = {label: path for label, path in grids.items() if path.is_file()}
        index = write_report(name, cells, models, samples, out, source=source)
    print(f"{index} ({len(cells)} cells, {len(samples)} sample grids)")
    return 0


def _project(args: argparse.Namespace) -> Path:
    """Where runs/ and results/ are without a suite file (reading from MLflow): --output, else the current folder."""
    return Path(args.output).absolute() if args.output else Path.cwd()


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", metavar="DIR", help="put runs/<suite>/ and results/<suite>/ under DIR (default: the suite's project folder: "
        "the folder above the suite file's when that is named 'suites', else the suite file's own)",
    )


def _add_cell_source(parser: argparse.ArgumentParser, out_help: str) -> None:
    parser.add_argument("suite", nargs="?", help="suite YAML file (optional with --experiment)")
    parser.add_argument("--mlflow", action="store_true", help="read the cells back from MLflow instead of the cell store")
    parser.add_argument("--experiment", help="MLflow experiment to read (default: the suite's); implies --mlflow")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the suite's tracking.uri or store)")
    parser.add_argument("--run-id", help="parent run of the invocation to read (default: the latest with group runs)")
    parser.add_argument("--out", help=out_help)
    _add_output(parser)


def command_encode(args: argparse.Namespace) -> int:
    import os

    from nonxfer_bench.owner.release import encode_folder
    from nonxfer_bench.schema.files import parse_yaml

    _set_threads(args.threads)
    params = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {excerpt(item)}: expected NAME=VALUE (VALUE read as YAML), e.g. --param k=24")
        try:
            params[name] = parse_yaml(value, "VALUE")  # plain YAML values only (never Python objects), bounded
        except UserError as error:
            raise UserError(f"--param {excerpt(item, 60)}: VALUE is not a plain YAML value ({error})") from None
    seed_key = args.seed_key or os.environ.get("NXB_SEED_KEY", "")
    with notices("nonxfer-bench: %(message)s"):
        manifest = encode_folder(
            Path(args.zoo), args.model, args.encoder, args.strength, args.format, seed_key, Path(args.input), Path(args.output),
            params=params, batch_size=args.batch_size, overwrite=args.overwrite,
        )
    notes = "; ".join(f"{note}: {count} image(s)" for note, count in manifest["notes"].items())
    print(
        f"wrote {len(manifest['images'])} {manifest['format']} NE(s) for {args.model} to {args.output} "
        f"(PSNR after storage: mean {manifest['psnr_mean']} dB, min {manifest['psnr_min']} dB; key id {manifest['key_id']})"
        + (f"; {notes}" if notes else "")
    )
    return 0


def command_verify(args: argparse.Namespace) -> int:
    from nonxfer_bench.owner.release import format_table, verify_release

    _set_threads(args.threads)
    result = verify_release(
        Path(args.release), Path(args.zoo), args.models, Path(args.originals) if args.originals else None,
        labels_from_folders=args.labels, batch_size=args.batch_size, controls=args.controls, overwrite=args.overwrite,
    )
    print(f"{args.release}: {result['format']} release for {result['authorized']['name']} "
          f"({result['encoder']['name']}@{result['encoder']['strength']:g}), percentages:")
    print(format_table(result["models"]))
    print(result["verdict"]["text"])
    print(f"wrote {Path(args.release) / 'verify.json'}")
    return 0


def command_ui(args: argparse.Namespace) -> int:
    from nonxfer_bench.loading import load_suite
    from nonxfer_bench.reporting.tracking import check_tracking_uri, experiment_url, find_experiment, tracking_uri

    suite = load_suite(Path(args.suite), require_weights=False)
    uri = tracking_uri(suite)
    served = uri.startswith(("http://", "https://"))  # a tracking server already serves its own UI
    if not served:
        _check_listen(args.host, args.port)  # before the link: a taken port or an unknown host is one line, not a dead link
    check_tracking_uri(uri)  # a server that is down: one line now, not minutes of MLflow's retries
    experiment = find_experiment(uri, suite.tracking.experiment or suite.name)
    if served:
        print(f"{suite.name} logs to the MLflow server {uri}: open {experiment_url(uri, experiment)}")
        return 0
    print(f"MLflow UI for {uri}: {experiment_url(f'http://{args.host}:{args.port}', experiment)}", flush=True)
    # one worker: a local UI for one person starts about twice as fast as mlflow's default pool on 2 cores
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port), "--workers", "1"]
    # its own session: the server, its job runner and their workers form one process group that we stop as a whole
    server = subprocess.Popen([sys.executable, "-m", *command], start_new_session=True)
    try:
        return server.wait()
    finally:  # SIGTERM (raised here as Terminated), Ctrl-C, or the server exiting on its own
        _stop_group(server)


def _check_listen(host: str, port: int) -> None:
    """That a server can listen on ``host``:``port``: the name resolves to an address of this machine and the port is
    free (bound and released at once, with SO_REUSEADDR as servers bind, so a port in TIME_WAIT counts as free)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, ValueError) as error:  # unknown name, NUL byte, a label too long for IDNA
        raise UserError(f"ui: --host {excerpt(host)} does not resolve ({error}); use an address of this machine, e.g. --host 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(
                f"ui: cannot listen on --host {excerpt(host)} --port {port} ({error.strerror or error}): another server on "
                "that port, or not an address of this machine; give another --port or --host"
            ) from None


def _stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to ``process``'s process group, then SIGKILL to whatever is left of it after ``grace`` seconds."""
    import os
    import time

    # a second Ctrl-C or kill must not cut the clean-up short
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reaps the server itself once it has exited
            os.killpg(process.pid, 0)  # ProcessLookupError once every member of the group has exited
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member of the server's group has exited: nothing left to stop
    finally:
        process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser() -> argparse.ArgumentParser:
    from nonxfer_bench import __version__

    parser = OneLineParser(prog="nonxfer-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nonxfer-bench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite: encode, attack, evaluate, log, leaderboard")
    run.add_argument("suite", help="suite YAML file, e.g. suites/quickstart.yaml")
    run.add_argument("--fresh", action="store_true", help="recompute cells that are already finished")
    run.add_argument("--limit", type=positive_int, help="evaluate a seeded random subset of N images")
    run.add_argument("--threads", type=threads_int, help="torch CPU threads")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.add_argument("--executor", choices=EXECUTOR_NAMES, default="local", help="where encoding groups run (default: this process)")
    run.add_argument("--workers", type=bounded_int(1, 256), default=2, help="processes for --executor process")
    run.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto); default: a local Ray instance")
    run.add_argument("--device", type=device_name, help="auto (the first GPU if any), cpu, cuda or cuda:N (default: the suite's 'device', auto)")
    run.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="model precision (default: the suite's 'precision', fp32)")
    run.add_argument("--no-bounds", action="store_true", help="skip the bound diagnostics (as the suite key 'bounds: false')")
    run.add_argument(
        "--force", action="store_true", help="write results/<suite>/ even when this run differs from the results there (--limit, "
        "--precision, --no-bounds, other draws); without it such a run's leaderboard goes to runs/<suite>/leaderboard/",
    )
    _add_output(run)
    run.set_defaults(handler=command_run)

    training = commands.add_parser("train", help="train the zoo or a generative model used by attacks").add_subparsers(dest="train_command", required=True)
    zoo = commands.add_parser("zoo", help="zoo utilities (`zoo train` is `train zoo`)").add_subparsers(dest="zoo_command", required=True)
    for subcommands in (training, zoo):  # `train zoo` reads like `train diffusion`; `zoo train` is kept as an alias
        train = subcommands.add_parser("zoo" if subcommands is training else "train", help="train the zoo's models that have file weights")
        train.add_argument("zoo", help="zoo YAML file, e.g. suites/zoo/fashion.yaml")
        train.add_argument("--fresh", action="store_true", help="retrain models whose weights exist")
        train.add_argument("--only", nargs="+", help="train only these model names")
        train.add_argument("--threads", type=threads_int, help="torch CPU threads")
        train.set_defaults(handler=command_zoo_train)
    diffusion = training.add_parser("diffusion", help="train a DDPM for diffusion purification")
    diffusion.add_argument("config", help="diffusion config YAML, e.g. suites/zoo/fashion-ddpm.yaml")
    diffusion.add_argument("--device", type=device_name, help="auto (the first GPU if any), cpu, cuda or cuda:N (default: auto)")
    diffusion.add_argument("--steps", type=bounded_int(1, MAX_TRAIN_STEPS), help="override train_steps")
    diffusion.add_argument("--max-seconds", type=bounded_float(0, 1e7, low_open=True), help="stop training after this many seconds")
    diffusion.add_argument("--threads", type=threads_int, help="torch CPU threads")
    diffusion.set_defaults(handler=command_train_diffusion)

    listing = commands.add_parser("list", help="list registered components or suites")
    listing.add_argument("what", choices=["attacks", "encoders", "datasets", "suites", "models"])
    listing.add_argument("suite", nargs="?", help="suite file (for 'models')")
    listing.set_defaults(handler=command_list)

    board = commands.add_parser("leaderboard", help="rebuild a suite's leaderboard and plots from its cell store or MLflow")
    _add_cell_source(
        board, "the leaderboard's folder (default: results/<suite> in the project folder or --output, which only every "
        "planned cell of the suite's draws may rewrite: a partial store or other draws need --out)",
    )
    board.set_defaults(handler=command_leaderboard)

    report = commands.add_parser("report", help="write a static HTML report (leaderboard, plots, sample images) in one folder")
    _add_cell_source(report, "the report's folder (default: runs/<suite>/report in the project folder or --output)")
    report.set_defaults(handler=command_report)

    encode = commands.add_parser("encode", help="turn an image folder into NE files for one authorized model")
    encode.add_argument("input", help="folder of images (searched recursively; class sub-folders are mirrored)")
    encode.add_argument("output", help="folder for the NE files and manifest.json")
    encode.add_argument("--zoo", required=True, help="zoo file or suite file that defines the model")
    encode.add_argument("--model", required=True, help="the authorized model's name in that zoo")
    encode.add_argument("--encoder", required=True, help="encoder name (nonxfer-bench list encoders)")
    encode.add_argument("--strength", type=bounded_float(-MAX_STRENGTH, MAX_STRENGTH), required=True, help="encoder strength (PSNR in dB; nominal for 'reference')")
    encode.add_argument("--param", action="append", metavar="NAME=VALUE", help="encoder parameter (repeatable)")
    encode.add_argument("--format", default="png8", help="float32, png16, png8, jpeg or jpeg<Q> (default png8)")
    encode.add_argument("--seed-key", help="secret key seeding the noise (default: env NXB_SEED_KEY); only its hash is written")
    encode.add_argument("--batch-size", type=batch_int, default=64)
    encode.add_argument("--threads", type=threads_int, help="torch CPU threads")
    encode.add_argument("--overwrite", action="store_true", help="replace the release already in OUTPUT (never anything else)")
    encode.set_defaults(handler=command_encode)

    verify = commands.add_parser("verify", help="score zoo models on a released NE folder")
    verify.add_argument("release", help="folder written by `nonxfer-bench encode`")
    verify.add_argument("--zoo", required=True, help="zoo file or suite file with the models")
    verify.add_argument("--models", nargs="+", help="model names (default: every zoo model); the authorized model is always scored")
    verify.add_argument("--originals", help="the input folder given to encode: agreement with each model's predictions on it (this or --labels is needed)")
    verify.add_argument("--labels", action="store_true", help="labels from class folders (sorted names = class indices)")
    verify.add_argument("--controls", nargs="+", metavar="NAME", help="models shown as controls, never counted as unauthorized (a suite file's controls are)")
    verify.add_argument("--overwrite", action="store_true", help="replace the release's verify.json from an earlier verify")
    verify.add_argument("--batch-size", type=batch_int, default=64)
    verify.add_argument("--threads", type=threads_int, help="torch CPU threads")
    verify.set_defaults(handler=command_verify)

    ui = commands.add_parser("ui", help="start the MLflow UI on the store a suite logs to")
    ui.add_argument("suite")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=bounded_int(1, 65_535), default=5000)
    ui.set_defaults(handler=command_ui)
    return parser


def _io_error(error: OSError) -> str:
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    return f"{where + ': ' if where else ''}{error.strerror or error} (check the path, its permissions and free disk space)"


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input or an I/O error (one line on stderr), 130 Ctrl-C, 143 SIGTERM."""
    args = build_parser().parse_args(argv)
    problem = _attacks_origin_problem()
    if problem:
        print(f"nonxfer-bench: error: {problem}", file=sys.stderr)
        return 2
    if args.command not in ("list", "ui"):  # torch takes seconds to import; listing and the UI never compute
        import torch

        torch.set_flush_denormal(True)  # denormal weights or activations can slow CPU work down 20-50x
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        check_environment()
        return args.handler(args)
    except UserError as error:
        print(one_line(f"nonxfer-bench: error: {error}"), file=sys.stderr)
        return 2
    except OSError as error:
        print(one_line(f"nonxfer-bench: error: {_io_error(error)}"), file=sys.stderr)
        return 2
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
