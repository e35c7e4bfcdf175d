"""The ``nonxfer-bench`` command line: run suites, train the zoo, list components, rebuild leaderboards, open the UI."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from pathlib import Path

from nonxfer_bench.errors import UserError

SUITES_DIR = Path("suites")


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def command_run(args: argparse.Namespace) -> int:
    from nonxfer_bench.executors import WorkerDied, create_executor
    from nonxfer_bench.leaderboard import write_leaderboard
    from nonxfer_bench.runner import Runner
    from nonxfer_bench.suite import load_suite
    from nonxfer_bench.tracking import Tracker

    suite = load_suite(Path(args.suite))
    if args.limit is not None:
        suite.dataset.limit = args.limit
    _set_threads(args.threads or suite.threads)
    tracking = suite.tracking.enabled and not args.no_tracking
    tracker = Tracker(suite, Path(args.suite)) if tracking else None
    with tracker or contextlib.nullcontext():
        executor = create_executor(args.executor, workers=args.workers, address=args.address)
        runner = Runner(suite, fresh=args.fresh, on_group=tracker.log_group if tracker else None, executor=executor)
        try:
            result = runner.run()
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: {len(runner.store.cells)} finished cells are kept in {runner.store.path}; "
                "run the same command again to resume",
                file=sys.stderr,
            )
            raise
        except WorkerDied as error:
            print(f"nonxfer-bench: {error}", file=sys.stderr)
            return 1
        paths = write_leaderboard(suite.name, result.cells, [m.name for m in suite.models], suite.results_dir())
        if tracker:
            tracker.log_results(paths)
    print(
        f"{suite.name}: {result.computed_groups} encodings computed, {result.skipped_groups} reused; "
        f"{len(result.cells)} cells. Leaderboard: {paths[0]}"
        + (f"; MLflow: {tracker.uri} (experiment {suite.tracking.experiment or suite.name})" if tracker else "")
    )
    return 0


def command_zoo_train(args: argparse.Namespace) -> int:
    from nonxfer_bench.training import train_zoo

    _set_threads(args.threads)
    cards = train_zoo(Path(args.zoo), fresh=args.fresh, only=args.only)
    print(f"trained {len(cards)} model(s)" if cards else "all weights present (use --fresh to retrain)")
    return 0


def command_train_diffusion(args: argparse.Namespace) -> int:
    import torch

    from nonxfer_bench.diffusion import evaluate_purifier, load_diffusion_spec, train_diffusion, write_model_card

    _set_threads(args.threads)
    spec = load_diffusion_spec(Path(args.config))
    if args.steps is not None:
        spec.train_steps = args.steps
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = train_diffusion(spec, device=device, max_seconds=args.max_seconds)
    quality = evaluate_purifier(spec, device=device)
    print(f"wrote {write_model_card(spec, card, quality)}; purification PSNR by t*/T: {quality}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    if args.what == "suites":
        for path in sorted(SUITES_DIR.glob("*.yaml")):
            print(path)
        return 0
    if args.what == "models":
        from nonxfer_bench.suite import load_suite

        if not args.suite:
            raise UserError("list models: give a suite file, e.g. `nonxfer-bench list models suites/quickstart.yaml`")
        suite = load_suite(Path(args.suite), require_weights=False)
        for model in suite.models:
            role = "authorized" if model.name in suite.authorized else "unauthorized"
            print(f"{model.name:16s} {model.arch:28s} {model.weights.source:5s} {role}")
        return 0
    from nonxfer_bench.attacks import ATTACKS
    from nonxfer_bench.data import DATASETS
    from nonxfer_bench.encoders import ENCODERS

    registry = {"attacks": ATTACKS, "encoders": ENCODERS, "datasets": DATASETS}[args.what]
    for name in registry.names():
        cls = registry.get(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:14s} {summary}")
    return 0


def command_leaderboard(args: argparse.Namespace) -> int:
    from nonxfer_bench.leaderboard import write_leaderboard
    from nonxfer_bench.plan import plan_suite
    from nonxfer_bench.store import CellStore
    from nonxfer_bench.suite import load_suite

    suite = load_suite(Path(args.suite))
    store = CellStore(suite.run_dir() / "cells.jsonl")
    keys = [key for group in plan_suite(suite) for key in group.cells.values()]
    missing = sum(key not in store for key in keys)
    if missing == len(keys):
        raise UserError(f"{args.suite}: no finished cells in {store.path}; run `nonxfer-bench run {args.suite}` first")
    paths = write_leaderboard(suite.name, [store.cells[k] for k in keys if k in store], [m.name for m in suite.models], suite.results_dir())
    print(f"{paths[0]} ({len(keys) - missing} cells, {missing} missing)")
    return 0


def command_encode(args: argparse.Namespace) -> int:
    import os

    import yaml

    from nonxfer_bench.release import encode_folder

    _set_threads(args.threads)
    params = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r}: expected NAME=VALUE (VALUE read as YAML), e.g. --param k=24")
        params[name] = yaml.safe_load(value)
    seed_key = args.seed_key or os.environ.get("NXB_SEED_KEY", "")
    manifest = encode_folder(
        Path(args.zoo), args.model, args.encoder, args.strength, args.format, seed_key, Path(args.input), Path(args.output),
        params=params, batch_size=args.batch_size,
    )
    notes = "; ".join(f"{note}: {count} image(s)" for note, count in manifest["notes"].items())
    print(
        f"wrote {len(manifest['images'])} {manifest['format']} NE(s) for {args.model} to {args.output} "
        f"(PSNR after storage: mean {manifest['psnr_mean']} dB, min {manifest['psnr_min']} dB; key id {manifest['key_id']})"
        + (f"; {notes}" if notes else "")
    )
    return 0


def command_verify(args: argparse.Namespace) -> int:
    from nonxfer_bench.release import format_table, verify_release

    _set_threads(args.threads)
    result = verify_release(
        Path(args.release), Path(args.zoo), args.models, Path(args.originals) if args.originals else None,
        labels_from_folders=args.labels, batch_size=args.batch_size,
    )
    print(f"{args.release}: {result['format']} release for {result['authorized']['name']} "
          f"({result['encoder']['name']}@{result['encoder']['strength']:g}), percentages:")
    print(format_table(result["models"]))
    print(f"wrote {Path(args.release) / 'verify.json'}")
    return 0


def command_ui(args: argparse.Namespace) -> int:
    from nonxfer_bench.suite import load_suite
    from nonxfer_bench.tracking import tracking_uri

    suite = load_suite(Path(args.suite), require_weights=False)
    uri = tracking_uri(suite)
    print(f"MLflow UI on http://{args.host}:{args.port} for {uri}")
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nonxfer-bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite: encode, attack, evaluate, log, leaderboard")
    run.add_argument("suite", help="suite YAML file, e.g. suites/quickstart.yaml")
    run.add_argument("--fresh", action="store_true", help="recompute cells that are already finished")
    run.add_argument("--limit", type=int, help="evaluate a seeded random subset of N images")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.add_argument("--executor", choices=["local", "process", "ray"], default="local", help="where encoding groups run (default: this process)")
    run.add_argument("--workers", type=int, default=2, help="processes for --executor process")
    run.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto); default: a local Ray instance")
    run.set_defaults(handler=command_run)

    zoo = commands.add_parser("zoo", help="zoo utilities").add_subparsers(dest="zoo_command", required=True)
    train = zoo.add_parser("train", help="train the zoo's models that have file weights")
    train.add_argument("zoo", help="zoo YAML file, e.g. suites/zoo/fashion.yaml")
    train.add_argument("--fresh", action="store_true", help="retrain models whose weights exist")
    train.add_argument("--only", nargs="+", help="train only these model names")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.set_defaults(handler=command_zoo_train)

    training = commands.add_parser("train", help="train generative models used by attacks").add_subparsers(dest="train_command", required=True)
    diffusion = training.add_parser("diffusion", help="train a DDPM for diffusion purification")
    diffusion.add_argument("config", help="diffusion config YAML, e.g. suites/zoo/fashion-ddpm.yaml")
    diffusion.add_argument("--device", help="torch device (default: cuda if available)")
    diffusion.add_argument("--steps", type=int, help="override train_steps")
    diffusion.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    diffusion.add_argument("--threads", type=int, help="torch CPU threads")
    diffusion.set_defaults(handler=command_train_diffusion)

    listing = commands.add_parser("list", help="list registered components or suites")
    listing.add_argument("what", choices=["attacks", "encoders", "datasets", "suites", "models"])
    listing.add_argument("suite", nargs="?", help="suite file (for 'models')")
    listing.set_defaults(handler=command_list)

    board = commands.add_parser("leaderboard", help="rebuild a suite's leaderboard from its finished cells")
    board.add_argument("suite")
    board.set_defaults(handler=command_leaderboard)

    encode = commands.add_parser("encode", help="turn an image folder into NE files for one authorized model")
    encode.add_argument("input", help="folder of images (searched recursively; class sub-folders are mirrored)")
    encode.add_argument("output", help="folder for the NE files and manifest.json")
    encode.add_argument("--zoo", required=True, help="zoo file or suite file that defines the model")
    encode.add_argument("--model", required=True, help="the authorized model's name in that zoo")
    encode.add_argument("--encoder", required=True, help="encoder name (nonxfer-bench list encoders)")
    encode.add_argument("--strength", type=float, required=True, help="encoder strength (PSNR in dB; nominal for 'reference')")
    encode.add_argument("--param", action="append", metavar="NAME=VALUE", help="encoder parameter (repeatable)")
    encode.add_argument("--format", default="png8", help="float32, png16, png8, jpeg or jpeg<Q> (default png8)")
    encode.add_argument("--seed-key", help="secret key seeding the noise (default: env NXB_SEED_KEY); only its hash is written")
    encode.add_argument("--batch-size", type=int, default=64)
    encode.add_argument("--threads", type=int, help="torch CPU threads")
    encode.set_defaults(handler=command_encode)

    verify = commands.add_parser("verify", help="score zoo models on a released NE folder")
    verify.add_argument("release", help="folder written by `nonxfer-bench encode`")
    verify.add_argument("--zoo", required=True, help="zoo file or suite file with the models")
    verify.add_argument("--models", nargs="+", help="model names (default: every zoo model)")
    verify.add_argument("--originals", help="the input folder given to encode: reports agreement with predictions on it")
    verify.add_argument("--labels", action="store_true", help="labels from class folders (sorted names = class indices)")
    verify.add_argument("--batch-size", type=int, default=64)
    verify.add_argument("--threads", type=int, help="torch CPU threads")
    verify.set_defaults(handler=command_verify)

    ui = commands.add_parser("ui", help="start the MLflow UI on the store a suite logs to")
    ui.add_argument("suite")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=command_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_flush_denormal(True)  # denormal weights or activations can slow CPU work down 20-50x
    try:
        return args.handler(args)
    except UserError as error:
        print(f"nonxfer-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
