"""The work graph of a suite: encodings x attacks x evaluated models, each cell keyed by a hash.

A cell's key hashes its resolved configuration (dataset, both models' identities including weight
hashes, encoder and attack names, parameters and code versions, strengths, seed), so a finished cell
is recognized in any later run and a changed one is recomputed. The clean images (encoder ``clean``, every plan's
reference) face only the no-attack step: no table reads an attack on them. A group's random draws are seeded by the
hash of what its encoder's ``draw_identity`` keeps of that configuration: all of it, but for ``stored_release``, which
leaves out where its folders lie.

An encoder or attack from a plugin (an entry point of another distribution, ``Registry.plugins``) is not
covered by the package's version: its identity also holds ``source``, a hash of its code (:func:`plugin_source`),
so editing an out-of-tree plugin recomputes its cells and only those. Built-in components have no ``source``:
their keys are those of every committed cell.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import nonxfer_bench
from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.hashing import stable_hash
from nonxfer_bench.core.registry import Registry
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.schema.settings import RunSettings
from nonxfer_bench.schema.suite import AttackSpec, EncoderSpec, Suite

CLEAN = EncoderSpec(name="clean", strengths=[0.0])


@dataclass(frozen=True, eq=False)
class AttackStep:
    """One attack at one strength; shared by all groups of a plan (hashed by identity)."""

    spec: AttackSpec
    strength: float

    @property
    def label(self) -> str:
        return f"{self.spec.name}@{self.strength:g}"


@dataclass
class EncodingGroup:
    """One encoding (authorized model, encoder, strength, seed) and every cell that depends on it."""

    authorized: str
    encoder: EncoderSpec
    strength: float
    seed: int
    key: str
    cells: dict[tuple[AttackStep, str], str] = field(default_factory=dict)
    storage: str = "float32"  # how the release is stored (nonxfer_bench.storage.formats); float32 is lossless
    draw_key: str = ""  # seeds the draws of encoder and attacks: the float32 key of Encoder.draw_identity
    precision: str = "fp32"  # the models' precision; not fp32 is part of every key of the group

    def __post_init__(self) -> None:
        self.draw_key = self.draw_key or self.key

    @property
    def label(self) -> str:
        strength = "" if self.encoder.name == "clean" else f"@{self.strength:g}"
        storage = "" if self.storage == "float32" else f"/{self.storage}"
        precision = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.authorized}/{self.encoder.name}{strength}/seed{self.seed}{storage}{precision}"


def plugin_files(cls: type) -> list[tuple[str, Path]]:
    """The source files a plugin component's results depend on, as (name, path): every ``.py`` file under the
    top-level package of the module that defines ``cls`` (``my_protections`` for ``my_protections.noise.Uniform``,
    subpackages included; names relative to the package's folder), or that module's own file when the top level is
    a single module. Not hashed: data files, and code of other distributions (give a dependency's version in
    ``Params`` or bump ``version`` when it matters)."""
    top = import_module(cls.__module__.partition(".")[0])
    folders = getattr(top, "__path__", None)
    if folders is not None:
        return sorted(
            (f"{top.__name__}/{path.relative_to(folder).as_posix()}", path)
            for folder in folders
            for path in Path(folder).rglob("*.py")
        )
    try:
        source = inspect.getsourcefile(top)
    except TypeError:
        source = None
    if source is None:
        raise UserError(
            f"plugin {cls.__module__}.{cls.__qualname__}: no source file to hash, so its cells could not be "
            "recomputed when it changes"
        )
    return [(Path(source).name, Path(source))]


def plugin_source(cls: type) -> str:
    """sha256 over the :func:`plugin_files` of a plugin component, each as its name and its contents' sha256: the
    same code gives the same hash wherever it is installed."""
    digest = hashlib.sha256()
    for name, path in plugin_files(cls):
        digest.update(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def component_identity(registry: Registry, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a cell key holds of an encoder or attack: name, params and version, and for a plugin's also ``source``."""
    cls = registry.get(name)
    identity = {"name": name, "params": params, "version": cls.version}
    if name in registry.plugins:
        identity["source"] = plugin_source(cls)
    return identity


def plan_suite(
    suite: Suite, settings: RunSettings | None = None, identities: dict[str, dict] | None = None
) -> list[EncodingGroup]:
    """Expand a suite, run with ``settings`` (default: as its file says), into encoding groups, each with its
    (attack step, evaluated model) -> cell key. ``identities``: each model's :meth:`ModelSpec.identity` as recorded
    elsewhere (a result bundle's), in place of the weight files' here."""
    settings = settings or RunSettings.of(suite)
    identities = identities or {model.name: model.identity() for model in suite.models}
    dataset = settings.dataset(suite).model_dump(mode="json")
    # what informed attackers hold changes their cells; suites without it keep their keys
    public = {"public": suite.public.model_dump(mode="json")} if suite.public else {}
    attack_ids = [
        component_identity(ATTACKS, spec.name, spec.params) for spec in suite.attacks
    ]  # plugins' files hashed once
    steps = [
        (AttackStep(spec, s), attack_id) for spec, attack_id in zip(suite.attacks, attack_ids) for s in spec.strengths
    ]
    clean_steps = [
        (step, attack_id) for step, attack_id in steps if ATTACKS.get(step.spec.name).baseline
    ]  # the tables read only no attack of the clean images
    encoders = ([] if any(e.name == "clean" for e in suite.encoders) else [CLEAN]) + list(suite.encoders)
    draws, precision = settings.draws, settings.precision
    groups = []
    for authorized in suite.authorized:
        for encoder in encoders:
            encoder_id = component_identity(ENCODERS, encoder.name, encoder.params)
            draw_identity = ENCODERS.get(encoder.name).draw_identity
            strengths = [0.0] if encoder.name == "clean" else encoder.strengths
            for strength in strengths:
                for seed, storage in ((seed, storage) for seed in suite.seeds for storage in suite.storage):
                    base = {
                        "code": nonxfer_bench.__version__,
                        "dataset": dataset,
                        **public,
                        "authorized": identities[authorized],
                        "encoder": encoder_id,
                        "strength": strength,
                        "seed": seed,
                    }
                    if draws != "cpu":  # CUDA's generators draw other numbers: other cells (CPU keys unchanged)
                        base["draws"] = draws
                    draw_key = stable_hash(draw_identity(base))
                    if storage != "float32":  # float32 (lossless) keeps the keys of suites without 'storage'
                        base["storage"] = storage
                    if precision != "fp32":  # fp32 keeps every existing key; the same draws either way
                        base["precision"] = precision
                    group = EncodingGroup(
                        authorized,
                        encoder,
                        strength,
                        seed,
                        stable_hash(base),
                        storage=storage,
                        draw_key=draw_key,
                        precision=precision,
                    )
                    for step, attack_id in steps if encoder.name != "clean" else clean_steps:
                        for model in suite.models:
                            cell = {
                                **base,
                                "attack": attack_id,
                                "attack_strength": step.strength,
                                "model": identities[model.name],
                            }
                            if suite.role(model.name, authorized) == "control":  # stored with its role
                                cell["role"] = "control"
                            if (
                                not settings.bounds and ATTACKS.get(step.spec.name).baseline
                            ):  # a bounds-on run never reuses it
                                cell["bounds"] = False
                            group.cells[(step, model.name)] = stable_hash(cell)
                    if group.cells:  # the clean images of a suite without a no-attack step hold no cell
                        groups.append(group)
    return groups


def stored_plan(
    suite: Suite, settings: RunSettings, draws: str | None, identities: dict[str, dict] | None = None
) -> list[EncodingGroup]:
    """The plan of cells computed elsewhere: with the draws (``cpu``/``cuda``) they record
    (:func:`~nonxfer_bench.cells.store.draws`),
    else this run's; ``identities`` as for :func:`plan_suite`."""
    return plan_suite(suite, settings.on(draws) if draws and draws != settings.draws else settings, identities)
