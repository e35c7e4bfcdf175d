"""GPU figures for the ImageNet suite: model throughput and encoder cost, measured side by side.

For every model of suites/imagenet.yaml (random weights; throughput does not depend on them):
images/s of a forward pass (bf16 autocast, channels_last, batch 256). For the authorized ResNet-50:
the time of each encoder on the same batch, as a ratio to one forward of the model, and the
published recipe (unfold, add, fold) against a plain noise add of the same tensor.

    python benchmarks/gpu_throughput.py --out results/gpu   (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function, repeats: int = 20, warmup: int = 5) -> float:
    """Median seconds per call, synchronized."""
    for _ in range(warmup):
        function()
    synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", help="only these zoo names (smoke tests)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import timm

    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.schema.suite import ModelSpec
    from nonxfer_bench.zoo import ZooModel

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    suite = yaml.safe_load(Path("suites/imagenet.yaml").read_text())
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "batch": args.batch, "models": {}, "encoders": {}}
    for entry in suite["zoo"]:
        if args.models and entry["name"] not in args.models:
            continue
        spec = ModelSpec(name=entry["name"], arch=entry["arch"])
        net = timm.create_model(spec.arch, pretrained=False)
        model = ZooModel(spec, net).to(device).to(memory_format=torch.channels_last)
        x = torch.rand(args.batch, *model.input_size, device=device).to(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            seconds = timed(lambda: model(x), args.repeats, min(5, args.repeats))
        report["models"][spec.name] = {"input_size": list(model.input_size), "images_per_s": round(args.batch / seconds, 1)}
        print(spec.name, report["models"][spec.name], flush=True)
        if spec.name == suite["authorized"][0]:
            forward = seconds
            images = torch.rand(args.batch, *model.input_size, device=device)
            for name, strength in (("reference", 0.0), ("patch", 30.0), ("gaussian", 30.0)):
                encoder = ENCODERS.create(name)
                generator = torch.Generator(device=device).manual_seed(0)
                with torch.no_grad():
                    encode = timed(lambda: encoder.encode(images, model.float(), strength, generator), args.repeats, min(5, args.repeats))
                report["encoders"][name] = {"seconds_per_batch": round(encode, 5), "ratio_to_forward": round(encode / forward, 3)}
                print(name, report["encoders"][name], flush=True)
            plain = timed(lambda: images + torch.randn_like(images), args.repeats, min(5, args.repeats))
            report["encoders"]["plain_noise_add"] = {"seconds_per_batch": round(plain, 5), "ratio_to_forward": round(plain / forward, 3)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# GPU throughput: {report['device']}", "", f"torch {report['torch']}, batch {args.batch}, bf16 autocast, channels_last, random weights.", "",
             "| model | input | images/s |", "|---|---|---|"]
    lines += [f"| {k} | {'x'.join(map(str, v['input_size']))} | {v['images_per_s']:,} |" for k, v in report["models"].items()]
    lines += ["", f"Encoders on the authorized model's batch ({suite['authorized'][0]}), fp32, seconds per batch and ratio to one bf16 forward:", "",
              "| encoder | s/batch | / forward |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds_per_batch']} | {v['ratio_to_forward']} |" for k, v in report["encoders"].items()]
    (args.out / "gpu_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
