"""A plain (non-editable) install ships attacks/ as nonxfer_bench.attacks, with no generic top-level name."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_attacks_into_the_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("nonxfer_bench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "nonxfer_bench/attacks/compression.py" in names
    assert "nonxfer_bench/encoders/reference.py" in names
    assert top_level <= {"nonxfer_bench", next(n for n in top_level if n.endswith(".dist-info"))}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nonxfer-bench = nonxfer_bench.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_subpackage_is_listed_for_the_wheel():
    """A new subpackage missing from pyproject's ``packages`` would install without its code."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        "nonxfer_bench." + init.parent.relative_to(ROOT / "nonxfer_bench").as_posix().replace("/", ".")
        for init in (ROOT / "nonxfer_bench").glob("*/__init__.py")
    }
    assert on_disk | {"nonxfer_bench", "nonxfer_bench.attacks"} == listed
