"""What the protocol costs per release on this machine: one release faces every tier of an ensemble of
suites/protocols/ne-v1.yaml, timed per attack step and per tier, against the same release's plain evaluation (no
attack) measured in the same run. ne-v2 has the same ensembles and budgets: a release that holds costs the same
under it, and a settled one less (docs/concepts/protocol.md).

    python benchmarks/protocol.py --ensemble fast --images 200 --out results/bench/protocol-fast
    python benchmarks/protocol.py --ensemble full --images 1000 --out results/bench/protocol-full

The release (``--authorized``, ``--encoder``, ``--strength``; default vit_a, patch 10 dB, the strongest NE release
of FINDINGS) is run twice on the Fashion-MNIST zoo of suites/quickstart.yaml:
1. baseline: the release and the clean images with no attack (encode and evaluate every zoo model);
2. protocol: the same with the ensemble, tier by tier as ``run`` does, under a copy of the protocol whose break
   threshold no release reaches (``break_fraction: 1.0``), so every tier runs: a release that no tier breaks pays
   this; one broken at a lower tier pays less.
The report gives the protocol run's wall time as a multiple of the baseline's, and each attack step's own seconds
(fit, attack and adapt, as the cells record them) summed per tier. Caches are used as found (the trained
autoencoder and the committed DDPM are shared by every release); ``--cold`` points the cache at an empty folder so
that every fit is paid. Both runs use ``--threads`` torch threads and no bound diagnostics. Writes protocol.json and
protocol.md into ``--out`` (created; an existing report there is replaced, nothing else is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import yaml

from nonxfer_bench.app.run import RunOptions, run_suite
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.schema.protocol import VERDICT_TIERS, WHITE_BOX

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "suites" / "quickstart.yaml"
PROTOCOL = ROOT / "suites" / "protocols" / "ne-v1.yaml"
PUBLIC = {"fast": 2_000, "full": 15_000}  # the public images each ensemble's budgets need
TIERS = (*VERDICT_TIERS, WHITE_BOX)


def write_suites(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """(baseline suite, protocol suite) under ``work``: quickstart's data and zoo, one release."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["zoo"] = str(QUICKSTART.parent / data["zoo"])
    data["dataset"] = {**data["dataset"], "limit": args.images}
    data["public"] = {**data["public"], "limit": PUBLIC[args.ensemble]}
    data |= {
        "authorized": [args.authorized],
        "encoders": [{"name": args.encoder, "strengths": [args.strength]}],
        "threads": args.threads,
        "bounds": False,
    }
    data |= {
        "tracking": {"enabled": False},
        "output": {"dir": str(work / "runs"), "results": str(work / "results"), "sample_images": 0},
    }
    protocol = yaml.safe_load(PROTOCOL.read_text())
    protocol["verdict"] = {**protocol.get("verdict", {}), "break_fraction": 1.0}  # nothing breaks: every tier runs
    (work / "ne-v1-unbroken.yaml").write_text(yaml.safe_dump(protocol))
    baseline = {**data, "name": "baseline", "attacks": [{"name": "identity"}]}
    baseline.pop("protocol")
    tiered = {
        **data,
        "name": "protocol",
        "attacks": [],
        "protocol": {"file": str(work / "ne-v1-unbroken.yaml"), "ensemble": args.ensemble},
    }
    paths = work / "baseline.yaml", work / "tiered.yaml"
    for path, suite in zip(paths, (baseline, tiered)):
        path.write_text(yaml.safe_dump(suite))
    return paths


def timed_run(suite: Path) -> tuple[float, list]:
    """Wall seconds of ``run`` on ``suite`` (fresh, no tracking) and its cells; its own output kept quiet."""
    start = time.perf_counter()
    with redirect_stdout(StringIO()):
        code = run_suite(suite, {}, RunOptions(fresh=True, tracking=False))
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"protocol benchmark: {suite.name} failed (exit {code})")
    name = yaml.safe_load(suite.read_text())["name"]
    return seconds, list(CellStore(suite.parent / "runs" / name / "cells.jsonl", writable=False).cells.values())


def step_seconds(cells: list) -> list[dict]:
    """One row per attack step of the release (clean images left out): its tier and attack seconds."""
    rows: dict[tuple, dict] = {}
    for cell in cells:
        if cell.encoder == "clean" or cell.baseline:
            continue
        label = f"{cell.attack} {cell.attack_strength:g} " + " ".join(
            f"{k}={v}" for k, v in sorted((cell.attack_param or {}).items())
        )
        rows.setdefault(
            (cell.tier, label), {"tier": cell.tier, "step": label.strip(), "seconds": cell.attack_seconds or 0.0}
        )
    return sorted(rows.values(), key=lambda row: (TIERS.index(row["tier"]), -row["seconds"]))


def markdown(report: dict) -> str:
    per_tier = "\n".join(f"| {tier} | {seconds:.1f} |" for tier, seconds in report["tier_seconds"].items())
    steps = "\n".join(f"| {row['tier']} | {row['step']} | {row['seconds']:.1f} |" for row in report["steps"])
    return f"""# Protocol cost per release ({report["machine"]})

`{report["command"]}`

Release: {report["release"]}, {report["images"]:,} evaluated images, {report["public"]:,} public images,
protocol {report["protocol"]} ensemble `{report["ensemble"]}` with every tier run (break threshold 1.0),
{report["threads"]} torch thread(s), caches {report["caches"]}. Load average at the start: {report["load_start"]:.2f}.

| run | wall s |
|---|---|
| baseline: encode and evaluate, no attack | {report["baseline_s"]:.1f} |
| protocol: every tier of the ensemble | {report["protocol_s"]:.1f} |
| **ratio** | **{report["ratio"]:.1f}x** |

## Attack seconds per tier (fit, attack and adapt; model evaluation not included)

| tier | s |
|---|---|
{per_tier}

## Per attack step

| tier | step | s |
|---|---|---|
{steps}
"""


def check_out(out: Path) -> str | None:
    """Why ``out`` may not take the report (None when it may): a report there is replaced only when it is this
    benchmark's own (its protocol.json names this script's command); a protocol.md alone, someone else's, is kept."""
    if out.exists() and not out.is_dir():
        return f"--out {out}: not a folder"
    report = out / "protocol.json"
    if report.exists() or (out / "protocol.md").exists():
        try:
            ours = str(json.loads(report.read_text())["command"]).startswith("python benchmarks/protocol.py")
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            return (
                f"--out {out}: holds protocol.json or protocol.md that this benchmark did not write; give another "
                "folder"
            )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensemble", choices=sorted(PUBLIC), default="fast")
    parser.add_argument("--images", type=int, default=200, help="evaluated Fashion-MNIST test images (1 to 10,000)")
    parser.add_argument("--authorized", default="vit_a")
    parser.add_argument("--encoder", default="patch")
    parser.add_argument("--strength", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="an empty cache folder: every fit is paid")
    parser.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} cores")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not 1 <= args.images <= 10_000 or not 1 <= args.threads <= 256:
        parser.error("--images must be in 1..10,000 and --threads in 1..256")
    if (refusal := check_out(args.out)) is not None:  # before the runs: an hour of work never ends in a refusal
        parser.exit(2, f"protocol benchmark: {refusal}\n")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nxb-protocol-") as folder:
        work = Path(folder)
        if args.cold:
            os.environ["NXB_CACHE"] = str(work / "cache")
        baseline, tiered = write_suites(work, args)
        baseline_s, _ = timed_run(baseline)
        print(f"baseline: {baseline_s:.1f} s", flush=True)
        protocol_s, cells = timed_run(tiered)
        print(
            f"protocol ({args.ensemble}): {protocol_s:.1f} s, {protocol_s / baseline_s:.1f}x the baseline", flush=True
        )
    steps = step_seconds(cells)
    report = {
        "command": "python benchmarks/protocol.py " + " ".join(sys.argv[1:]),
        "machine": args.machine,
        "release": f"{args.authorized}, {args.encoder} {args.strength:g}",
        "images": args.images,
        "public": PUBLIC[args.ensemble],
        "protocol": "ne-v1",
        "ensemble": args.ensemble,
        "threads": args.threads,
        "caches": "empty (--cold)" if args.cold else "as found",
        "load_start": load_start,
        "baseline_s": baseline_s,
        "protocol_s": protocol_s,
        "ratio": protocol_s / baseline_s,
        "tier_seconds": {
            tier: sum(row["seconds"] for row in steps if row["tier"] == tier)
            for tier in TIERS
            if any(row["tier"] == tier for row in steps)
        },
        "steps": steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "protocol.json", json.dumps(report, indent=2) + "\n")
    atomic_write(args.out / "protocol.md", markdown(report))
    print(f"wrote {args.out / 'protocol.md'}")


if __name__ == "__main__":
    main()
