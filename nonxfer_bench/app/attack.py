"""``nonxfer-bench attack``: a protocol's attack tiers run on a release folder as it lies on disk, and its protection
card filled with the evidence.

The run is an ordinary suite (:func:`attack_suite`), written as ``suite.yaml`` into the run's folder (the release's
``attack/``, or ``--out DIR``) and run by :func:`nonxfer_bench.app.run.run_suite`: its dataset is the originals
(``image_folder`` over the folder ``encode`` read, labelled by the zoo's class names), its encoder ``stored_release``
(the released files themselves, in their own storage format) and its attacks the protocol's ensemble. So the tables are
a suite's, the same images through a suite with the same encoder give the same numbers, and a second ``attack`` reuses
every finished cell. The card's evidence is the leaderboard's verdict section
(:func:`~nonxfer_bench.analysis.verdict.verdicts`).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import ValidationError

from nonxfer_bench.analysis.frame import results_frame, unauthorized_models
from nonxfer_bench.analysis.ladder import identifications
from nonxfer_bench.analysis.verdict import verdicts
from nonxfer_bench.app.notices import notices
from nonxfer_bench.app.run import RunOptions, run_suite
from nonxfer_bench.app.sources import find_cells
from nonxfer_bench.core.atomic import atomic_write, write_marker
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.loading import absolute, encoder_refusal, load_protocol, load_suite
from nonxfer_bench.owner.card import KNOWS, NOT_MEASURED, interval, write_card
from nonxfer_bench.owner.inputs import authorized_model, known_classes, read_zoo
from nonxfer_bench.rendering.verdict import headline_text, settled_text
from nonxfer_bench.schema.files import parse_yaml
from nonxfer_bench.schema.suite import DatasetSpec
from nonxfer_bench.storage.release import (
    ATTACK,
    ATTACK_COMMAND,
    HEADER,
    MANIFEST,
    SUITE_FILE,
    check_sources,
    check_unchanged,
    manifest_sha256,
    read_manifest,
    vouched_files,
)
from nonxfer_bench.zoo import resolve_preprocessing


@dataclass(frozen=True)
class AttackRequest:
    """What ``attack`` runs: the release, its originals, the zoo that scores it, the protocol and where the run goes."""

    release: Path
    originals: Path
    zoo: Path
    protocol: Path
    ensemble: str = "full"
    classes: Path | None = None  # a class file; default: the zoo dataset's class names
    public: str | None = None  # a dataset as YAML; default: the zoo dataset's train split
    out: Path | None = None  # default: <release>/attack
    batch_size: int = 256
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None


def attack_release(request: AttackRequest) -> tuple[dict, Path]:
    """Run the protocol on the release, write its card (:func:`nonxfer_bench.owner.card.write_card`); returns the
    card's data and the suite file of the run. Everything that can refuse does before any work."""
    release = absolute(request.release)
    manifest = read_manifest(release)
    check_unchanged(vouched_files(release, manifest), manifest, str(release / MANIFEST))
    out = absolute(request.out) if request.out else release / ATTACK
    _check_out(out, release, absolute(request.originals))
    with notices("nonxfer-bench: %(message)s"):  # e.g. that the originals cannot be checked by content
        suite, protocol = attack_suite(request, manifest)
    suite_file = out / SUITE_FILE
    comment = (
        f"{HEADER}: protocol {protocol.name} ({request.ensemble}) on the release {release} as it lies on disk.\n# "
        f"Rerun: `nonxfer-bench run {suite_file}`.\n"
    )
    _write_checked(suite_file, comment + yaml.safe_dump(suite, sort_keys=False, width=160))
    code = run_suite(suite_file, {}, RunOptions(tracking=False))
    if code != 0:
        raise UserError(
            f"{suite_file}: the attack run did not finish (exit code {code}); run `nonxfer-bench attack` again to "
            "resume it"
        )
    found = find_cells("attack", suite_file)
    evidence = attack_evidence(
        found.cells, protocol, request.ensemble, found.suite.results_dir() / "leaderboard.md", release
    )
    write_marker(out, ATTACK_COMMAND)  # the finished run, file by file: what proves the folder is this command's
    return write_card(release, manifest, evidence), suite_file


def attack_suite(request: AttackRequest, manifest: dict) -> tuple[dict, object]:
    """The suite that attacks the release (as data, for ``suite.yaml``) and the protocol it runs."""
    release, originals = absolute(request.release), absolute(request.originals)
    if not originals.is_dir():
        raise UserError(f"--originals {originals}: folder not found (give the input folder encode read)")
    models, controls, dataset = read_zoo(request.zoo)
    authorized = authorized_model(models, manifest["model"], request.zoo)
    classes = known_classes(request.zoo, request.classes)
    protocol = load_protocol(request.protocol)
    decode = manifest["decode"]
    params = {"root": str(originals), "classes": classes, "channels": decode["channels"]} | {
        key: decode[key] for key in ("size", "crop_pct", "interpolation")
    }
    images = DATASETS.create("image_folder", params)
    _check_sources(images, originals, manifest, str(release / MANIFEST))
    stored = {"release": str(release), "originals": str(originals), "manifest_sha256": manifest_sha256(release)}
    problem = encoder_refusal(ENCODERS.create("stored_release", stored), authorized)
    if problem:
        raise UserError(f"attack {release}: cannot attack this release: {problem}")
    encoder = manifest["encoder"]
    suite = {
        "name": _name(release),
        "description": f"Protocol {protocol.name} ({request.ensemble} ensemble) on the release {release.name} as "
        f"stored ({manifest['format']}).",
        "dataset": {"name": "image_folder", "params": params},
        "public": public_dataset(request.public, dataset).model_dump(mode="json"),
        "zoo": [model.model_dump(mode="json") for model in models],
        "authorized": [authorized.name],
        "controls": controls,
        "encoders": [
            {
                "name": "stored_release",
                "params": stored,
                "strengths": [encoder["strength"]],
            }
        ],
        "attacks": [identification(models, manifest["release_size"], len(manifest["images"]))],
        "protocol": {"file": str(absolute(request.protocol)), "ensemble": request.ensemble},
        "batch_size": request.batch_size,
        "device": request.device,
        "precision": request.precision,
        "tracking": {"enabled": False},
    }
    if request.threads:
        suite["threads"] = request.threads
    return suite, protocol


IDENTIFY_RELEASED = 10  # released images the identification attacker holds


def identification(models: list, release_size: list[int], images: int) -> dict:
    """``identify`` over every zoo model of the release's input size: which model the release gives away as its
    authorized one, from :data:`IDENTIFY_RELEASED` released images (fewer when the release holds fewer)."""
    candidates = [
        model.name for model in models if tuple(resolve_preprocessing(model)["input_size"]) == tuple(release_size)
    ]
    return {"name": "identify", "params": {"candidates": candidates, "released": min(IDENTIFY_RELEASED, images)}}


def public_dataset(text: str | None, zoo_dataset: DatasetSpec | None) -> DatasetSpec:
    """The clean images an informed attacker holds: ``--public`` (a dataset as YAML), else the train split of the
    dataset the zoo file names (Fashion-MNIST train for the Fashion-MNIST zoo)."""
    if text is not None:
        try:
            return DatasetSpec.model_validate(parse_yaml(text, "--public"))
        except ValidationError as error:
            key, message = describe_error(error, DatasetSpec)
            raise UserError(f"--public {excerpt(text, 80)}: {key + ': ' if key else ''}{message}") from None
    fields = (
        DATASETS.get(zoo_dataset.name).Params.model_fields
        if zoo_dataset is not None and zoo_dataset.name in DATASETS.names()
        else {}
    )
    if "split" not in fields:
        raise UserError(
            "attack: no public images for informed attackers: the zoo names no dataset with a train split; give "
            "--public '{name: DATASET, params: {...}}' (clean images from a source disjoint from the release's)"
        )
    return DatasetSpec(name=zoo_dataset.name, params={**zoo_dataset.params, "split": "train"})


def _check_sources(images, originals: Path, manifest: dict, where: str) -> None:
    """The originals' class folders hold exactly the release's source images (the suite scores those), each the file
    encode read (by the SHA-256 the manifest records: the run's draws are keyed on the manifest, which so pins
    them)."""
    files, _ = images.files()
    found = {path.relative_to(originals).as_posix() for path, _ in files}
    sources = {entry["source"] for entry in manifest["images"]}
    missing, extra = sorted(sources - found), sorted(found - sources)
    if missing:
        raise UserError(
            f"{originals}: {excerpt(missing[0])} (a source of the release) is not an image in a class folder of the "
            f"originals{f' ({len(missing)} such)' if len(missing) > 1 else ''}; attack needs the folder encode read, "
            "laid out as root/<class>/<image>"
        )
    if extra:
        raise UserError(
            f"{originals}: {excerpt(extra[0])} is not in the "
            f"release{f' ({len(extra)} such)' if len(extra) > 1 else ''}; give the folder encode read, as it was"
        )
    check_sources(originals, manifest, where)


def _write_checked(suite_file: Path, text: str) -> None:
    """Write the run's suite file and load it as ``run`` will (every check before any work); on a refusal put back what
    was there: no folder this call created, the earlier run's suite file, no suite file where there was none."""
    created = next(
        (folder for folder in reversed(suite_file.parents) if not folder.exists()), None
    )  # the outermost folder it makes
    earlier = suite_file.read_bytes() if suite_file.is_file() else None
    suite_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(suite_file, text)
    try:
        load_suite(suite_file)
    except UserError:
        if created is not None:
            shutil.rmtree(created)
        elif earlier is not None:
            atomic_write(suite_file, earlier)
        else:
            suite_file.unlink()
        raise


def _check_out(out: Path, release: Path, originals: Path) -> None:
    """The run's folder is the release's own :data:`ATTACK` folder or lies outside the release, neither contains nor
    lies
    inside the originals, and is new, empty, or one an earlier ``attack`` wrote (its suite file starts with
    :data:`HEADER`)."""
    out_real, release_real, originals_real = out.resolve(), release.resolve(), originals.resolve()
    if out_real.is_relative_to(release_real) and out_real != release_real / ATTACK:
        raise UserError(
            f"--out {out}: inside the release {release}, where only its own {ATTACK}/ folder may hold a run; leave "
            "--out out or give a folder outside the release"
        )
    if out_real.is_relative_to(originals_real) or originals_real.is_relative_to(out_real):
        raise UserError(
            f"--out {out}: the run's folder and the originals {originals} must not contain each other; give a folder "
            "outside the originals"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out}: exists and is not a folder; give a new or empty folder with --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    suite_file = out / SUITE_FILE
    if not (suite_file.is_file() and suite_file.read_bytes()[: len(HEADER)] == HEADER.encode()):
        raise UserError(
            f"{out}: holds files that no earlier `nonxfer-bench attack` wrote; give a new or empty folder with --out"
        )


def _name(release: Path) -> str:
    """A suite name from the release folder's name (letters, digits, '_', '.', '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", release.name).lstrip(".-")[:100] or "release"


def attack_evidence(cells: list, protocol, ensemble: str, leaderboard: Path, release: Path) -> dict:
    """The card's evidence from the run's cells: the protocol verdict of the release (per tier the strongest attack
    and unauthorized model, chosen on tuning images, with its accuracy and gap on the others), the cheapest break, and
    identification when the run holds ``identify`` cells."""
    frame = results_frame(cells)
    found = [v for v in verdicts(frame, protocol.verdict) if v.release.encoder == "stored_release"]
    if not found:
        raise UserError(
            f"{leaderboard.parent}: the run holds no verdict for the release (no authorized no-attack cell or no "
            "unauthorized model)"
        )
    verdict = found[0]
    tiers = [*verdict.tiers, *([verdict.white_box] if verdict.white_box else [])]
    headline = headline_text(verdict)  # broken at <tier>: <step> (<model>), or what it held (or did not) without one
    cheapest = headline if verdict.broken_at else f"none found: {headline}"
    identified = [f"`identify` ranked the authorized model first in {i['hits']} of {i['trials']} trial(s) from "
                  f"{i['nes']} released images"
                  for i in identifications(frame) if i["encoding"] == verdict.release]  # fmt: skip
    return {
        "protocol": {"name": protocol.name, "version": protocol.version, "ensemble": ensemble},
        "attacked": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "unauthorized": unauthorized_models(frame[frame.release == verdict.release]),
        "n": verdict.n,
        "tuning": verdict.tuning,
        "authorized": interval(verdict.auth),
        "target": verdict.target,
        "tiers": [
            {
                "tier": tier.tier,
                "knows": KNOWS[tier.tier],
                "best": interval(tier.best),
                "gap": interval(tier.gap),
                "step": tier.step.label,
                "model": tier.model,
                "broken": bool(tier.broken),
            }
            for tier in tiers
        ],  # fmt: skip
        "not_run": list(verdict.unknown),  # tiers below any break that no attack ran: nothing is known there
        "not_needed": [tier for tier in verdict.missing if tier not in verdict.unknown],  # above what settled it
        "settled": settled_text(verdict),  # broken at <tier> / not held at <tier>: why no higher tier ran
        "break": cheapest,
        "identification": "; ".join(identified) or NOT_MEASURED,
        "leaderboard": leaderboard.relative_to(release).as_posix()
        if leaderboard.is_relative_to(release)
        else str(leaderboard),
    }
