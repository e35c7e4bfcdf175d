"""``verify``: read a release back as it lies on disk and score the zoo's models on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.owner.inputs import authorized_model, decode_source, known_classes, load_models, pick, source_labels
from nonxfer_bench.owner.verdict import verdict
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.storage.release import (
    MANIFEST,
    VERIFY,
    check_sources,
    inside,
    read_manifest,
    read_released,
    vouched_files,
)
from nonxfer_bench.zoo import build_model, resolve_preprocessing


def verify_release(
    release: Path,
    zoo: Path,
    model_names: list[str] | None = None,
    originals: Path | None = None,
    labels: bool = False,
    class_file: Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    controls: list[str] | None = None,
    overwrite: bool = False,
    settings: RunSettings = RunSettings(device="cpu"),
) -> dict:
    """Read a release back and score each model on it (on ``settings.device``, in ``settings.precision``): agreement
    with the model's prediction on the originals (when given) and, with ``labels``, accuracy against the class folder
    each source image lies in, named by a class of ``class_file`` or else of the zoo's dataset
    (:func:`~nonxfer_bench.owner.inputs.known_classes`, :func:`~nonxfer_bench.owner.inputs.source_labels`); then the
    verdict (:mod:`nonxfer_bench.owner.verdict`). Writes ``verify.json``; its ``stored_agreement`` is the authorized
    model's agreement on the stored release.

    Without ``model_names`` every zoo model of the release's input size is scored and the others are listed in
    ``skipped``; named models of another input size are refused. Refused before any model runs: neither originals nor
    labels (nothing to score against), an existing ``verify.json`` without ``overwrite``, a zoo without the release's
    authorized model (by identity hash), a class folder that names no class, an original that is not the file encode
    read (by the SHA-256 the manifest records, :func:`~nonxfer_bench.storage.release.check_sources`): its agreement
    would be measured against another image than the release was made from. The authorized model is always scored;
    the zoo file's controls and ``controls`` are labelled controls and never count as unauthorized."""
    release = Path(release)
    target = _report_target(release, originals, labels, overwrite)
    manifest = read_manifest(release)
    models, suite_controls = load_models(zoo)
    authorized = authorized_model(models, manifest["model"], Path(zoo))
    control_names = _control_names(models, authorized, set(suite_controls) | set(controls or []), zoo)
    size = _release_size(manifest)
    specs, wrong = _scored_specs(models, authorized, model_names, size, zoo)
    classes, truth = _labels(release, zoo, manifest["images"], labels, class_file)
    if originals is not None:
        check_sources(Path(originals), manifest, str(release / MANIFEST))
    released = _read_release(release, manifest, size, progress)
    clean = _read_originals(Path(originals), release, manifest, progress) if originals is not None else None
    rows = []
    for spec in tqdm(specs, desc="verify models", unit="model", disable=not progress):
        role = "authorized" if spec is authorized else "control" if spec.name in control_names else "unauthorized"
        rows.append({"model": spec.name, "role": role} | _scores(spec, released, clean, truth, batch_size, settings))
    result = _report(release, manifest, classes, rows, wrong, truth is not None)
    atomic_write(target, json.dumps(result, indent=1))
    return result


def _report_target(release: Path, originals: Path | None, labels: bool, overwrite: bool) -> Path:
    """The ``verify.json`` to write, refused before any work when there is nothing to score against or when an earlier
    verify's report lies there and ``overwrite`` was not given."""
    if originals is None and not labels:
        raise UserError(
            f"verify {release}: nothing to score against; pass --originals FOLDER (the input folder given to encode) "
            "and/or --labels (classes from its folders)"
        )
    target = release / VERIFY
    if target.exists() and not overwrite:
        raise UserError(
            f"{target.absolute()}: exists (written by an earlier verify); pass --overwrite to replace it, or move it "
            "away first"
        )
    return target


def _control_names(models: list[ModelSpec], authorized: ModelSpec, names: set[str], zoo: Path) -> set[str]:
    """The control models ``names``, refused unless each is an unauthorized model of the zoo."""
    for name in sorted(names):
        if name == authorized.name or name not in {m.name for m in models}:
            raise UserError(
                f"{zoo}: control {name!r} is not an unauthorized zoo model; valid: "
                f"{', '.join(m.name for m in models if m is not authorized)}"
            )
    return names


def _release_size(manifest: dict) -> tuple[int, ...]:
    """The released images' shape (channels x height x width): the manifest's ``release_size``, else its decode
    settings' channels and size."""
    decode = manifest["decode"]
    return tuple(manifest["release_size"] or (decode["channels"], decode["size"], decode["size"]))


def _scored_specs(
    models: list[ModelSpec], authorized: ModelSpec, model_names: list[str] | None, size: tuple[int, ...], zoo: Path
) -> tuple[list[ModelSpec], dict[str, tuple[int, ...]]]:
    """The models to score, the authorized one first, and those of another input size than the release's (skipped
    without ``model_names``; refused when named)."""
    names = [authorized.name] + [name for name in (model_names or [m.name for m in models]) if name != authorized.name]
    specs = [pick(models, name, Path(zoo)) for name in names]
    wrong = _other_sizes(specs, size)
    if model_names and wrong:
        listed = ", ".join(f"{name!r} takes {'x'.join(map(str, shape))}" for name, shape in wrong.items())
        raise UserError(
            f"{Path(zoo).absolute()}: {listed}, but the release's images are {'x'.join(map(str, size))}; choose "
            "models of that input size with --models"
        )
    scored = [spec for spec in specs if spec.name not in wrong]  # the authorized model is always the release's size
    return scored, wrong


def _labels(
    release: Path, zoo: Path, entries: list[dict], labels: bool, class_file: Path | None
) -> tuple[list[str] | None, torch.Tensor | None]:
    """With ``labels``, the class names and each image's true label from its source's class folder; else None and
    None."""
    classes = known_classes(Path(zoo), class_file) if labels else None
    truth = (
        source_labels([e["source"] for e in entries], classes, f"{release / MANIFEST} (sources' class folders)")
        if classes
        else None
    )
    return classes, truth


def _read_release(release: Path, manifest: dict, size: tuple[int, ...], progress: bool) -> torch.Tensor:
    """The released images as they lie on disk, each file checked against the manifest's SHA-256, refused unless every
    one has the manifest's size."""
    where = str(release / MANIFEST)
    files = vouched_files(release, manifest)
    images = [
        read_released(path, e, where)
        for path, e in tqdm(list(zip(files, manifest["images"])), desc="read release", unit="img", disable=not progress)
    ]
    shapes = {tuple(i.shape) for i in images}
    if shapes != {size}:
        raise UserError(
            f"{release}: released images are {', '.join('x'.join(map(str, s)) for s in sorted(shapes))}; the manifest "
            f"says {'x'.join(map(str, size))}"
        )
    return torch.stack(images)


def _read_originals(originals: Path, release: Path, manifest: dict, progress: bool) -> torch.Tensor:
    """Each released image's source under ``originals`` (never outside it), decoded as encode decoded it."""
    decode, where = manifest["decode"], str(release / MANIFEST)
    return torch.stack(
        [
            decode_source(inside(originals, e["source"], f"images[{i}].source", where),
                          decode["size"], decode["crop_pct"], decode["channels"], decode["interpolation"])[0]
            for i, e in enumerate(tqdm(manifest["images"], desc="read originals", unit="img", disable=not progress))
        ]
    )  # fmt: skip


def _scores(
    spec: ModelSpec,
    released: torch.Tensor,
    clean: torch.Tensor | None,
    truth: torch.Tensor | None,
    batch_size: int,
    settings: RunSettings,
) -> dict[str, Any]:
    """One model's scores on the release: ``n``, its agreement with its own predictions on the originals (when given)
    and, with labels, its accuracy on the release and on the originals, each with its interval."""
    model = build_model(spec).to_device(torch.device(settings.device), settings.precision)
    predictions = model.predict(released, batch_size)
    row: dict[str, Any] = {"n": len(predictions)}
    clean_predictions = model.predict(clean, batch_size) if clean is not None else None
    if clean_predictions is not None:
        row |= _share("agreement", predictions == clean_predictions)
    if truth is not None:
        row |= _share("accuracy", predictions == truth)
        if clean_predictions is not None:
            row |= _share("clean_accuracy", clean_predictions == truth)
    return row


def _report(
    release: Path,
    manifest: dict,
    classes: list[str] | None,
    rows: list[dict],
    skipped: dict[str, tuple[int, ...]],
    labelled: bool,
) -> dict:
    """What ``verify.json`` holds: the release's identity from its manifest, each model's scores, the models skipped
    for their input size, the authorized model's agreement after storage and the verdict (on accuracy when the
    images are ``labelled``, else on agreement)."""
    return {
        "release": str(release),
        "format": manifest["format"],
        "encoder": manifest["encoder"],
        "authorized": manifest["model"],
        "key_id": manifest["key_id"],
        "psnr_mean": manifest.get("psnr_mean"),
        "classes": classes or [],
        "models": rows,
        "skipped": {name: list(shape) for name, shape in skipped.items()},
        "stored_agreement": _stored_agreement(rows[0]),
        "verdict": verdict(rows, "accuracy" if labelled else "agreement"),
    }


def _share(name: str, hits: torch.Tensor) -> dict[str, Any]:
    """``name``: the share of ``hits`` that are true, and ``name_ci``: its 95% Wilson interval [lo, hi] over the
    images."""
    interval = wilson(int(hits.sum()), len(hits))
    return {name: float(hits.double().mean()), f"{name}_ci": [interval.lo, interval.hi]}


def _other_sizes(specs: list, released: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The models among ``specs`` whose input size (channels x height x width) is not the released images'."""
    sizes = {spec.name: tuple(resolve_preprocessing(spec)["input_size"]) for spec in specs}
    return {name: size for name, size in sizes.items() if size != tuple(released)}


def _stored_agreement(authorized: dict) -> dict | None:
    """The authorized model's agreement with its own predictions on the originals, on the release as stored, with
    Wilson's 95% interval; None without originals."""
    if "agreement" not in authorized:
        return None
    interval = wilson(round(authorized["agreement"] * authorized["n"]), authorized["n"])
    return {
        "model": authorized["model"],
        "agreement": interval.estimate,
        "lo": interval.lo,
        "hi": interval.hi,
        "n": authorized["n"],
    }


def stored_agreement_line(result: dict) -> str:
    """What storage did to the authorized model, as ``verify`` prints it."""
    found = result["stored_agreement"]
    if found is None:
        return (
            f"agreement after {result['format']} storage: not measured (pass --originals, the input folder given to "
            "encode)"
        )
    return (
        f"after {result['format']} storage the authorized model {found['model']} keeps its prediction on the "
        f"originals for {100 * found['agreement']:.1f}% [{100 * found['lo']:.1f}, {100 * found['hi']:.1f}] of the "
        f"images (n={found['n']}, 95% Wilson interval)"
    )


def format_table(rows: list[dict]) -> str:
    columns = ["model", "role", "n", "agreement", "accuracy", "clean_accuracy"]
    columns = [c for c in columns if any(c in r for r in rows)]

    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        if value is None:
            return ""
        if column not in ("agreement", "accuracy", "clean_accuracy"):
            return str(value)
        lo, hi = row[f"{column}_ci"]
        return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    table = [columns] + [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table)
