"""Loading a suite or zoo file: read, validate, resolve paths, and check every name against the registries.

Every problem becomes one :class:`UserError` line that names the file (as an absolute path), the key and
what would be valid, so a typo in the last attack of a suite cannot waste an hour of encoding. This module
sits above the components it checks (datasets, zoo, encoders, attacks); the schema below it imports none of them.

Every path a suite implies resolves from the suite file, never from the current directory: zoo and weight
files from the suite's folder, and its outputs (``output.dir``, default ``runs``; ``output.results``, default
``results``) from its *project folder* (:func:`project_folder`), or from ``--output DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from nonxfer_bench.attacks import ATTACKS, Attack
from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import INPUT_DIMENSION, ZOO_MODEL, describe_error, marked
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.datasets.base import MODEL_PREPROCESSING_FIELDS
from nonxfer_bench.encoders import ENCODERS, Encoder
from nonxfer_bench.schema.files import read_yaml, resolve_path, validate
from nonxfer_bench.schema.protocol import PUBLIC, ZOO, Protocol
from nonxfer_bench.schema.suite import DatasetSpec, ModelSpec, Suite, ZooFile, resolve_package_file
from nonxfer_bench.zoo import dataset_preprocessing, hub_weights_problem, model_structure, resolve_preprocessing


def load_zoo(path: Path) -> ZooFile:
    """Read and validate a zoo file; weight paths are taken relative to the file."""
    path = absolute(path)
    zoo = validate(ZooFile, read_yaml(path), path)
    _check_unique([m.name for m in zoo.models], path, "models")
    return zoo.model_copy(update={"models": _resolved_weights(zoo.models, path.parent)})


def _resolved_weights(models: list[ModelSpec], folder: Path) -> list[ModelSpec]:
    """``models`` with their weight files' paths taken relative to ``folder`` (the file that names them)."""
    return [
        model
        if model.weights.path is None
        else model.model_copy(
            update={"weights": model.weights.model_copy(update={"path": resolve_path(folder, model.weights.path)})}
        )
        for model in models
    ]


def _check_unique(names: list[str], path: Path, key: str) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise UserError(f"{path}: key '{key}[{i}].name': duplicate name {name!r}")
        seen.add(name)


def absolute(path: Path) -> Path:
    """``path`` as an absolute, normalized path (``..`` folded, symbolic links kept): what error lines show."""
    return Path(os.path.abspath(path))


def project_folder(suite_path: Path) -> Path:
    """Where a suite's outputs go: the parent of the suite file's folder when that folder is named ``suites``
    (this repository's layout: ``suites/quickstart.yaml`` writes ``runs/`` and ``results/`` beside ``suites/``),
    else the suite file's own folder."""
    folder = absolute(suite_path).parent
    return folder.parent if folder.name == "suites" else folder


def load_suite(path: Path, require_weights: bool = True, output: Path | None = None) -> Suite:
    """Read, validate and resolve a suite file: zoo, registry names, parameters and files.

    Outputs: relative ``output.dir`` and ``output.results`` are taken from :func:`project_folder`; ``output``
    (the command line's ``--output DIR``) replaces both with ``DIR/runs`` and ``DIR/results``."""
    path = absolute(path)
    suite = validate(Suite, read_yaml(path), path)
    if output is not None:
        folders = {"dir": absolute(output) / "runs", "results": absolute(output) / "results"}
    else:
        project = project_folder(path)
        folders = {"dir": absolute(project / suite.output.dir), "results": absolute(project / suite.output.results)}
    if isinstance(suite.zoo, Path):
        zoo_path = resolve_path(path.parent, suite.zoo)
        if not zoo_path.is_file():
            raise UserError(f"{path}: key 'zoo': zoo file {zoo_path} not found")
        zoo = load_zoo(zoo_path).models
    else:
        _check_unique([m.name for m in suite.zoo], path, "zoo")
        zoo = _resolved_weights(suite.zoo, path.parent)
    suite = suite.model_copy(update={"output": suite.output.model_copy(update=folders), "zoo": zoo})
    names = [m.name for m in suite.models]
    for i, name in enumerate(suite.authorized):
        if name not in names:
            raise UserError(f"{path}: key 'authorized[{i}]': {name!r} is not in the zoo; valid: {', '.join(names)}")
    for i, name in enumerate(suite.controls):
        if name not in names or name in suite.authorized:
            valid = ", ".join(n for n in names if n not in suite.authorized)
            raise UserError(f"{path}: key 'controls[{i}]': {name!r} is not an unauthorized zoo model; valid: {valid}")
    if require_weights:
        for i, model in enumerate(suite.models):
            weights = model.weights
            if weights.source == "file" and not weights.path.is_file():
                raise UserError(
                    f"{path}: key 'zoo[{i}].weights.path': weight file {weights.path} not found (train it with "
                    "`nonxfer-bench train zoo`, or point to an existing .safetensors/.pth)"
                )
            if weights.source == "package":
                try:
                    resolve_package_file(weights, model.name)
                except UserError as error:
                    raise UserError(f"{path}: key 'zoo[{i}].weights': {error}") from None
    suite = _with_protocol(suite, path)
    suite = _fill_dataset_preprocessing(suite, path)
    suite = _check_components(suite, path)
    _check_encoder_models(suite, path)
    if require_weights:
        check_inputs(suite, path)
    return suite


def load_protocol(path: Path) -> Protocol:
    """Read and validate a protocol file (:mod:`nonxfer_bench.schema.protocol`)."""
    path = absolute(path)
    if not path.is_file():
        raise UserError(f"{path}: protocol file not found (the protocols are in suites/protocols/)")
    return validate(Protocol, read_yaml(path), path)


def suite_protocol(suite: Suite) -> tuple[Protocol | None, str | None]:
    """The protocol a loaded suite runs (its file resolved at load) and which ensemble; (None, None) without one."""
    return (load_protocol(suite.protocol.file), suite.protocol.ensemble) if suite.protocol else (None, None)


def _with_protocol(suite: Suite, path: Path) -> Suite:
    """The suite with its protocol's ensemble appended to its own attacks, placeholders expanded (``@public``: the
    zoo models neither authorized nor controls; ``@zoo``: every zoo model) and entries the suite lists already left
    out; each attack must have the tier the protocol lists it under."""
    if suite.protocol is None:
        return suite
    where = resolve_path(path.parent, suite.protocol.file)
    protocol = load_protocol(where)
    names = [m.name for m in suite.models]
    expand = {PUBLIC: [n for n in names if n not in suite.authorized and n not in suite.controls], ZOO: names}
    listed = {(a.name, repr(a.params), tuple(a.strengths)) for a in suite.attacks}
    added = []
    for tier, specs in protocol.ensemble(suite.protocol.ensemble).items():
        for i, spec in enumerate(specs):
            params = {
                key: expand.get(value, value) if isinstance(value, str) else value for key, value in spec.params.items()
            }
            if (spec.name, repr(params), tuple(spec.strengths)) in listed:
                continue
            key = f"{where}: key '{suite.protocol.ensemble}.{tier}[{i}]'"
            if spec.name not in ATTACKS.names():
                raise UserError(f"{key}: unknown attack {spec.name!r}; valid: {', '.join(ATTACKS.names())}")
            try:
                actual = ATTACKS.create(spec.name, params).threat.tier.value
            except UserError as error:
                raise UserError(f"{key}: {error}") from None
            if actual != tier:
                raise UserError(
                    f"{key}: {spec.name} with these parameters is a {actual!r} attack, listed under {tier!r}; move it "
                    "to its tier"
                )
            added.append(spec.model_copy(update={"params": params}))
            listed.add((spec.name, repr(params), tuple(spec.strengths)))
    return suite.model_copy(
        update={"attacks": [*suite.attacks, *added], "protocol": suite.protocol.model_copy(update={"file": where})}
    )


def _dataset_specs(suite: Suite) -> list[tuple[str, DatasetSpec]]:
    return [("dataset", suite.dataset)] + ([("public", suite.public)] if suite.public else [])


def suite_datasets(suite: Suite, path: Path) -> list[tuple[str, DatasetSpec]]:
    """Every dataset a loaded suite reads, by its key: the evaluated images, the public ones, and those its attacks'
    parameters name (the clean images an autoencoder trains on)."""
    nested = [
        _nested_datasets(path, f"attacks[{i}].params", ATTACKS.get(spec.name).Params.model_validate(spec.params))
        for i, spec in enumerate(suite.attacks)
    ]
    return _dataset_specs(suite) + [found for entry in nested for found in entry]


def _fill_dataset_preprocessing(suite: Suite, path: Path) -> Suite:
    """Decode settings a dataset leaves unset (size, crop_pct, interpolation) come from the first
    authorized model's resolved timm data config, so the release is made exactly as timm's eval
    transform would make that model's input; the filled values are part of the cell keys."""
    filled = {}
    for key, spec in _dataset_specs(suite):
        if spec.name not in DATASETS.names():
            continue  # reported by _check_components
        declared = DATASETS.get(spec.name).Params.model_fields  # opt in: such a field defaults to None
        fields = [f for f in MODEL_PREPROCESSING_FIELDS if f in declared and declared[f].default is None]
        unset = [f for f in fields if spec.params.get(f) is None]
        if not unset:
            continue
        try:
            values = dataset_preprocessing(resolve_preprocessing(suite.model(suite.authorized[0])))
        except UserError as error:
            raise UserError(f"{path}: {error}") from None
        filled[key] = spec.model_copy(update={"params": {**spec.params, **{f: values[f] for f in unset}}})
    return suite.model_copy(update=filled)


def check_inputs(suite: Suite, path: Path) -> None:
    """Before any work: the datasets' files and the hub weights a run needs exist; one line naming them all."""
    problems = []
    for key, spec in _dataset_specs(suite):
        try:
            DATASETS.create(spec.name, spec.params).check()
        except UserError as error:
            problems.append(f"key '{key}': {error}")
    hub = hub_weights_problem([m for m in suite.models if m.weights.source == "hub"])
    if hub:
        problems.append(hub)
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))


def _check_components(suite: Suite, path: Path) -> Suite:
    """Every component's name and parameters (their own bounds, then what they declare about the suite: zoo model
    names, the authorized models' input dimension, the suite resources an attack requires), and that no attacker
    data shares images with the evaluated ones; returns the suite with the validated parameters in its entries."""
    checks = [(DATASETS, "dataset", suite.dataset)] + ([(DATASETS, "public", suite.public)] if suite.public else [])
    checks += [(ENCODERS, f"encoders[{i}]", spec) for i, spec in enumerate(suite.encoders)]
    checks += [(ATTACKS, f"attacks[{i}]", spec) for i, spec in enumerate(suite.attacks)]
    attacker_data = [("public", suite.public)] if suite.public else []
    validated = {}
    for registry, key, spec in checks:
        if spec.name not in registry.names():
            raise UserError(
                f"{path}: key '{key}.name': unknown {registry.kind} {spec.name!r}; valid: {', '.join(registry.names())}"
            )
        params_cls = registry.get(spec.name).Params
        try:
            params = params_cls.model_validate(spec.params)
        except ValidationError as error:
            sub, message = describe_error(error, params_cls)
            raise UserError(f"{path}: key '{key}.params{'.' + sub if sub else ''}': {message}") from None
        validated[key] = spec.model_copy(update={"params": params.model_dump(mode="json")})
        _check_suite_bounds(suite, path, f"{key}.params", params)
        if registry is ATTACKS:
            _check_requirements(suite, path, key, ATTACKS.get(spec.name)(params))
            attacker_data += _nested_datasets(path, f"{key}.params", params)
    _check_disjoint(suite, path, attacker_data)
    return suite.model_copy(
        update={
            "dataset": validated["dataset"],
            "public": validated.get("public"),
            "encoders": [validated[f"encoders[{i}]"] for i in range(len(suite.encoders))],
            "attacks": [validated[f"attacks[{i}]"] for i in range(len(suite.attacks))],
        }
    )


def _check_suite_bounds(suite: Suite, path: Path, key: str, params: BaseModel) -> None:
    """Parameters marked :data:`ZOO_MODEL` name zoo models; those marked :data:`INPUT_DIMENSION` are at most
    every authorized model's input dimension."""
    names = [m.name for m in suite.models]
    for sub, name in marked(params, ZOO_MODEL):
        if name not in names:
            raise UserError(
                f"{path}: key '{key}.{sub}': {excerpt(name)} is not a model of the zoo; valid: {', '.join(names)}"
            )
    for sub, value in marked(params, INPUT_DIMENSION):
        for name in suite.authorized:
            channels, height, width = _input_size(suite.model(name), path)
            if value > channels * height * width:
                raise UserError(
                    f"{path}: key '{key}.{sub}': {value:,} is above the input dimension of the authorized model "
                    f"{name!r} ({channels}x{height}x{width} = {channels * height * width:,}); at most "
                    f"{channels * height * width:,}"
                )


def _input_size(model: ModelSpec, path: Path) -> tuple[int, int, int]:
    """A zoo model's input size (C, H, W): its ``preprocess.input_size``, else timm's config (no weights built)."""
    if model.preprocess.input_size is not None:
        return tuple(model.preprocess.input_size)
    try:
        return tuple(resolve_preprocessing(model)["input_size"])
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _check_requirements(suite: Suite, path: Path, key: str, attack: Attack) -> None:
    """What an attack's threat model requires of the suite (``ThreatModel.requires``; the instance's: ``tuned`` has its
    inner attack's) is there."""
    requires, name = attack.threat.requires, attack.name
    if "public" in requires and suite.public is None:
        raise UserError(
            f"{path}: key '{key}': attack {name!r} needs the suite's 'public' dataset (clean images the attacker "
            "holds, from a source disjoint from the evaluated images, e.g. public: {name: fashion_mnist, params: "
            "{split: train}})"
        )
    if "public_labels" in requires and not DATASETS.get(suite.public.name).labelled:
        raise UserError(
            f"{path}: key '{key}': attack {name!r} needs labelled public images; the dataset {suite.public.name!r} of "
            "key 'public' has no labels"
        )


def _nested_datasets(path: Path, key: str, params: BaseModel) -> list[tuple[str, DatasetSpec]]:
    """The datasets an attack's parameters name (the clean images an autoencoder trains on), checked like the
    suite's."""
    found = []
    for name in type(params).model_fields:
        value, sub = getattr(params, name), f"{key}.{name}"
        if isinstance(value, DatasetSpec):
            try:
                DATASETS.create(value.name, value.params)
            except UserError as error:
                raise UserError(f"{path}: key '{sub}': {error}") from None
            found.append((sub, value))
        elif isinstance(value, BaseModel):
            found += _nested_datasets(path, sub, value)
    return found


DISJOINT_RULE = (
    "a split holds none of another split's images ('all' holds every split), a folder holds those of every folder "
    "inside it, and a limit draws from its whole source, so two limits of one source can share images"
)


def _check_disjoint(suite: Suite, path: Path, attacker_data: list[tuple[str, DatasetSpec]]) -> None:
    """No attacker data may share images with the evaluated ones (an attacker fine-tuned on the test images scores
    what it memorized): two datasets may share images when one's :meth:`Dataset.source` starts with the other's."""
    if not attacker_data:
        return
    evaluated = DATASETS.create(suite.dataset.name, suite.dataset.params).source()
    for key, spec in attacker_data:
        source = DATASETS.create(spec.name, spec.params).source()
        if source[: len(evaluated)] == evaluated or evaluated[: len(source)] == source:
            shown = _shown(evaluated) if source == evaluated else f"{_shown(evaluated)} and {_shown(source)}"
            raise UserError(
                f"{path}: keys 'dataset' and '{key}' may share images ({shown}): the attacker would hold images it is "
                f"scored on. Give the attacker a disjoint source: {DISJOINT_RULE}"
            )


def _shown(source: tuple[str, ...]) -> str:
    """A dataset source as text: ``digits test``, ``folder /data/val``."""
    return source[0] if len(source) == 1 else f"{source[0]} {os.path.join(*source[1:])}"


def encoder_refusal(encoder: Encoder, spec: ModelSpec) -> str | None:
    """Why ``encoder`` cannot protect the zoo model ``spec`` (:meth:`Encoder.check_model` on its structure, built
    without weights; only for encoders that check), or None; an error check_model raises (a plugin's bug) as a
    reason."""
    if type(encoder).check_model is Encoder.check_model:
        return None
    try:
        return encoder.check_model(model_structure(spec))
    except Exception as error:  # noqa: BLE001 - a plugin's bug is one line at load, not a traceback
        return f"its check_model raised {type(error).__name__}: {excerpt(str(error))}"


def _check_encoder_models(suite: Suite, path: Path) -> None:
    """Every encoder can protect every authorized model (:func:`encoder_refusal`)."""
    for i, spec in enumerate(suite.encoders):
        encoder = ENCODERS.create(spec.name, spec.params)
        for name in suite.authorized:
            problem = encoder_refusal(encoder, suite.model(name))
            if problem:
                raise UserError(
                    f"{path}: key 'encoders[{i}]': {spec.name} cannot protect authorized model {name!r}: {problem}"
                )


RESULTS_MARKER = "SUITE"  # in results/<name>/: the suite file that wrote the folder


def check_results_folder(suite: Suite, suite_path: Path) -> None:
    """Refuse to write a suite's results into a folder another suite file wrote.

    ``results/<name>/SUITE`` names the suite file that wrote the folder (:func:`claim_results_folder`). A
    folder without one (the committed results) belongs to ``<project>/suites/<name>.yaml`` only, with
    ``<project>`` the folder that holds ``results/``; a missing or empty folder belongs to anyone."""
    folder, suite_path = suite.results_dir(), absolute(suite_path)
    marker = folder / RESULTS_MARKER
    if marker.is_file():
        owner = absolute(folder / marker.read_text(encoding="utf-8", errors="replace").strip())
    elif folder.is_dir() and any(folder.iterdir()):
        owner = folder.parent.parent / "suites" / f"{suite.name}.yaml"
    else:
        return
    if owner != suite_path and not (owner.is_file() and os.path.samefile(owner, suite_path)):
        raise UserError(
            f"{suite_path}: results folder {folder} holds the results of {owner}, not of this suite file; write them "
            "elsewhere with --output DIR (or rename the suite)"
        )


def claim_results_folder(suite: Suite, suite_path: Path) -> None:
    """Write ``results/<name>/SUITE``: the suite file, relative to the folder when it lies in the same project
    (a clone keeps it valid), else absolute."""
    folder, suite_path = suite.results_dir(), absolute(suite_path)
    folder.mkdir(parents=True, exist_ok=True)
    inside = suite_path.is_relative_to(folder.parent.parent)
    atomic_write(folder / RESULTS_MARKER, (os.path.relpath(suite_path, folder) if inside else str(suite_path)) + "\n")
