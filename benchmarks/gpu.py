"""GPU figures of the ImageNet suite, each a ratio measured side by side, on a machine with no hub and no data.

    python benchmarks/gpu.py --out results/gpu                              # a GPU: 5,000 images, bf16
    python benchmarks/gpu.py --device cpu --images 32 --out /tmp/gpu-dry    # the dry check (CI, minutes)

1. data: a synthetic ImageNet-like flat folder (JPEGs at typical ImageNet sizes, ILSVRC2012_val_* names,
   LOC_val_solution.csv), read by the ``imagenet_val`` dataset; its decode rate into the uint8 cache and
   the prefetching loader's cache-to-device rate, against the zoo's evaluation rate;
2. throughput: suites/imagenet.yaml's zoo (random weights) through the suite (clean encoding, identity)
   against a bare timm eval loop over the same models, images, batch and precision (goal >= 0.9);
3. encoders: each of imagenet.yaml's encoders on one batch, as a share of one authorized forward (goal <= 5 %);
4. projection: imagenet.yaml's whole grid on ``--project-images`` images, scaled to the 50,000 of ImageNet-val
   (``--quick``, the CPU default: one encoding and two attacks, scaled to the grid's encodings);
5. precision: fp32 against bf16 top-1 agreement per model;
6. trained weights in fp32 and in ``--precision``: per-image agreement of correctness and time, for the Fashion-MNIST
   zoo (suites/quickstart.yaml's encoders and its protocol ensemble's attacks that need no training, on
   ``--trained-images`` test
   images; Fashion-MNIST from ``--fashion-root``) and for imagenet-mini (the ``imagenet`` extra), where installed
   (``--quick``: one encoding, two attacks, two images);
7. on CUDA, the tests marked ``cuda`` (after the encoders: before the long sections).
Writes gpu.json and gpu.md under ``--out`` after every section, so a run stopped at a time limit keeps the
sections it finished. On a lent GPU machine, run it through benchmarks/gpu.sh (see benchmarks/gpu_bundle.py).
On the CPU the zoo defaults to mobilenetv2 (authorized) and efficientnet_b0 (``--models`` chooses), so that the dry
check takes minutes.
Every suite here runs without its bound diagnostics (``bounds: false``, as ``run --no-bounds``): they are a
fixed cost per encoding (local Lipschitz estimates through every model on the first batch) that a bare loop
does not pay and that does not grow with the images (with them, a 224-px CPU run measured suite/bare 0.05), so
they would distort the throughput ratio, the per-image projection and the fp32/bf16 timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from scale import write_suite  # noqa: E402

IMAGENET = ROOT / "suites" / "imagenet.yaml"
MINI = ROOT / "suites" / "imagenet-mini.yaml"
QUICKSTART = ROOT / "suites" / "quickstart.yaml"
PLAIN_ATTACKS = (
    "identity",
    "jpeg_pil",
    "jpeg_kornia",
    "resize",
    "blur",
    "quantize",
    "cutout",
)  # no training, no extra package
SIZES = [
    (500, 375),
    (500, 333),
    (375, 500),
    (500, 500),
    (333, 500),
    (640, 480),
    (500, 400),
    (800, 600),
]  # common ImageNet-val sizes
CPU_MODELS = [
    "mobilenetv2",
    "efficientnet_b0",
]  # the dry check: the cheapest two (efficientnet_b0, first in the zoo, authorized)
FULL_VAL = 50_000


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call, synchronized with the device."""
    for _ in range(warmup):
        function()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def write_jpeg(job: tuple[Path, int, int, int]) -> int:
    """One photo-like JPEG: smooth random color fields plus fine noise, as a camera image compresses."""
    from PIL import Image

    path, width, height, seed = job
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path.stat().st_size


def build_folder(folder: Path, count: int) -> dict:
    """The flat folder and LOC_val_solution.csv (random classes); returns the imagenet_val dataset params."""
    from nonxfer_bench.datasets.imagenet_val import timm_classes

    root = folder / "val"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    jobs = [(root / f"ILSVRC2012_val_{i:08d}.JPEG", *SIZES[rng.integers(len(SIZES))], i) for i in range(1, count + 1)]
    with ProcessPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as pool:
        sizes = list(pool.map(write_jpeg, jobs, chunksize=32))
    classes = timm_classes()
    rows = [f"{path.stem},{classes[rng.integers(1000)]} 0 0 10 10" for path, *_ in jobs]
    solution = folder / "LOC_val_solution.csv"
    solution.write_text("\n".join(["ImageId,PredictionString", *rows]) + "\n")
    print(f"data: {count} JPEGs, {sum(sizes) / count / 1e3:.0f} kB each on average, in {root}", flush=True)
    return {"root": str(root), "solution": str(solution)}


def zoo_entries(models: list[str] | None) -> tuple[list[dict], str]:
    """imagenet.yaml's zoo with random weights (throughput does not depend on them), and the authorized model."""
    suite = yaml.safe_load(IMAGENET.read_text())
    zoo = [{"name": e["name"], "arch": e["arch"]} for e in suite["zoo"] if not models or e["name"] in models]
    authorized = suite["authorized"][0] if any(e["name"] == suite["authorized"][0] for e in zoo) else zoo[0]["name"]
    return zoo, authorized


def load(path: Path, device: str, precision: str):
    from nonxfer_bench.loading import load_suite

    return load_suite(path).model_copy(
        update={"device": device, "precision": precision}
    )  # the suite's defaults for this benchmark


def bench_data(suite, device: torch.device, batch: int) -> dict:
    """Decode rate into the cache (what the first run pays) and the prefetching reader's cache-to-device rate."""
    from nonxfer_bench.datasets.base import load_cached
    from nonxfer_bench.execution.loader import PrefetchingReader

    spec = suite.dataset
    start = time.perf_counter()
    data = load_cached(spec.name, spec.params, spec.limit, suite.seeds[0])
    decode_s = time.perf_counter() - start
    reader = PrefetchingReader(data.images, device)
    read_s = timed(lambda: sum(len(b) for b in reader.batches(batch)), device, repeats=3, warmup=1)
    reader.close()
    row = {"images": len(data), "decode_images_per_s": len(data) / decode_s, "loader_images_per_s": len(data) / read_s}
    print(
        f"data: decode {row['decode_images_per_s']:,.0f} img/s (one process), cache to {device} "
        f"{row['loader_images_per_s']:,.0f} img/s",
        flush=True,
    )
    return row


def bare_loop(suite, device: torch.device, precision: str, batch: int) -> dict:
    """What a user writes without the harness: each timm model on the device, the cached images batch by batch."""
    import timm
    import torch.nn.functional as F
    from timm.data import resolve_model_data_config

    from nonxfer_bench.core.device import autocast
    from nonxfer_bench.datasets.base import load_cached

    spec = suite.dataset
    images = load_cached(spec.name, spec.params, spec.limit, suite.seeds[0]).images
    rows, predictions = {}, {}
    for entry in suite.models:
        start = time.perf_counter()
        torch.manual_seed(entry.seed)  # the same random weights in every pass (and as the suite builds them)
        net = timm.create_model(entry.arch, pretrained=False).eval().to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        config = resolve_model_data_config(net)
        size = tuple(config["input_size"][1:])
        mode = config["interpolation"] if config["interpolation"] in ("bilinear", "bicubic") else "bilinear"
        mean = torch.tensor(config["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(config["std"], device=device).view(1, -1, 1, 1)
        built = time.perf_counter()
        out = []
        with torch.inference_mode(), autocast(device, precision):
            for i in range(0, len(images), batch):
                x = images[i : i + batch].to(device, non_blocking=True).float() / 255.0
                if tuple(x.shape[-2:]) != size:
                    x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
                x = (x - mean) / std
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(net(x).argmax(1))
        predictions[entry.name] = torch.cat(out).cpu()
        synchronize(device)
        done = time.perf_counter()
        rows[entry.name] = {
            "input_size": list(config["input_size"]),
            "build_s": built - start,
            "eval_s": done - built,
            "images_per_s": len(images) / (done - built),
        }
        print(f"bare: {entry.name:16s} {rows[entry.name]['images_per_s']:9,.1f} img/s ({precision})", flush=True)
    return {
        "models": rows,
        "seconds": sum(r["build_s"] + r["eval_s"] for r in rows.values()),
        "predictions": predictions,
    }


def suite_run(path: Path, device: str, precision: str, fresh: bool = True) -> tuple[float, list]:
    from nonxfer_bench.execution.runner import Runner

    suite = load(path, device, precision)
    start = time.perf_counter()
    cells = Runner(suite, fresh=fresh).run().cells
    synchronize(torch.device(device))
    return time.perf_counter() - start, cells


def bench_encoders(suite, device: torch.device, precision: str, batch: int, repeats: int) -> dict:
    """Each imagenet.yaml encoder on one batch at the authorized model's input, as a share of its forward."""
    from nonxfer_bench.datasets.base import load_cached
    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.zoo import build_model

    model = build_model(suite.model(suite.authorized[0])).to_device(device, precision)
    spec = suite.dataset
    cached = load_cached(spec.name, spec.params, spec.limit, suite.seeds[0]).images[:batch]
    images = model.prepare(cached.to(device).float() / 255.0)
    with torch.inference_mode():
        forward = timed(lambda: model(images), device, repeats)
    rows = {}
    for entry in yaml.safe_load(IMAGENET.read_text())["encoders"]:
        encoder = ENCODERS.create(entry["name"], entry.get("params", {}))
        generator = torch.Generator().manual_seed(0)  # a keyed CPU generator, as the suite hands its encoders
        strength = float(entry["strengths"][0])
        with torch.inference_mode():
            seconds = timed(lambda: encoder.encode(images, model, strength, generator), device, repeats)
        rows[entry["name"]] = {"seconds_per_batch": seconds, "share_of_forward": seconds / forward}
    plain = timed(lambda: images + torch.randn_like(images), device, repeats)
    rows["plain_noise_add"] = {"seconds_per_batch": plain, "share_of_forward": plain / forward}
    for name, row in rows.items():
        print(f"encoder: {name:16s} {row['share_of_forward']:7.1%} of one {model.name} forward", flush=True)
    return {"authorized": model.name, "batch": len(images), "forward_s": forward, "encoders": rows}


def agreement(bare_fp32: dict, bare_other: dict) -> dict:
    return {name: float((bare_fp32[name] == bare_other[name]).float().mean()) for name in bare_fp32}


def reduce_grid(data: dict) -> dict:
    """The dry check's grid: the first encoder at its first strength, the baseline and the first other attack."""
    encoder = data["encoders"][0]
    return data | {"encoders": [{**encoder, "strengths": encoder["strengths"][:1]}], "attacks": data["attacks"][:2]}


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def bench_projection(
    folder: Path,
    dataset: dict,
    zoo: list[dict],
    authorized: str,
    batch: int,
    images: int,
    device: str,
    precision: str,
    quick: bool,
) -> dict:
    """imagenet.yaml's grid on ``images`` images (the dry check: a reduced grid), scaled to its encodings and 50,000
    images."""
    from nonxfer_bench.execution.plan import plan_suite

    grid = {
        k: v
        for k, v in yaml.safe_load(IMAGENET.read_text()).items()
        if k not in ("dataset", "zoo", "authorized", "batch_size")
    }
    grid |= {
        "name": "gpu-grid",
        "dataset": {**dataset, "limit": images},
        "zoo": zoo,
        "authorized": [authorized],
        "batch_size": batch,
        "output": {"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
        "bounds": False,
    }
    full_groups = len(plan_suite(load(write_yaml(folder / "full.yaml", grid), device, precision)))
    seconds, cells = suite_run(
        write_yaml(folder / "suite.yaml", reduce_grid(grid) if quick else grid), device, precision
    )
    groups = len({c.group for c in cells})
    steps = len({(c.attack, c.attack_strength) for c in cells})
    per_image = seconds / groups * full_groups / images
    row = {
        "images": images,
        "seconds": seconds,
        "groups": groups,
        "full_groups": full_groups,
        "steps": steps,
        "models": len(zoo),
        "seconds_per_image": per_image,
        "projected_hours": per_image * FULL_VAL / 3600,
    }
    print(
        f"projection: {groups} of {full_groups} encodings x {steps} steps x {len(zoo)} models on {images} images: "
        f"{seconds:.1f} s, 50k images about {row['projected_hours']:.2f} h",
        flush=True,
    )
    return row


def twin_key(cell) -> tuple:
    """What a cell is apart from its precision."""
    return (
        cell.authorized,
        cell.encoder,
        cell.strength,
        cell.seed,
        cell.storage,
        cell.attack,
        cell.attack_strength,
        cell.model,
    )


def compare_precisions(fp32_cells: list, other_cells: list) -> dict:
    """fp32 cells against their twins in another precision: the share of (cell, image) pairs whose correctness agrees,
    and the largest accuracy difference with the cell it is in."""
    twins = {twin_key(c): c for c in other_cells}
    pairs = [(c, twins[twin_key(c)]) for c in fp32_cells]
    same = sum(int((a.outcomes.correct_bits() == b.outcomes.correct_bits()).sum()) for a, b in pairs)
    measured = [(abs(a.accuracy - b.accuracy), a, b) for a, b in pairs if a.accuracy is not None]
    largest, a, b = max(measured, key=lambda item: item[0])
    return {
        "cells": len(pairs),
        "images": pairs[0][0].n,
        "image_agreement": same / sum(a.n for a, _ in pairs),
        "max_accuracy_difference": largest,
        "max_difference_cell": f"{a.authorized}: {a.encoder} {a.strength:g}, {a.attack} {a.attack_strength:g}, "
        f"{a.model} ({a.role}): fp32 {100 * a.accuracy:.1f} %, other {100 * b.accuracy:.1f} %",
    }


def bench_trained(
    source: Path,
    folder: Path,
    device: str,
    precision: str,
    quick: bool,
    images: int | None = None,
    attacks: tuple[str, ...] | None = None,
    dataset_root: str | None = None,
) -> dict:
    """A suite with trained weights (``source``) in fp32 and in ``precision``: wall time, per-image agreement of
    correctness and the largest accuracy difference. ``images``, ``attacks`` and ``dataset_root`` narrow it to what
    the machine has and the time allows (``quick``: one encoding, two attacks, two images)."""
    from nonxfer_bench.core.errors import UserError
    from nonxfer_bench.loading import load_suite

    data = yaml.safe_load(source.read_text())
    if (
        "protocol" in data
    ):  # its attacks are the protocol's ensemble, placeholders expanded; timed as a plain list, not tier by tier
        data["attacks"] = [spec.model_dump(mode="json") for spec in load_suite(source, require_weights=False).attacks]
        data.pop("protocol")
    if attacks is not None:
        data["attacks"] = [entry for entry in data["attacks"] if entry["name"] in attacks]
    if isinstance(data["zoo"], str):  # a zoo file beside the suite: the copy below lives elsewhere
        data["zoo"] = str((source.parent / data["zoo"]).resolve())
    if images is not None:
        data["dataset"] = {**data["dataset"], "limit": images}
    if dataset_root is not None:
        data["dataset"] = {**data["dataset"], "params": {**data["dataset"].get("params", {}), "root": dataset_root}}
    if quick:
        data = reduce_grid(data) | {"dataset": {**data["dataset"], "limit": 2}}
    data.pop("threads", None)
    data["output"] = {"dir": str(folder / "runs"), "results": str(folder / "results"), "sample_images": 0}
    data["tracking"] = {"enabled": False}
    data["bounds"] = False
    path = write_yaml(folder / source.name, data)
    try:
        runs = {
            p: suite_run(path, device, p) for p in dict.fromkeys(["fp32", precision if precision != "fp32" else "bf16"])
        }
    except UserError as error:  # its data or weights are not installed here
        print(f"{source.stem}: skipped ({error})", flush=True)
        return {"skipped": str(error)}
    (fp32_s, fp32_cells), (other_s, other_cells) = runs.values()
    row = {
        "suite": source.name,
        "fp32_s": fp32_s,
        "other_precision": list(runs)[1],
        "other_s": other_s,
    } | compare_precisions(fp32_cells, other_cells)
    print(
        f"{source.stem}: {row['cells']} cells of {row['images']} images, fp32 {fp32_s:.1f} s, "
        f"{row['other_precision']} {other_s:.1f} s, per-image correctness agrees on {row['image_agreement']:.1%}",
        flush=True,
    )
    return row


def attempt(name: str, function) -> dict:
    """One section's figures, or the error that stopped it: a GPU run reports every section that works."""
    try:
        return function()
    except Exception as error:  # noqa: BLE001 - recorded in the report, the other sections still run
        print(f"{name}: failed: {type(error).__name__}: {error}", flush=True)
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}


def cuda_test_files() -> list[str]:
    """The test files that hold tests marked ``cuda``: the others import packages (mlflow, playwright, ray) that a GPU
    machine need not have, so only these are collected."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.cuda" in p.read_text())


def run_cuda_tests() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", *cuda_test_files()],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"cuda tests: {summary}", flush=True)
    return {"returncode": done.returncode, "summary": summary}


def trained_line(row: dict) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    return (
        f"{row['suite']}: {row['cells']} cells of {row['images']} images: fp32 {row['fp32_s']:.1f} s, "
        f"{row['other_precision']} {row['other_s']:.1f} s; per-image correctness agrees on "
        f"{row['image_agreement']:.2%} of cell-images, largest accuracy difference "
        f"{100 * row['max_accuracy_difference']:.1f} points ({row['max_difference_cell']})"
    )


def markdown(report: dict) -> str:
    t, d, e, p = (report[k] for k in ("throughput", "data", "encoders", "projection"))
    failed = lambda section: [f"failed: {section['error']}", ""] if "error" in section else []  # noqa: E731
    lines = [
        f"# GPU figures: {report['device']}",
        "",
        f"`{report['command']}`",
        "",
        f"torch {report['torch']}, {report['precision']}, batch {report['batch']}, random weights, {d['images']} "
        "synthetic ImageNet-size JPEGs (imagenet_val layout).",
        "",
        "## Suite throughput vs a bare timm eval loop",
        "",
    ]
    lines += failed(t) or [
        f"Same models, images, batch and precision, model building included: bare {t['bare_s']:.1f} s, suite "
        f"{t['suite_s']:.1f} s, ratio **{t['ratio']:.2f}** (goal >= 0.9). Every suite here runs without its bound "
        "diagnostics (`run --no-bounds`): a fixed cost per encoding on its first batch, which dominates on a CPU at "
        "224 px. On CUDA the suite runs with deterministic kernels and fp32 as fp32 (`make_deterministic`), the bare "
        "loop with torch's defaults.",
        "",
    ]
    lines += ["| model | input | bare images/s | fp32 vs bf16 top-1 agreement |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {'x'.join(map(str, row['input_size']))} | {row['images_per_s']:,.1f} | "
        f"{report['agreement'][name]:.1%} |"
        for name, row in report["bare"].items()
    ]
    lines += [
        "",
        "Random weights give nearly tied logits, so their agreement understates that of trained weights (the "
        "trained-weights sections below compare real weights).",
        "",
        "## Data loading vs evaluation",
        "",
        f"Decode into the uint8 cache {d['decode_images_per_s']:,.0f} img/s (one process, first run only); "
        f"prefetching reader from the cache to the device {d['loader_images_per_s']:,.0f} img/s; the zoo evaluates "
        f"{d['zoo_images_per_s']:,.0f} img/s (one image through every model): reader / evaluation "
        f"**{d['loader_over_eval']:.1f}x**, decode / evaluation {d['decode_over_eval']:.2f}x.",
        "",
        "## Encoders as a share of one authorized forward (goal <= 5 %)",
        "",
    ]
    lines += failed(e) or [
        f"{e['authorized']}, batch {e['batch']}:",
        "",
        "| encoder | s / batch | share of forward |",
        "|---|---|---|",
        *[
            f"| {name} | {row['seconds_per_batch']:.5f} | {row['share_of_forward']:.1%} |"
            for name, row in e.get("encoders", {}).items()
        ],
        "",
    ]
    lines += ["## Projected full suite", ""]
    lines += failed(p) or [
        f"imagenet.yaml's grid ({p['groups']} of its {p['full_groups']} encodings x {p['steps']} attack steps x "
        f"{p['models']} models) on {p['images']} images took {p['seconds']:.1f} s without bound diagnostics: "
        f"{p['seconds_per_image']:.3f} s per image for all {p['full_groups']} encodings, so the 50,000 images of "
        f"ImageNet-val take about **{p['projected_hours']:.2f} h** plus {d['decode_hours']:.2f} h of decoding once "
        "(an upper bound: fixed costs scale too).",
        "",
    ]
    for key, title in (
        ("trained", "Fashion-MNIST zoo (trained weights)"),
        ("imagenet_mini", "imagenet-mini (real weights)"),
    ):
        lines += [f"## {title}: fp32 vs {report['precision'] if report['precision'] != 'fp32' else 'bf16'}", ""]
        lines += failed(report[key]) or [trained_line(report[key]), ""]
    if "cuda_tests" in report:
        lines += [
            "## Tests marked cuda",
            "",
            failed(report["cuda_tests"])[0] if "error" in report["cuda_tests"] else report["cuda_tests"]["summary"],
            "",
        ]
    lines += [f"Note: {report['note']}", ""] if "note" in report else []
    lines += [
        "Wall time per section: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["seconds"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


SECTIONS = ("throughput", "encoders", "projection", "trained", "imagenet_mini")
NOT_REACHED = {"error": "not reached: the run stopped before this section"}


def write_report(out: Path, report: dict) -> None:
    """gpu.json and gpu.md as they stand (after every section: a run stopped at a time limit keeps what it finished)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu.json", json.dumps(report, indent=2) + "\n"), ("gpu.md", markdown(report))):
        partial = out / f"{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gpu.json and gpu.md (results/gpu for the reference run)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--images", type=int, default=5000, help="synthetic ImageNet-val images")
    parser.add_argument(
        "--project-images", type=int, help="images for the whole-grid run (default: min(images, 500); 2 on the CPU)"
    )
    parser.add_argument(
        "--trained-images", type=int, default=1000, help="Fashion-MNIST test images for the trained-weights comparison"
    )
    parser.add_argument("--fashion-root", help="folder with Fashion-MNIST's IDX .gz files (default: the Debian path)")
    parser.add_argument("--batch", type=int, help="batch size (default 256 on CUDA, 16 on the CPU)")
    parser.add_argument(
        "--models",
        nargs="+",
        help="zoo names (default: all of imagenet.yaml on CUDA, mobilenetv2 efficientnet_b0 on the CPU)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--quick", action=argparse.BooleanOptionalAction, help="the dry check's reduced grids (default: on the CPU)"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the synthetic data, runs and cache (default: a temporary folder)"
    )
    parser.add_argument(
        "--cuda-tests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on CUDA, run the tests marked cuda (gpu.sh figures leaves them to gpu.sh tests: two calls of a "
        "time limit)",
    )
    args = parser.parse_args()
    from nonxfer_bench.core.device import device_name, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    batch = args.batch or (256 if cuda else 16)
    models = args.models or (None if cuda else CPU_MODELS)
    quick = args.quick if args.quick is not None else not cuda
    project = args.project_images or (2 if quick else min(args.images, 500))
    work = args.work or Path(tempfile.mkdtemp(prefix="nxb-gpu-"))
    os.environ["NXB_CACHE"] = str(work / "cache")  # a cold cache of its own: the decode rate is measured
    os.environ.setdefault(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
    )  # before the bare loop starts cuBLAS: the suite's deterministic runs need it
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "precision": args.precision,
        "batch": batch,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "command": shlex.join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "seconds": {},
    } | {name: NOT_REACHED for name in SECTIONS}
    started = time.perf_counter()
    dataset = {"name": "imagenet_val", "params": build_folder(work / "data", args.images)}
    zoo, authorized = zoo_entries(models)
    clean = [{"name": "clean", "strengths": [0.0]}]
    (work / "throughput").mkdir(parents=True, exist_ok=True)
    throughput_path = write_suite(
        work / "throughput", "gpu-throughput", dataset, zoo, authorized, clean, batch, bounds=False
    )
    suite = load(throughput_path, str(device), args.precision)
    report["data"] = bench_data(suite, device, batch)
    bare = bare_loop(suite, device, args.precision, batch)
    zoo_rate = 1.0 / sum(1.0 / row["images_per_s"] for row in bare["models"].values())
    report["data"] |= {
        "zoo_images_per_s": zoo_rate,
        "loader_over_eval": report["data"]["loader_images_per_s"] / zoo_rate,
        "decode_over_eval": report["data"]["decode_images_per_s"] / zoo_rate,
        "decode_hours": FULL_VAL / report["data"]["decode_images_per_s"] / 3600,
    }
    other = args.precision if args.precision != "fp32" else "bf16"
    fp32 = bare["predictions"] if args.precision == "fp32" else bare_loop(suite, device, "fp32", batch)["predictions"]
    low = bare["predictions"] if args.precision != "fp32" else bare_loop(suite, device, other, batch)["predictions"]
    report |= {"bare": bare["models"], "agreement": agreement(fp32, low)}
    report["seconds"]["data_and_bare"] = time.perf_counter() - started
    write_report(args.out, report)

    def throughput() -> dict:
        suite_s, _ = suite_run(throughput_path, str(device), args.precision)
        print(
            f"throughput: suite / bare {bare['seconds'] / suite_s:.2f} (bare {bare['seconds']:.1f} s, suite "
            f"{suite_s:.1f} s)",
            flush=True,
        )
        return {"bare_s": bare["seconds"], "suite_s": suite_s, "ratio": bare["seconds"] / suite_s}

    sections = {
        "throughput": throughput,
        "encoders": lambda: bench_encoders(suite, device, args.precision, batch, args.repeats),
        **(
            {"cuda_tests": run_cuda_tests} if cuda and args.cuda_tests else {}
        ),  # before the long sections: is the device path right
        "projection": lambda: bench_projection(
            work / "grid", dataset, zoo, authorized, batch, project, str(device), args.precision, quick
        ),
        "trained": lambda: bench_trained(
            QUICKSTART,
            work / "trained",
            str(device),
            args.precision,
            quick,
            args.trained_images,
            PLAIN_ATTACKS,
            args.fashion_root,
        ),
        "imagenet_mini": lambda: bench_trained(MINI, work / "mini", str(device), args.precision, quick),
    }
    for name, section in sections.items():
        start = time.perf_counter()
        report[name] = attempt(name, section)
        report["seconds"][name] = time.perf_counter() - start
        write_report(args.out, report)
    print(f"wrote {args.out / 'gpu.md'} ({time.perf_counter() - started:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
