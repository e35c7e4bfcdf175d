"""Speed and memory of the harness, each as a ratio against a baseline measured side by side in the same run.

    python benchmarks/scale.py --out results/bench            # all figures, small sizes (a shared CPU box)
    python benchmarks/scale.py --images 2000 --batch 64 --only encoder throughput

(a) ``encoder``: the reference encoder against the straightforward published recipe (unfold, add, fold)
    on the same normalized batch, per stem geometry (goal: >= 10x for tiling stems, never slower for
    the others, which take the strided path); (b) the full ``encode`` against one forward of the authorized model (goal:
    <= 5 %).
(c) ``throughput``: a suite's evaluation (clean encoding, identity attack, the Fashion-MNIST zoo)
    against a bare timm eval loop over the same images and batch size, both from dataset to
    predictions (goal: >= 0.9); the suite runs without its bound diagnostics (``bounds: false``, as
    ``run --no-bounds``), which the bare loop does not compute either.
(d) ``memory``: peak RSS of a suite run in a fresh process at N and 10 N images of 224 px (goal: <= 1.2x),
    with the release kept in memory (the default up to 2 GB) and streamed batch by batch.
(e) ``ray``: the same suite with two encodings more, Ray with 2 one-CPU workers against the local executor.
Timings are medians of ``--repeats`` runs; write ``--out`` to keep a JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
FASHION_ZOO = ROOT / "suites" / "zoo" / "fashion.yaml"
STEMS = {  # timm architecture -> what its stem is
    "vit_base_patch16_224": "16x16/16 patchify, 768x768 (tiling)",
    "convnext_tiny": "4x4/4 patchify, 96x48 (tiling)",
    "resnet50": "7x7/2 overlapping, 64x147 (strided)",
}


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def bench_encoder(args: argparse.Namespace) -> dict:
    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.encoders.reference import encode_strided, encode_tiled, encode_unfolded, tiles_exactly
    from nonxfer_bench.linalg.subspace import flatten_weight, patch_subspace
    from nonxfer_bench.schema.suite import ModelSpec
    from nonxfer_bench.zoo import build_model

    rows = {}
    for arch, stem in STEMS.items():
        model = build_model(ModelSpec(name=arch, arch=arch))
        images = torch.rand(args.batch, *model.input_size, generator=torch.Generator().manual_seed(0))
        normalized = model.normalize(images)
        geometry = model.geometry
        basis = patch_subspace(flatten_weight(model.first_conv)).basis
        encoder = ENCODERS.create("reference")
        fast = encode_tiled if tiles_exactly(geometry, normalized.shape[-2:]) else lambda *a: encode_strided(*a)[0]
        recipe = median_seconds(
            lambda: encode_unfolded(normalized, geometry, basis, 0.0, torch.Generator().manual_seed(1)), args.repeats
        )
        ours = median_seconds(
            lambda: fast(normalized, geometry, basis, 0.0, torch.Generator().manual_seed(1)), args.repeats
        )
        full = median_seconds(
            lambda: encoder.encode(images, model, 0.0, torch.Generator().manual_seed(1)), args.repeats
        )
        with torch.no_grad():
            forward = median_seconds(lambda: model(images), args.repeats)
        rows[arch] = {
            "stem": stem,
            "recipe_s": recipe,
            "encoder_s": ours,
            "speedup_vs_recipe": recipe / ours,
            "encode_s": full,
            "forward_s": forward,
            "encode_over_forward": full / forward,
        }
        print(
            f"(a/b) {arch:22s} recipe/encoder {recipe / ours:6.2f}x   encode/forward {full / forward:7.2%}", flush=True
        )
    return rows


def write_suite(
    folder: Path, name: str, dataset: dict, zoo, authorized: str, encoders: list[dict], batch: int, bounds: bool = True
) -> Path:
    """A suite with the identity attack only, no tracking and no sample images, written under ``folder``; ``bounds``:
    its bound diagnostics."""
    suite = {
        "name": name,
        "dataset": dataset,
        "zoo": zoo,
        "authorized": [authorized],
        "encoders": encoders,
        "attacks": [{"name": "identity"}],
        "batch_size": batch,
        "bounds": bounds,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def fashion_suite(folder: Path, images: int, batch: int, encoders: list[dict], bounds: bool = True) -> Path:
    dataset = {"name": "fashion_mnist", "params": {"split": "test"}, "limit": images}
    return write_suite(folder, "bench", dataset, str(FASHION_ZOO), "vit_a", encoders, batch, bounds)


def bench_throughput(args: argparse.Namespace) -> dict:
    from nonxfer_bench.datasets.base import load_dataset
    from nonxfer_bench.execution.runner import Runner
    from nonxfer_bench.loading import load_suite
    from nonxfer_bench.zoo import build_model

    def suite_run() -> float:
        with tempfile.TemporaryDirectory() as folder:
            suite = load_suite(
                fashion_suite(
                    Path(folder), args.images, args.batch, [{"name": "clean", "strengths": [0.0]}], bounds=False
                )
            )
            start = time.perf_counter()
            Runner(suite).run()
            return time.perf_counter() - start

    def bare_loop() -> float:
        """What a user writes without the harness: decode, build each model, predict batch by batch."""
        suite = load_suite(
            fashion_suite(Path(tempfile.mkdtemp()), args.images, args.batch, [{"name": "clean", "strengths": [0.0]}])
        )
        start = time.perf_counter()
        data = load_dataset(suite.dataset.name, suite.dataset.params).subset(args.images, 0)
        images = data.as_float()
        with torch.no_grad():
            for spec in suite.models:
                model = build_model(spec)
                torch.cat([model(images[i : i + args.batch]).argmax(1) for i in range(0, len(images), args.batch)])
        return time.perf_counter() - start

    bare, harness = [], []
    for _ in range(args.repeats):  # interleaved, so that load on the shared machine hits both alike
        bare.append(bare_loop())
        harness.append(suite_run())
    bare_s, suite_s = sorted(bare)[len(bare) // 2], sorted(harness)[len(harness) // 2]
    evaluations = args.images * 6
    row = {
        "images": args.images,
        "models": 6,
        "batch": args.batch,
        "bare_s": bare_s,
        "suite_s": suite_s,
        "throughput_ratio": bare_s / suite_s,
        "suite_images_per_s": evaluations / suite_s,
    }
    print(
        f"(c) suite/bare throughput {bare_s / suite_s:.2f} ({evaluations} model-image evaluations: bare {bare_s:.2f} "
        f"s, suite {suite_s:.2f} s)",
        flush=True,
    )
    return row


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from nonxfer_bench.execution.runner import Runner
from nonxfer_bench.loading import load_suite
Runner(load_suite(Path(sys.argv[1]))).run()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def large_image_suite(folder: Path, images: int, batch: int) -> Path:
    """Digits upsampled to 224 px for one random-weight ImageNet-size model: a release of 0.6 MB per image."""
    dataset = {"name": "digits", "params": {"split": "all", "size": 224}, "limit": images}
    zoo = [
        {
            "name": "mnet",
            "arch": "mobilenetv3_small_050",
            "kwargs": {"num_classes": 10},
            "preprocess": {"input_size": [3, 224, 224]},
        }
    ]
    return write_suite(
        folder, "bench-memory", dataset, zoo, "mnet", [{"name": "reference", "strengths": [20.0]}], batch
    )


def bench_memory(args: argparse.Namespace) -> dict:
    """Peak RSS of a fresh process per size, dataset cache warmed first (decoding is measured by no one here)."""
    import os

    from nonxfer_bench.datasets.base import load_cached

    sizes = (args.memory_images, 10 * args.memory_images)
    for images in sizes:
        load_cached("digits", {"split": "all", "size": 224}, images, 0)
    rows = {}
    for mode, limit in (("kept in memory (default, <= 2 GB)", "2"), ("streamed by batch", "0")):
        peaks = []
        for images in sizes:
            with tempfile.TemporaryDirectory() as folder:
                path = large_image_suite(Path(folder), images, args.batch)
                env = os.environ | {"NXB_RELEASE_MAX_GB": limit}
                out = subprocess.run(
                    [sys.executable, "-c", MEMORY_PROBE, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                    env=env,
                )
                peaks.append(int(out.stdout.split()[-1]) / 1024)  # ru_maxrss is KiB on Linux
        rows[mode] = {"peak_rss_mib": peaks, "ratio": peaks[1] / peaks[0]}
        print(
            f"(d) {mode}: peak RSS {peaks[0]:.0f} MiB at {sizes[0]} images, {peaks[1]:.0f} MiB at {sizes[1]}: "
            f"{peaks[1] / peaks[0]:.2f}x",
            flush=True,
        )
    return {"images": list(sizes), "modes": rows}


def bench_ray(args: argparse.Namespace) -> dict:
    import ray

    from nonxfer_bench.execution.executors import RayExecutor
    from nonxfer_bench.execution.runner import InProcess, Runner
    from nonxfer_bench.loading import load_suite

    encoders = [{"name": "reference", "strengths": [0.0, 20.0]}, {"name": "gaussian", "strengths": [20.0]}]

    def timed_run(executor) -> tuple[float, list]:
        with tempfile.TemporaryDirectory() as folder:
            suite = load_suite(fashion_suite(Path(folder), args.images, args.batch, encoders))
            start = time.perf_counter()
            cells = Runner(suite, executor=executor).run().cells
            return time.perf_counter() - start, sorted(cells, key=lambda c: c.key)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        local_s, local_cells = timed_run(InProcess())
        ray_s, ray_cells = timed_run(RayExecutor())
    finally:
        ray.shutdown()
    print(
        f"(e) Ray (2 workers) {ray_s:.1f} s vs local {local_s:.1f} s: speedup {local_s / ray_s:.2f}x; identical "
        f"cells: {local_cells == ray_cells}",
        flush=True,
    )
    return {
        "groups": 4,
        "local_s": local_s,
        "ray_s": ray_s,
        "speedup": local_s / ray_s,
        "identical_cells": local_cells == ray_cells,
    }


BENCHES = {"encoder": bench_encoder, "throughput": bench_throughput, "memory": bench_memory, "ray": bench_ray}


def markdown(report: dict) -> str:
    lines = [f"# Harness benchmarks ({report['machine']})", "", report["note"], "", f"`{report['command']}`", ""]
    if "encoder" in report:
        lines += [
            "## (a) encoder vs the literal recipe, (b) encode vs one forward",
            "",
            "| model | stem | recipe (ms) | encoder (ms) | speed-up | encode (ms) | forward (ms) | encode / forward |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arch, r in report["encoder"].items():
            lines.append(
                f"| {arch} | {r['stem']} | {1e3 * r['recipe_s']:.2f} | {1e3 * r['encoder_s']:.2f} | "
                f"{r['speedup_vs_recipe']:.2f}x | {1e3 * r['encode_s']:.2f} | {1e3 * r['forward_s']:.1f} | "
                f"{r['encode_over_forward']:.2%} |"
            )
        lines.append("")
    if "throughput" in report:
        r = report["throughput"]
        lines += [
            "## (c) suite evaluation throughput vs a bare timm loop",
            "",
            f"{r['images']} images x {r['models']} models, batch {r['batch']}: bare {r['bare_s']:.2f} s, suite "
            f"{r['suite_s']:.2f} s, ratio **{r['throughput_ratio']:.2f}**",
            "",
        ]
    if "memory" in report:
        r = report["memory"]
        lines += [
            "## (d) peak RSS when the dataset grows 10x",
            "",
            "Digits at 224 px, one random-weight mobilenetv3_small_050, reference encoder, identity attack; fresh "
            "process per run, dataset cache warm.",
            "",
            f"| release | {r['images'][0]} images (MiB) | {r['images'][1]} images (MiB) | ratio |",
            "|---|---|---|---|",
        ]
        for mode, row in r["modes"].items():
            lines.append(
                f"| {mode} | {row['peak_rss_mib'][0]:.0f} | {row['peak_rss_mib'][1]:.0f} | {row['ratio']:.2f}x |"
            )
        lines.append("")
    if "ray" in report:
        r = report["ray"]
        lines += [
            "## (e) Ray, 2 workers, vs the local executor",
            "",
            f"{r['groups']} encoding groups: local {r['local_s']:.1f} s, Ray {r['ray_s']:.1f} s, speed-up "
            f"**{r['speedup']:.2f}x**; identical cells: {r['identical_cells']}",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="dataset size for (c)-(e); (d) also runs 10x this")
    parser.add_argument(
        "--memory-images", type=int, default=100, help="(d): N and 10 N digits images at 224 px (at most 179)"
    )
    parser.add_argument(
        "--batch", type=int, default=16, help="batch size (the encoder figures use one batch at 224 px)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these figures")
    parser.add_argument("--machine", default=f"{platform.node()}, {platform.processor() or platform.machine()}, CPU")
    parser.add_argument("--note", default="", help="conditions to record, e.g. other load on the machine")
    parser.add_argument("--out", type=Path, help="folder for bench.json and bench.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    report = {
        "machine": args.machine,
        "note": args.note,
        "command": shlex.join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "threads": args.threads,
    }
    for name in args.only or BENCHES:
        report[name] = BENCHES[name](args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps(report, indent=2))
        (args.out / "bench.md").write_text(markdown(report))
        print(f"wrote {args.out / 'bench.md'}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
