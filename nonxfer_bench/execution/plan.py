"""The work graph of a suite: encodings x attacks x evaluated models, each cell keyed by a hash.

A cell's key hashes its resolved configuration (dataset, both models' identities including weight
hashes, encoder and attack names, parameters and code versions, strengths, seed), so a finished cell
is recognized in any later run and a changed one is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nonxfer_bench
from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.core.hashing import stable_hash
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
    draw_key: str = ""  # seeds the encoder's and attacks' draws: the float32 group's key, so storages share draws
    precision: str = "fp32"  # the models' precision; not fp32 is part of every key of the group

    def __post_init__(self) -> None:
        self.draw_key = self.draw_key or self.key

    @property
    def label(self) -> str:
        strength = "" if self.encoder.name == "clean" else f"@{self.strength:g}"
        storage = "" if self.storage == "float32" else f"/{self.storage}"
        precision = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.authorized}/{self.encoder.name}{strength}/seed{self.seed}{storage}{precision}"


def plan_suite(suite: Suite, settings: RunSettings | None = None, identities: dict[str, dict] | None = None) -> list[EncodingGroup]:
    """Expand a suite, run with ``settings`` (default: as its file says), into encoding groups, each with its
    (attack step, evaluated model) -> cell key. ``identities``: each model's :meth:`ModelSpec.identity` as recorded
    elsewhere (a result bundle's), in place of the weight files' here."""
    settings = settings or RunSettings.of(suite)
    identities = identities or {model.name: model.identity() for model in suite.models}
    dataset = settings.dataset(suite).model_dump(mode="json")
    # what informed attackers hold changes their cells; suites without it keep their keys
    public = {"public": suite.public.model_dump(mode="json")} if suite.public else {}
    steps = [AttackStep(spec, s) for spec in suite.attacks for s in spec.strengths]
    encoders = ([] if any(e.name == "clean" for e in suite.encoders) else [CLEAN]) + list(suite.encoders)
    draws, precision = settings.draws, settings.precision
    groups = []
    for authorized in suite.authorized:
        for encoder in encoders:
            encoder_id = {"name": encoder.name, "params": encoder.params, "version": ENCODERS.get(encoder.name).version}
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
                    draw_key = stable_hash(base)
                    if storage != "float32":  # float32 (lossless) keeps the keys of suites without 'storage'
                        base["storage"] = storage
                    if precision != "fp32":  # fp32 keeps every existing key; the same draws either way
                        base["precision"] = precision
                    group = EncodingGroup(authorized, encoder, strength, seed, stable_hash(base), storage=storage, draw_key=draw_key, precision=precision)
                    for step in steps:
                        attack_id = {"name": step.spec.name, "params": step.spec.params, "version": ATTACKS.get(step.spec.name).version}
                        for model in suite.models:
                            cell = {**base, "attack": attack_id, "attack_strength": step.strength, "model": identities[model.name]}
                            if suite.role(model.name, authorized) == "control":  # stored with its role
                                cell["role"] = "control"
                            if not settings.bounds and ATTACKS.get(step.spec.name).baseline:  # a bounds-on run never reuses it
                                cell["bounds"] = False
                            group.cells[(step, model.name)] = stable_hash(cell)
                    groups.append(group)
    return groups


def stored_plan(suite: Suite, settings: RunSettings, draws: str | None, identities: dict[str, dict] | None = None) -> list[EncodingGroup]:
    """The plan of cells computed elsewhere: with the draws (``cpu``/``cuda``) they record (:func:`~nonxfer_bench.cells.store.draws`),
    else this run's; ``identities`` as for :func:`plan_suite`."""
    return plan_suite(suite, settings.on(draws) if draws and draws != settings.draws else settings, identities)
