"""The ``nonxfer-bench`` command line: run suites, train the zoo, list components, rebuild leaderboards and reports,
open the UI."""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import nonxfer_bench
from nonxfer_bench.app.checkout import attacks_origin_problem
from nonxfer_bench.core.environment import check_environment
from nonxfer_bench.core.errors import UserError, excerpt, io_error, one_line
from nonxfer_bench.core.params import MAX_STRENGTH, MAX_TRAIN_STEPS
from nonxfer_bench.execution import EXECUTOR_NAMES

if TYPE_CHECKING:
    from nonxfer_bench.app.sources import MlflowQuery

# Each command imports its app module (and through it torch, timm, mlflow...) inside its handler, and torch itself
# only where it computes: `nonxfer-bench --version`, `--help` and `list suites` stay fast (a few hundred ms, no torch).


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill`), turned into the same clean shutdown as Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes as one line with exit code 2, like every other bad input."""

    def error(self, message: str) -> None:
        command = self.prog.removeprefix("nonxfer-bench").strip()
        self.exit(
            2,
            one_line(f"nonxfer-bench: error: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)")
            + "\n",
        )


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


def _params(items: list[str] | None) -> dict:
    """``--param NAME=VALUE`` options as a dict, each VALUE read as a plain YAML value (never a Python object)."""
    from nonxfer_bench.schema.files import parse_yaml

    params = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {excerpt(item)}: expected NAME=VALUE (VALUE read as YAML), e.g. --param k=24")
        try:
            params[name] = parse_yaml(value, "VALUE")  # plain YAML values only (never Python objects), bounded
        except UserError as error:
            raise UserError(f"--param {excerpt(item, 60)}: VALUE is not a plain YAML value ({error})") from None
    return params


def command_run(args: argparse.Namespace) -> int:
    from nonxfer_bench.app.run import RunOptions, run_suite

    overrides = {
        "device": args.device,
        "precision": args.precision,
        "limit": args.limit,
        "bounds": not args.no_bounds,
        "threads": args.threads,
    }
    options = RunOptions(
        output=args.output,
        fresh=args.fresh,
        force=args.force,
        tracking=not args.no_tracking,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
    )
    return run_suite(Path(args.suite), overrides, options)


def _mlflow_query(args: argparse.Namespace) -> MlflowQuery:
    """``--mlflow``, ``--experiment``, ``--tracking-uri`` and ``--run-id`` of ``leaderboard`` and ``report``."""
    from nonxfer_bench.app.sources import MlflowQuery

    return MlflowQuery(args.mlflow, args.experiment, args.tracking_uri, args.run_id)


def command_leaderboard(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import boards

    suite, out = Path(args.suite) if args.suite else None, Path(args.out) if args.out else None
    return boards.leaderboard(suite, args.output, _mlflow_query(args), out)


def command_report(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import boards

    suite, out = Path(args.suite) if args.suite else None, Path(args.out) if args.out else None
    return boards.report(suite, args.output, _mlflow_query(args), out, args.samples)


def command_list(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import listing  # imports no torch: listing suites stays fast

    return listing.show(args.what, Path(args.suite) if args.suite else None)


def command_ui(args: argparse.Namespace) -> int:
    from nonxfer_bench.app.ui import serve_ui

    return serve_ui(Path(args.suite), args.host, args.port)


def command_zoo_train(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import train

    return train.zoo(Path(args.zoo), args.fresh, args.only, args.threads)


def command_train_diffusion(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import train

    return train.diffusion(Path(args.config), args.steps, args.device, args.max_seconds, args.threads)


def command_encode(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import owner
    from nonxfer_bench.app.compute import resolved_settings

    settings = resolved_settings(args.device, None, args.threads)  # a device this machine lacks: one line first
    return owner.encode(
        Path(args.input), args.output, Path(args.zoo), args.model, args.encoder, args.strength, args.format,
        args.seed_key or os.environ.get("NXB_SEED_KEY", ""), _params(args.param), args.batch_size, args.overwrite,
        args.force, settings,
    )  # fmt: skip


def command_verify(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import owner
    from nonxfer_bench.app.compute import resolved_settings

    if args.classes and not args.labels:
        raise UserError("--classes names the classes of --labels; pass --labels too")
    return owner.verify(
        args.release, Path(args.zoo), args.models, Path(args.originals) if args.originals else None, args.labels,
        Path(args.classes) if args.classes else None, args.batch_size, args.controls, args.overwrite,
        resolved_settings(args.device, args.precision, args.threads),
    )  # fmt: skip


def command_attack(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import owner
    from nonxfer_bench.app.attack import AttackRequest
    from nonxfer_bench.app.compute import resolved_settings

    settings = resolved_settings(args.device, args.precision, args.threads)  # a device this machine lacks: one line
    return owner.attack(
        AttackRequest(
            Path(args.release), Path(args.originals), Path(args.zoo), Path(args.protocol), args.ensemble,
            Path(args.classes) if args.classes else None, args.public, Path(args.out) if args.out else None,
            args.batch_size, args.device or "auto", settings.precision, args.threads,
        )
    )  # fmt: skip


def command_bundle(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import bundles

    return bundles.bundle(Path(args.suite))


def command_check(args: argparse.Namespace) -> int:
    from nonxfer_bench.app.bundles import check
    from nonxfer_bench.bundles.check import CheckOptions

    options = CheckOptions(
        replay=not args.no_replay, groups=args.replay_groups, seed=args.seed, allow_extra=tuple(args.allow_extra or ())
    )
    return check(Path(args.bundle), options)


def command_site(args: argparse.Namespace) -> int:
    from nonxfer_bench.app import bundles

    return bundles.site(Path(args.results), Path(args.out))


Commands = argparse._SubParsersAction  # what `add_subparsers` returns: each `_add_<command>` adds one command to it
PRECISIONS = ("fp32", "bf16", "fp16")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=threads_int, help="torch CPU threads")


def _add_device(parser: argparse.ArgumentParser, default: str) -> None:
    """``--device``; ``default`` says in the help what no ``--device`` means."""
    parser.add_argument(
        "--device", type=device_name, help=f"auto (the first GPU if any), cpu, cuda or cuda:N ({default})"
    )


def _add_release_compute(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """How ``encode``, ``verify`` and ``attack`` compute on a release folder: --batch-size, --threads, --device."""
    parser.add_argument("--batch-size", type=batch_int, default=batch_size)
    _add_threads(parser)
    _add_device(parser, "default auto")


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="put runs/<suite>/ and results/<suite>/ under DIR (default: the suite's project folder: "
        "the folder above the suite file's when that is named 'suites', else the suite file's own)",
    )


def _add_cell_source(parser: argparse.ArgumentParser, out_help: str) -> None:
    parser.add_argument("suite", nargs="?", help="suite YAML file (optional with --experiment)")
    parser.add_argument(
        "--mlflow", action="store_true", help="read the cells back from MLflow instead of the cell store"
    )
    parser.add_argument("--experiment", help="MLflow experiment to read (default: the suite's); implies --mlflow")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the suite's tracking.uri or store)"
    )
    parser.add_argument("--run-id", help="parent run of the invocation to read (default: the latest with group runs)")
    parser.add_argument("--out", help=out_help)
    _add_output(parser)


def _add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="run a suite: encode, attack, evaluate, log, leaderboard")
    run.add_argument("suite", help="suite YAML file, e.g. suites/quickstart.yaml")
    run.add_argument("--fresh", action="store_true", help="recompute cells that are already finished")
    run.add_argument("--limit", type=positive_int, help="evaluate a seeded random subset of N images")
    _add_threads(run)
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.add_argument(
        "--executor", choices=EXECUTOR_NAMES, default="local", help="where encoding groups run (default: this process)"
    )
    run.add_argument("--workers", type=bounded_int(1, 256), default=2, help="processes for --executor process")
    run.add_argument(
        "--address", help="Ray cluster address for --executor ray (e.g. auto); default: a local Ray instance"
    )
    _add_device(run, "default: the suite's 'device', auto")
    run.add_argument("--precision", choices=PRECISIONS, help="model precision (default: the suite's 'precision', fp32)")
    run.add_argument(
        "--no-bounds", action="store_true", help="skip the bound diagnostics (as the suite key 'bounds: false')"
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="write results/<suite>/ even when this run differs from the results there (--limit, "
        "--precision, --no-bounds, other draws); without it such a run's leaderboard goes to runs/<suite>/leaderboard/",
    )
    _add_output(run)
    run.set_defaults(handler=command_run)


def _add_zoo_training(subcommands: Commands, name: str) -> None:
    """Zoo training, as ``train zoo`` and as its older spelling ``zoo train``."""
    train = subcommands.add_parser(name, help="train the zoo's models that have file weights")
    train.add_argument("zoo", help="zoo YAML file, e.g. suites/zoo/fashion.yaml")
    train.add_argument("--fresh", action="store_true", help="retrain models whose weights exist")
    train.add_argument("--only", nargs="+", help="train only these model names")
    _add_threads(train)
    train.set_defaults(handler=command_zoo_train)


def _add_train(commands: Commands) -> None:
    training = commands.add_parser("train", help="train the zoo or a generative model used by attacks").add_subparsers(
        dest="train_command", required=True
    )
    _add_zoo_training(training, "zoo")
    diffusion = training.add_parser("diffusion", help="train a DDPM for diffusion purification")
    diffusion.add_argument("config", help="diffusion config YAML, e.g. suites/zoo/fashion-ddpm.yaml")
    _add_device(diffusion, "default: auto")
    diffusion.add_argument("--steps", type=bounded_int(1, MAX_TRAIN_STEPS), help="override train_steps")
    diffusion.add_argument(
        "--max-seconds", type=bounded_float(0, 1e7, low_open=True), help="stop training after this many seconds"
    )
    _add_threads(diffusion)
    diffusion.set_defaults(handler=command_train_diffusion)


def _add_zoo(commands: Commands) -> None:
    zoo = commands.add_parser("zoo", help="zoo utilities (`zoo train` is `train zoo`)").add_subparsers(
        dest="zoo_command", required=True
    )
    _add_zoo_training(zoo, "train")  # kept as an alias: `train zoo` reads like `train diffusion`


def _add_list(commands: Commands) -> None:
    listing = commands.add_parser("list", help="list registered components or suites")
    listing.add_argument("what", choices=["attacks", "encoders", "datasets", "suites", "models"])
    listing.add_argument("suite", nargs="?", help="suite file (for 'models')")
    listing.set_defaults(handler=command_list)


def _add_leaderboard(commands: Commands) -> None:
    board = commands.add_parser(
        "leaderboard", help="rebuild a suite's leaderboard and plots from its cell store or MLflow"
    )
    _add_cell_source(
        board,
        "the leaderboard's folder (default: results/<suite> in the project folder or --output, which only every "
        "planned cell of the suite's draws may rewrite: a partial store or other draws need --out)",
    )
    board.set_defaults(handler=command_leaderboard)


def _add_report(commands: Commands) -> None:
    report = commands.add_parser(
        "report", help="write a static HTML report (leaderboard, plots, sample images) in one folder"
    )
    _add_cell_source(report, "the report's folder (default: runs/<suite>/report in the project folder or --output)")
    report.add_argument(
        "--samples",
        action="store_true",
        help="recompute each release's sample images on the suite's output.sample_images images (no run folder needed)",
    )
    report.set_defaults(handler=command_report)


def _add_encode(commands: Commands) -> None:
    encode = commands.add_parser("encode", help="turn an image folder into NE files for one authorized model")
    encode.add_argument("input", help="folder of images (searched recursively; class sub-folders are mirrored)")
    encode.add_argument("output", help="folder for the NE files and manifest.json")
    encode.add_argument("--zoo", required=True, help="zoo file or suite file that defines the model")
    encode.add_argument("--model", required=True, help="the authorized model's name in that zoo")
    encode.add_argument("--encoder", required=True, help="encoder name (nonxfer-bench list encoders)")
    encode.add_argument(
        "--strength",
        type=bounded_float(-MAX_STRENGTH, MAX_STRENGTH),
        required=True,
        help="encoder strength (PSNR in dB; nominal for 'reference')",
    )
    encode.add_argument("--param", action="append", metavar="NAME=VALUE", help="encoder parameter (repeatable)")
    encode.add_argument("--format", default="png8", help="float32, png16, png8, jpeg or jpeg<Q> (default png8)")
    encode.add_argument(
        "--seed-key", help="secret key seeding the noise (default: env NXB_SEED_KEY); only its hash is written"
    )
    _add_release_compute(encode, batch_size=64)
    encode.add_argument(
        "--overwrite", action="store_true", help="replace the release already in OUTPUT (never anything else)"
    )
    encode.add_argument(
        "--force",
        action="store_true",
        help="write a storage format the encoder does not declare it survives (the manifest and card say so)",
    )
    encode.set_defaults(handler=command_encode)


def _add_verify(commands: Commands) -> None:
    verify = commands.add_parser("verify", help="score zoo models on a released NE folder")
    verify.add_argument("release", help="folder written by `nonxfer-bench encode`")
    verify.add_argument("--zoo", required=True, help="zoo file or suite file with the models")
    verify.add_argument(
        "--models", nargs="+", help="model names (default: every zoo model); the authorized model is always scored"
    )
    verify.add_argument(
        "--originals",
        help="the input folder given to encode: agreement with each model's predictions on it (this or --labels "
        "is needed)",
    )
    verify.add_argument(
        "--labels",
        action="store_true",
        help="labels from the class folders, named by class name or index (the zoo's classes, or --classes)",
    )
    verify.add_argument(
        "--classes",
        metavar="FILE",
        help="class names for --labels, one per line (line 1 = label 0); default: the zoo dataset's",
    )
    verify.add_argument(
        "--controls",
        nargs="+",
        metavar="NAME",
        help="models shown as controls, never counted as unauthorized (a suite file's controls are)",
    )
    verify.add_argument(
        "--overwrite", action="store_true", help="replace the release's verify.json from an earlier verify"
    )
    _add_release_compute(verify, batch_size=64)
    verify.add_argument("--precision", choices=PRECISIONS, help="model precision (default fp32)")
    verify.set_defaults(handler=command_verify)


def _add_attack(commands: Commands) -> None:
    attack = commands.add_parser(
        "attack", help="run a protocol's attack tiers on a release folder as stored, and fill its protection card"
    )
    attack.add_argument("release", help="folder written by `nonxfer-bench encode`")
    attack.add_argument(
        "--originals", required=True, help="the input folder given to encode, laid out as root/<class>/<image>"
    )
    attack.add_argument(
        "--zoo",
        required=True,
        help="zoo file or suite file with the release's authorized model and the models that attack it",
    )
    attack.add_argument("--protocol", required=True, help="protocol file, e.g. suites/protocols/ne-v2.yaml")
    attack.add_argument(
        "--ensemble",
        choices=("full", "fast"),
        default="full",
        help="the protocol's standard ensemble (full) or its quick subset (fast)",
    )
    attack.add_argument(
        "--classes",
        metavar="FILE",
        help="class names of the class folders, one per line (line 1 = label 0); default: the zoo dataset's",
    )
    attack.add_argument(
        "--public",
        metavar="YAML",
        help="clean images informed attackers hold, e.g. '{name: fashion_mnist, params: {split: train}}' "
        "(default: the zoo dataset's train split)",
    )
    attack.add_argument(
        "--out", metavar="DIR", help="folder for the run (suite.yaml, runs/, results/); default: RELEASE/attack"
    )
    _add_release_compute(attack, batch_size=256)
    attack.add_argument("--precision", choices=PRECISIONS, help="model precision (default fp32)")
    attack.set_defaults(handler=command_attack)


def _add_bundle(commands: Commands) -> None:
    bundle = commands.add_parser(
        "bundle", help="write BUNDLE.json (hashes and provenance) into a suite's results folder"
    )
    bundle.add_argument(
        "suite", help="suite YAML file whose results folder (results/<suite>, written by its run) becomes a bundle"
    )
    bundle.set_defaults(handler=command_bundle)


def _add_check(commands: Commands) -> None:
    checking = commands.add_parser(
        "check", help="check a bundle: hashes, tables re-derived from the outcome bits, a replayed sample of groups"
    )
    checking.add_argument("bundle", help="a bundle's folder (results/<suite>) or its suite YAML file")
    checking.add_argument(
        "--no-replay", action="store_true", help="check hashes, numbers and tables only; compute nothing again"
    )
    checking.add_argument(
        "--replay-groups",
        type=bounded_int(1, 10**6),
        metavar="N",
        help="replay N encoding groups (default: 2%% of them, at least 1)",
    )
    checking.add_argument(
        "--seed",
        type=bounded_int(0, 2**32 - 1),
        help="seed of the replayed sample (default: drawn from os.urandom, printed)",
    )
    checking.add_argument(
        "--allow-extra",
        action="append",
        metavar="GLOB",
        help="files that may lie in the folder without being in BUNDLE.json (repeatable)",
    )
    checking.set_defaults(handler=command_check)


def _add_site(commands: Commands) -> None:
    site = commands.add_parser("site", help="one static leaderboard site from every bundle under a results folder")
    site.add_argument(
        "results", nargs="?", default="results", help="the folder that holds the bundles (default: results)"
    )
    site.add_argument(
        "--out",
        default="site-results",
        help="the site's folder: new, empty, or written by `site` before (default: site-results)",
    )
    site.set_defaults(handler=command_site)


def _add_ui(commands: Commands) -> None:
    ui = commands.add_parser("ui", help="start the MLflow UI on the store a suite logs to")
    ui.add_argument("suite")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=bounded_int(1, 65_535), default=5000)
    ui.set_defaults(handler=command_ui)


def build_parser() -> argparse.ArgumentParser:
    """Every command, in the order `nonxfer-bench --help` lists them."""
    parser = OneLineParser(prog="nonxfer-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nonxfer-bench {nonxfer_bench.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    _add_train(commands)
    _add_zoo(commands)
    _add_list(commands)
    _add_leaderboard(commands)
    _add_report(commands)
    _add_encode(commands)
    _add_verify(commands)
    _add_attack(commands)
    _add_bundle(commands)
    _add_check(commands)
    _add_site(commands)
    _add_ui(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input or an I/O error (one line on stderr), 130 Ctrl-C, 143 SIGTERM."""
    args = build_parser().parse_args(argv)
    problem = attacks_origin_problem()
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
    except BrokenPipeError:  # `nonxfer-bench list attacks | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush goes nowhere
        return 0
    except OSError as error:
        print(one_line(f"nonxfer-bench: error: {io_error(error)}"), file=sys.stderr)
        return 2
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
