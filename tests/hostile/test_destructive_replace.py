"""The class "destructive replace" (issue 23), as a property: every command that swaps or deletes a folder
(train diffusion, encode, the array cache's eviction, gpu_bundle, the runtime benchmark), pointed at a folder
of someone else's files with random names and contents, leaves every one of them byte for byte: it refuses
with one line and exit code 2, or succeeds without touching them.

In-process, on refusals that come before any work, with modest example counts (derandomized)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.core.errors import UserError
from tests.hostile.conftest import error_line, run_cli, tree_digest
from tests.hostile.test_data_loss import bundle_outcome, fashion_root, finished_run, runtime_outcome, tiny_ddpm_config  # noqa: F401 - a fixture
from tests.hostile.test_releases import encode_args, make_images

PROPERTY = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOURS_AGO = time.time() - 2 * 3600
# names the commands write themselves, so that a foreign file of that name is the hardest case
OWN_NAMES = [
    "manifest.json",
    "verify.json",
    "WRITTEN_BY.json",
    "MODEL_CARD.md",
    "unet",
    "scheduler",
    "RUNTIME.md",
    "runtime.png",
    "site.tar.xz",
    "fashion-mnist",
    "CACHEDIR.TAG",
    "survey.json",
    "survey.npy",
    ".hidden",
    ".x.npy.abcdefgh.partial",
]
NAMES = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=20).filter(
        lambda name: name not in (".", "..") and len(name.encode()) <= 200
    ),
    st.sampled_from(OWN_NAMES),
)
# {(name, sub-name or None): contents}: files at the top of the folder and one level down
TREES = st.dictionaries(st.tuples(NAMES, st.none() | NAMES), st.binary(max_size=64), min_size=1, max_size=6)
CACHE_ENTRY = re.compile(r"\.?[0-9a-f]{16,64}\.(npy|json).*")  # a name the cache may rightly take as its own


def plant(folder: Path, tree: dict[tuple[str, str | None], bytes], age: float | None = None) -> dict[str, str]:
    """Write ``tree`` into ``folder`` (entries that clash with an earlier one are left out), optionally aged;
    the digests of the files planted."""
    folder.mkdir(parents=True, exist_ok=True)
    planted = []
    for (name, sub), data in tree.items():
        path = folder / name if sub is None else folder / name / sub
        if (
            path.exists()
            or (sub is not None and (folder / name).is_file())
            or (sub is None and (folder / name).is_dir())
        ):
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        if age is not None:
            os.utime(path, (age, age))
        planted.append(path)
    return tree_digest(*planted)


def survivors(digests: dict[str, str]) -> dict[str, str]:
    return {path: tree_digest(Path(path)).get(path) if Path(path).is_file() else None for path in digests}


def fresh(tmp_path: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp_path))


@PROPERTY
@given(tree=TREES)
def test_train_diffusion(tree, tmp_path: Path) -> None:
    root = fresh(tmp_path)
    before = plant(root / "out", tree)
    error_line(
        run_cli("train", "diffusion", tiny_ddpm_config(root / "ddpm.yaml", "out"), "--steps", "1", cwd=root),
        "not replaced",
    )
    assert survivors(before) == before


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("photos") / "photos")


@PROPERTY
@given(tree=TREES, overwrite=st.booleans())
def test_encode(tree, overwrite: bool, tmp_path: Path, photos: Path, digits_zoo: Path) -> None:
    root = fresh(tmp_path)
    before = plant(root / "out", tree)
    error_line(
        run_cli(
            *encode_args(photos, root / "out", digits_zoo, "20", *(["--overwrite"] if overwrite else [])), cwd=root
        ),
        "not a release",
    )
    assert survivors(before) == before


@PROPERTY
@given(tree=TREES)
def test_cache_in_someone_elses_folder(tree, tmp_path: Path) -> None:
    """An existing kind folder of someone else's: refused, or (if it holds a CACHEDIR.TAG or only names the
    cache makes) used; either way old foreign files survive puts far over the limit."""
    root = fresh(tmp_path)
    before = plant(root / "datasets", tree, age=HOURS_AGO)
    before = {path: digest for path, digest in before.items() if not CACHE_ENTRY.fullmatch(Path(path).name)}
    try:
        cache = ArrayCache("datasets", root=root, limit_bytes=0)
    except UserError as error:
        assert "new or empty folder" in str(error)
    else:
        for key in range(3):
            cache.put(f"{key:016x}", np.zeros(100, np.uint8))
    assert survivors(before) == before


@PROPERTY
@given(tree=TREES)
def test_cache_in_its_own_folder(tree, tmp_path: Path) -> None:
    """Foreign files that appear later in a folder the cache made survive its orphan sweep and its eviction."""
    root = fresh(tmp_path)
    cache = ArrayCache("attacked", root=root, limit_bytes=0)
    cache.put("f" * 16, np.zeros(100, np.uint8))
    before = plant(
        root / "attacked", {key: data for key, data in tree.items() if not CACHE_ENTRY.fullmatch(key[0])}, age=HOURS_AGO
    )
    for key in range(3):
        cache.put(f"{key:016x}", np.zeros(100, np.uint8))
    assert survivors(before) == before


@PROPERTY
@given(tree=TREES)
def test_gpu_bundle(tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = fresh(tmp_path)
    before = plant(root / ".gpu", tree)
    code, err = bundle_outcome(monkeypatch, capsys, root / ".gpu", fashion_root(root / "fashion"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not replaced" in err
    assert survivors(before) == before


@settings(PROPERTY, max_examples=6)
@given(tree=TREES, replace=st.booleans())
def test_runtime(tree, replace: bool, tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811 - the fixture
    """Without --replace a RUNTIME.md or runtime.png of someone else's is refused; with it only those two are
    replaced."""
    root = fresh(tmp_path)
    before = plant(root / "out", tree)
    code, err = runtime_outcome(capsys, finished_run, "--out", root / "out", *(["--replace"] if replace else []))
    ours = {"RUNTIME.md", "runtime.png"}
    if ours & {name for name, _ in tree} and not replace:
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--replace" in err
    else:
        assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), err
    kept = {
        path: digest
        for path, digest in before.items()
        if not (replace and Path(path).relative_to(root / "out").parts[0] in ours)
    }
    assert survivors(kept) == kept
