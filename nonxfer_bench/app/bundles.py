"""``bundle``, ``check`` and ``site``: pin a suite's results folder as a bundle, check a bundle, merge every bundle of
a results folder into one static leaderboard site (:mod:`nonxfer_bench.bundles`)."""

from __future__ import annotations

from pathlib import Path

from nonxfer_bench.bundles.check import CheckOptions, Verdict, check_bundle
from nonxfer_bench.bundles.consistency import code_problems, number_problems, plan_problems
from nonxfer_bench.bundles.contents import Contents, planned, project_of, read_cells
from nonxfer_bench.bundles.manifest import BUNDLE, Manifest, make_manifest, read_manifest, write_manifest
from nonxfer_bench.bundles.site import Listed, find_bundles, site_html
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import draws
from nonxfer_bench.core.atomic import atomic_write, staged_folder, write_marker, written_by
from nonxfer_bench.core.errors import UserError, one_line
from nonxfer_bench.loading import absolute, check_results_folder, load_suite

SHOWN = 10  # problems of one part printed one by one; beyond, how many more
SITE_COMMAND = "nonxfer-bench site"


def bundle(suite_file: Path) -> int:
    """``bundle``: BUNDLE.json written into the suite's results folder (:func:`write_bundle`), then what it pins."""
    path, manifest = write_bundle(suite_file)
    print(
        f"wrote {path} ({manifest.cells:,} cells of {manifest.groups:,} groups, {len(manifest.files)} files hashed); "
        f"check it with `nonxfer-bench check {path.parent}`"
    )
    return 0


def write_bundle(suite_file: Path, output: Path | None = None) -> tuple[Path, Manifest]:
    """``bundle``: BUNDLE.json written (or refreshed) in the suite's results folder (under ``output`` when the run
    had ``--output``), the folder its run wrote, and only there; refused when that folder holds no cells, other
    cells than every planned one, cells that do not record their code or numbers their outcome bits do not give, or
    a BUNDLE.json that is not a bundle manifest."""
    suite_file = absolute(suite_file)
    suite = load_suite(suite_file, output=output)  # weights and data required: the manifest records their hashes
    folder = suite.results_dir()
    check_results_folder(suite, suite_file)  # the folder belongs to this suite file
    if not results_cells(folder).is_file():
        raise UserError(
            f"{folder}: no results of {suite_file.name} there; run `nonxfer-bench run {suite_file}` first (a bundle "
            "is the folder a run wrote)"
        )
    project = project_of(folder)
    if not suite_file.is_relative_to(project):
        raise UserError(
            f"{suite_file}: a bundle names its suite file inside its project folder {project} (the folder that holds "
            "results/); move the suite there"
        )
    if (folder / BUNDLE).exists():
        read_manifest(folder)  # replace only a bundle manifest, never someone's own file of that name
    cells = read_cells(folder)
    contents = Contents(suite, suite_file, project, cells, planned(suite, cells, draws(cells.values())))
    problems = plan_problems(contents) + code_problems(list(cells.values())) + number_problems(contents)
    if problems:
        raise UserError(
            f"{folder}: not a bundle of {suite_file.name}'s run: {problems[0]}"
            + (f" ({len(problems) - 1:,} more problems)" if len(problems) > 1 else "")
        )
    manifest = make_manifest(suite, suite_file, project, contents.ordered(), len(contents.plan), folder)
    return write_manifest(folder, manifest), manifest


def bundle_folder(target: Path) -> Path:
    """The bundle ``check`` reads: ``target`` itself, or the results folder of a suite file."""
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        return load_suite(target, require_weights=False).results_dir()
    return target


def check(target: Path, options: CheckOptions) -> int:
    """``check``: each part's result printed as it finishes, then the verdict line; exit 0 (PASS) or 1 (FAIL)."""
    verdict = Verdict(bundle_folder(target))
    for part in check_bundle(verdict.folder, options):
        verdict.parts.append(part)
        seconds = f" ({part.seconds:.1f} s)"
        if part.passed:
            print(one_line(f"check: {part.name}: ok: {part.summary}{seconds}", 2000), flush=True)
        for problem in part.problems[:SHOWN]:
            print(one_line(f"check: {part.name}: FAIL: {problem}", 2000), flush=True)
        if len(part.problems) > SHOWN:
            print(f"check: {part.name}: FAIL: ... and {len(part.problems) - SHOWN:,} more", flush=True)
    print(one_line(verdict.line(), 4000))
    return 0 if verdict.passed else 1


def site(results: Path, out: Path) -> int:
    """``site``: the leaderboard site of the bundles under ``results`` (:func:`build_site`), then its index page,
    how many bundles it shows and why any were left out."""
    index, listed = build_site(results, out)
    included = sum(item.excluded is None for item in listed)
    left_out = "; ".join(f"{item.folder.name}: {item.excluded}" for item in listed if item.excluded)
    print(
        f"{index} ({included} bundle{'s' if included != 1 else ''} whose files match their BUNDLE.json"
        + (f"; left out: {left_out}" if left_out else "")
        + ")"
    )
    return 0


def build_site(results: Path, out: Path) -> tuple[Path, list[Listed]]:
    """``site``: the leaderboard site of every bundle under ``results`` written to ``out`` (a new or empty folder, or
    one this command wrote), never inside a bundle; returns its index page and the folders it looked at."""
    results, out = absolute(results), absolute(out)
    listed = find_bundles(results)
    inside = next((item.folder for item in listed if out.is_relative_to(item.folder)), None)
    if inside is not None:
        raise UserError(
            f"--out {out}: inside the bundle {inside}, whose files its BUNDLE.json pins; write the site elsewhere "
            "(e.g. site-results/)"
        )
    with staged_folder(out, written_by(SITE_COMMAND)) as staging:
        atomic_write(staging / "index.html", site_html(listed, out))
        write_marker(staging, SITE_COMMAND)
    return out / "index.html", listed
