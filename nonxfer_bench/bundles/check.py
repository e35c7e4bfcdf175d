"""Checking a bundle: every claim it makes, from the cheapest to the dearest, each part with the problems it found.

1. **files**: every file BUNDLE.json lists is there with its size and sha256, and no other file is (but those the
   checker allows by name);
2. **manifest**: BUNDLE.json says what the suite file and the cells say (suite as loaded, zoo, counts, image ids,
   draws, devices, precisions, code), and every cell records the committed code that computed it;
3. **cells**: the cells file holds one line per cell (no line hidden by a later one with its key);
4. **numbers**: every cell's n, accuracy and agreement are exactly what its outcome bits give;
5. **plan**: the cells are the suite's plan, keyed with the zoo identities BUNDLE.json records;
6. **weights**: the weight files here are those BUNDLE.json records (their absence only rules out a replay);
7. **tables**: ``leaderboard.md`` and ``cells.csv`` re-derived from the cells (:mod:`nonxfer_bench.bundles.tables`);
8. **replay**: a sample of encoding groups computed again (:mod:`nonxfer_bench.bundles.replay`).

Nothing is written inside the bundle. A folder that is not a bundle, a manifest out of bounds, a link or a special
file in the folder, or a suite file that cannot be loaded is a :class:`UserError` (one line, exit 2): nothing can be
checked. Anything else the bundle gets wrong is a problem of its part.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from nonxfer_bench.bundles import consistency, replay
from nonxfer_bench.bundles.contents import Contents, bundle_suite, planned, project_of, read_cells
from nonxfer_bench.bundles.manifest import Manifest, file_entry, folder_files, read_manifest
from nonxfer_bench.bundles.tables import table_problems
from nonxfer_bench.core.errors import UserError

NAMED = 10  # file names a problem line names; beyond, how many more


@dataclass(frozen=True)
class CheckOptions:
    """``replay``: replay a sample of groups; ``groups``: how many (None:
    :func:`~nonxfer_bench.bundles.replay.default_count`);
    ``seed``: the sample's seed (None: drawn from ``os.urandom``); ``allow_extra``: glob patterns of files that may lie
    in the folder without being in BUNDLE.json."""

    replay: bool = True
    groups: int | None = None
    seed: int | None = None
    allow_extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Part:
    """One part of a check: its name, the problems it found (none: it passed), what it checked and its seconds."""

    name: str
    problems: list[str]
    summary: str
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Verdict:
    """The parts of a check so far, and what the last line says."""

    folder: Path
    parts: list[Part] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.parts) and all(part.passed for part in self.parts)

    def line(self) -> str:
        if self.passed:
            replayed = next(
                (part.summary for part in self.parts if part.name == "replay"), "not replayed (--no-replay)"
            )
            return (
                f"check: PASS {self.folder}: {', '.join(part.name for part in self.parts if part.name != 'replay')} "
                f"as recorded; replay: {replayed}"
            )
        failed = [part for part in self.parts if not part.passed]
        count = sum(len(part.problems) for part in failed)
        return (
            f"check: FAIL: {failed[0].name}: {failed[0].problems[0]} ({count:,} problem{'s' if count > 1 else ''} in "
            f"{', '.join(p.name for p in failed)})"
        )


def timed(name: str, work: Callable[[], tuple[list[str], str]]) -> Part:
    began = time.perf_counter()
    problems, summary = work()
    return Part(name, problems, summary, time.perf_counter() - began)


def check_bundle(folder: Path, options: CheckOptions = CheckOptions()) -> Iterator[Part]:
    """Every part of the check of the bundle ``folder``, in order (see the module docstring)."""
    manifest = read_manifest(folder)
    yield timed("files", lambda: file_problems(folder, manifest, options.allow_extra))
    suite, suite_file = bundle_suite(folder, manifest)
    try:
        cells = read_cells(folder)
    except UserError as error:  # a damaged cells file: nothing below can be checked
        yield Part("cells", [str(error)], "")
        return
    contents = Contents(
        suite, suite_file, project_of(folder), cells, planned(suite, cells, manifest.draws, manifest.models)
    )
    count = f"{len(cells):,} cells"
    yield timed(
        "manifest",
        lambda: (
            consistency.claim_problems(contents, manifest),
            f"suite, zoo, counts, image ids, draws and code of {count}",
        ),
    )
    yield timed("cells", lambda: (consistency.cells_file_problems(contents, folder), "one line per cell"))
    yield timed(
        "numbers",
        lambda: (
            consistency.number_problems(contents),
            f"n, accuracy and agreement of {count} from their outcome bits",
        ),
    )
    yield timed(
        "plan",
        lambda: (consistency.plan_problems(contents), f"{count} = the suite's plan of {len(contents.plan):,} groups"),
    )
    weights, unusable = consistency.weight_problems(contents, manifest)
    yield Part(
        "weights",
        weights,
        f"{len(suite.models) - len(unusable)} of {len(suite.models)} models' weights here are the recorded ones",
    )
    yield timed(
        "tables",
        lambda: (table_problems(folder, contents, manifest), "leaderboard.md and cells.csv re-derived from the cells"),
    )
    if options.replay:
        yield replay_part(contents, manifest, options, unusable)


def file_problems(folder: Path, manifest: Manifest, allowed: tuple[str, ...]) -> tuple[list[str], str]:
    """Every listed file there with its size and sha256 (a file of another size is not read), no unlisted file but
    those ``allowed``."""
    present = folder_files(folder)
    extra = [name for name in present if name not in manifest.files]
    tolerated = [name for name in extra if any(fnmatch.fnmatch(name, pattern) for pattern in allowed)]
    foreign = [name for name in extra if name not in tolerated]
    missing = [name for name in manifest.files if name not in present]
    problems = [
        f"{what}: {', '.join(names[:NAMED])}{f' and {len(names) - NAMED:,} more' if len(names) > NAMED else ''}"
        for what, names in (("not in BUNDLE.json", foreign), ("missing", missing))
        if names
    ]
    for name, entry in manifest.files.items():
        if name not in present:
            continue
        if present[name] != entry.bytes:
            problems.append(
                f"{name}: {present[name]:,} bytes; BUNDLE.json records {entry.bytes:,} (changed after the bundle was "
                "written)"
            )
        elif file_entry(folder / name, present[name]).sha256 != entry.sha256:
            problems.append(
                f"{name}: its sha256 is not the one BUNDLE.json records (changed after the bundle was written)"
            )
    size = sum(entry.bytes for entry in manifest.files.values())
    allowed_note = f"; allowed beside them: {', '.join(tolerated)}" if tolerated else ""
    return problems, f"{len(manifest.files)} files, {size / 1e6:.1f} MB, sha256 as recorded{allowed_note}"


def replay_part(contents: Contents, manifest: Manifest, options: CheckOptions, unusable: list[str]) -> Part:
    """The replay of a sample of groups drawn by the checker's seed, each group's result named in the problems; none
    when the weights of the models ``unusable`` are absent or not the recorded ones."""
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "big")
    count = options.groups or replay.default_count(len(contents.plan))
    groups = replay.sample_groups(contents.plan, count, seed)
    how = f"seed {seed}: rerun this sample with --seed {seed}"
    began = time.perf_counter()
    if unusable:
        return Part(
            "replay",
            [f"cannot replay here without the recorded weights of {', '.join(unusable)} (or check with --no-replay)"],
            how,
        )
    try:
        problems = replay.data_problems(contents, manifest)
        if problems:
            return Part("replay", problems, how, time.perf_counter() - began)
        done = list(replay.replay_groups(contents, manifest, groups))
    except UserError as error:  # no data here, no GPU for CUDA draws
        return Part(
            "replay", [f"cannot replay here: {error} (or check with --no-replay)"], how, time.perf_counter() - began
        )
    problems = [problem for group in done for problem in group.problems]
    cells = sum(group.cells for group in done)
    threads = sorted({count for group in done for count in group.threads})
    rule = (
        "bit for bit"
        if manifest.draws != "cuda"
        else f"within tolerance: {replay.MIN_AGREEMENT:.0%} of images, accuracy in its interval"
    )
    summary = (
        f"{len(done)} of {len(contents.plan):,} groups ({', '.join(group.group for group in done)}), {cells:,} cells "
        f"{rule} at {' and '.join(map(str, threads))} torch thread(s); {how}"
    )
    return Part("replay", problems, summary, time.perf_counter() - began)
