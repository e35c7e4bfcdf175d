"""benchmarks/gpu_bundle.py and gpu.sh: what a lent GPU machine (no package index, 64 MiB per call) is sent to run
gpu.py."""

import ast
import importlib.util
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "benchmarks" / "gpu_bundle.py")
gpu_bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_bundle)

FASHION = Path("/usr/share/datasets/fashion-mnist")


def imported_distributions(files: list[Path]) -> dict[str, set[str]]:
    """Every third-party distribution ``files`` import, at module level or inside a function, with the files importing
    it."""
    owners = packages_distributions()
    local = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "nonxfer_bench" or top in local:
                    continue
                for distribution in owners.get(top, [top]):
                    found.setdefault(distribution.lower().replace("_", "-"), set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_the_code_imports_is_on_the_gpu_machine_bundled_or_named_as_not_carried():
    known = {*gpu_bundle.DEVICE_IMAGE, *gpu_bundle.BUNDLED, *gpu_bundle.NOT_CARRIED}
    missing = {
        name: sorted(files)[:3]
        for name, files in imported_distributions(
            [*(ROOT / "nonxfer_bench").rglob("*.py"), *(ROOT / "attacks").rglob("*.py")]
        ).items()
        if name not in known
    }
    assert not missing, (
        "decide for each whether a GPU machine needs it (DEVICE_IMAGE, BUNDLED or NOT_CARRIED in "
        f"benchmarks/gpu_bundle.py): {missing}"
    )


def test_the_bundle_carries_what_gpu_py_imports_and_nothing_it_names_as_not_carried():
    needed = imported_distributions([ROOT / "benchmarks" / "gpu.py"])
    assert not set(gpu_bundle.BUNDLED) & set(gpu_bundle.NOT_CARRIED)
    assert {"pydantic", "kornia", "timm"} <= set(gpu_bundle.BUNDLED)
    assert not {name for name in needed if name not in {*gpu_bundle.DEVICE_IMAGE, *gpu_bundle.BUNDLED}}, needed


def test_every_bundled_package_is_pinned_at_the_version_installed_here():
    pins = gpu_bundle.pinned()
    assert [pin.split("==")[0] for pin in pins] == list(gpu_bundle.BUNDLED) and all(
        "==" in pin and pin.split("==")[1] for pin in pins
    )


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="needs Debian's dataset-fashion-mnist (make data)"
)
def test_the_carried_fashion_subset_reads_as_the_first_images_of_the_test_split(tmp_path):
    from nonxfer_bench.datasets.fashion_mnist import read_idx

    folder = gpu_bundle.copy_fashion(tmp_path, FASHION, 50)
    for name, shape in (("t10k-images-idx3-ubyte.gz", (50, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (50,))):
        carried, full = read_idx(folder / name), read_idx(FASHION / name)
        assert carried.shape == shape and np.array_equal(carried, full[:50])
    assert (folder / "t10k-images-idx3-ubyte.gz").stat().st_size < 50_000


def test_a_missing_fashion_file_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_bundle.copy_fashion(tmp_path / "out", tmp_path, 10)
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "t10k-images-idx3-ubyte.gz not found; install Debian's dataset-fashion-mnist (`make data`) or pass "
            "--fashion-root"
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--python-version", "banana", "expected 3.N"),
        ("--fashion-images", "0", "expected 1 to 10000"),
        ("--fashion-root", "/nonexistent", "not found"),
    ],
)
def test_a_hostile_option_is_one_line_exit_2_before_any_download_and_keeps_the_last_bundle(option, value, message):
    before = (
        sorted((p.name, p.stat().st_mtime_ns) for p in gpu_bundle.OUT.rglob("*")) if gpu_bundle.OUT.exists() else None
    )
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_bundle.py", option, value],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (
        sorted((p.name, p.stat().st_mtime_ns) for p in gpu_bundle.OUT.rglob("*")) if gpu_bundle.OUT.exists() else None
    ) == before


def test_gpu_sh_without_a_bundle_says_what_to_run_and_exits_2(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "gpu.sh", tmp_path / "benchmarks" / "gpu.sh")
    done = subprocess.run(["bash", str(tmp_path / "benchmarks" / "gpu.sh")], capture_output=True, text=True, timeout=60)
    assert (
        done.returncode == 2
        and done.stderr.strip() == "gpu.sh: .gpu/site.tar.xz not found; run python benchmarks/gpu_bundle.py first"
    )


def test_the_transfer_counts_tracked_files_and_the_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_bundle, "OUT", tmp_path / ".gpu")
    (tmp_path / ".gpu").mkdir()
    before = gpu_bundle.transfer_bytes()
    (tmp_path / ".gpu" / "site.tar.xz").write_bytes(b"x" * 1000)
    assert gpu_bundle.transfer_bytes() == before + 1000 and before > 10 * 2**20  # the checkout itself is most of it
