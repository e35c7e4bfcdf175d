"""The benchmark's unit of output: one cell = (encoding, attack step, evaluated model) and what was measured.

The runner produces :class:`Cell` objects; the cell store, leaderboards, tracking, theory tables and the
MLflow read-back consume them. On disk a cell is one flat JSON record (:meth:`Cell.record`): the
layout of schema 1 (stores written before cells were typed) plus ``schema``, ``baseline`` and, from
schema 2 on, the per-image ``outcomes``. :meth:`Cell.from_record` reads both schemas.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nonxfer_bench.core.params import MAX_IMAGES

SCHEMA = 2
MAX_DRAWS = 1000  # stochastic draws of one cell (the largest 'draws' an attack takes)
BOUND_PREFIX = "bound/"


class Role(StrEnum):
    """What an evaluated model is for one encoding: the one it was made for, another one, or a control."""

    AUTHORIZED = "authorized"
    UNAUTHORIZED = "unauthorized"
    CONTROL = "control"  # e.g. a random-weight twin: shown, never counted as unauthorized


def pack_bits(flags: np.ndarray) -> str:
    """Booleans (one per image) as base64 of their packed bits: 10,000 images take 1,668 characters."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def packed_bytes(count: int) -> int:
    """How many bytes :func:`pack_bits` makes of ``count`` booleans."""
    return -(-count // 8)


def unpack_bits(text: str, count: int) -> np.ndarray:
    """The ``count`` booleans that :func:`pack_bits` packed."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=count).astype(bool)


class Outcomes(BaseModel):
    """Per-image results of one cell, per attack draw, so that every aggregate can carry n and an interval
    and two cells over the same images can be compared by a paired test.

    ``images`` is the number of evaluated images and ``ids`` a hash of their dataset indices (equal ids:
    the same images in the same order). ``correct[d]`` and ``agree[d]`` are packed bits for draw d
    (:func:`pack_bits`); ``labeled`` marks the images that have a label (absent: all of them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: int = Field(ge=0, le=MAX_IMAGES)
    ids: str
    correct: list[str] = Field(min_length=1, max_length=MAX_DRAWS)
    agree: list[str] = Field(min_length=1, max_length=MAX_DRAWS)
    labeled: str | None = None

    @model_validator(mode="after")
    def _packs_images_bits(self) -> "Outcomes":
        """Every packed string holds the bits of ``images`` images, one per draw in ``correct`` and ``agree``: a
        record that claims another size is refused before anything is unpacked (10**12 images would be a terabyte)."""
        if len(self.correct) != len(self.agree):
            raise ValueError(f"{len(self.correct)} draws of 'correct' but {len(self.agree)} of 'agree'")
        length = 4 * -(-packed_bytes(self.images) // 3)  # base64 of ceil(images / 8) bytes
        packed = [("correct", i, text) for i, text in enumerate(self.correct)] + [
            ("agree", i, text) for i, text in enumerate(self.agree)
        ]
        for name, i, text in packed + ([("labeled", None, self.labeled)] if self.labeled is not None else []):
            if len(text) != length:
                where = name if i is None else f"{name}[{i}]"
                raise ValueError(
                    f"'{where}' holds {len(text):,} base64 characters, {self.images:,} images pack into {length:,}"
                )
        return self

    def correct_bits(self, draw: int = 0) -> np.ndarray:
        return unpack_bits(self.correct[draw], self.images)

    def agree_bits(self, draw: int = 0) -> np.ndarray:
        return unpack_bits(self.agree[draw], self.images)

    def labeled_bits(self) -> np.ndarray:
        return np.ones(self.images, dtype=bool) if self.labeled is None else unpack_bits(self.labeled, self.images)


# how a run computed a cell, not what it measured
RUN_METADATA = frozenset({"attack_seconds", "device", "threads", "code"})
# what fitted attacks found, in records written before it had its own field (``attack_measured``): there the
# attacks put it into ``attack_param``, and reading such a record moves these entries out
LEGACY_MEASURED = frozenset({"ratio", "chosen", "authorized_rank", "ranking", "fold_gain", "clean_energy_in_vn"})


class Cell(BaseModel):
    """One finished cell. ``baseline`` marks the no-attack step (a property of the attack, not its name).

    Equality ignores :data:`RUN_METADATA` (wall seconds, device, threads, code): the same cell computed by another run,
    executor or from cached attack outputs is the same cell.
    """

    model_config = ConfigDict(extra="forbid")

    key: str
    suite: str
    group: str
    authorized: str
    encoder: str
    strength: float
    seed: int
    storage: str = "float32"
    precision: str = Field("fp32", description="the models' precision (part of the key when not fp32)")
    attack: str
    attack_strength: float
    attack_param: dict[str, Any] = Field({}, description="the attack's settings at this strength (Attack.parameter)")
    attack_measured: dict[str, Any] = Field(
        {}, description="what the attack's fit found on this release (Attack.measured)"
    )
    attack_config: dict[str, Any] = Field(
        {}, description="the suite's params of this attack entry: tells two entries of one attack apart"
    )
    baseline: bool
    model: str
    role: Role
    n: int = Field(ge=0, le=MAX_IMAGES)
    n_labeled: int | None = Field(None, ge=0, le=MAX_IMAGES)
    draws: int = Field(1, ge=1, le=MAX_DRAWS)
    accuracy: float | None = Field(None, ge=0, le=1)
    accuracy_worst: float | None = None
    accuracy_spread: float | None = None
    accuracy_draws: list[float] | None = None
    agreement: float | None = Field(None, ge=0, le=1)
    agreement_worst: float | None = None
    agreement_spread: float | None = None
    agreement_draws: list[float] | None = None
    accuracy_flat: float | None = None
    encoded_psnr: float | None = None
    encoded_psnr_min: float | None = None
    stored_psnr: float | None = None
    attacked_psnr: float | None = None
    attacked_ssim: float | None = None
    encoder_info: dict[str, Any] = {}
    # the attack's threat model and what it spent (None in stores written before they were recorded)
    tier: str | None = Field(None, description="knowledge tier of the attack (nonxfer_bench.attacks.threat.Tier)")
    budget_released: int | None = Field(None, description="released NEs the attack observed")
    budget_labelled: int | None = Field(None, description="labelled NEs the attack trained on")
    budget_public: int | None = Field(None, description="clean public images the attack used")
    attack_seconds: float | None = Field(
        None,
        description="wall seconds of the attack stage for this step over the group (fit, attack, adapt; 0 for outputs "
        "read from the cache)",
    )
    device: str | None = Field(None, description="device type the attack ran on")
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="torch CPU threads the cell was computed with: float sums, and so a trained attack's bits, "
        "depend on them (a replay uses the same number)",
    )
    code: str | None = Field(
        None, description="the code that computed the cell (nonxfer_bench.core.version.code_version)"
    )
    bounds: dict[str, Any] = Field({}, description="bound-tightness numbers of a baseline cell, named bound/...")
    outcomes: Outcomes | None = Field(None, description="per-image results; None in stores of schema 1")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return self.model_dump(exclude=set(RUN_METADATA)) == other.model_dump(exclude=set(RUN_METADATA))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Cell:
        """A cell from its JSON record, of schema 1 (untyped, before 'schema' existed) or 2."""
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        schema = record.get("schema", 1)
        if schema not in (1, SCHEMA):
            raise ValueError(f"cell schema {schema!r} is not one this version reads (1 or {SCHEMA})")
        fields = {k: v for k, v in record.items() if k != "schema" and not k.startswith(BOUND_PREFIX)}
        fields["bounds"] = {k: v for k, v in record.items() if k.startswith(BOUND_PREFIX)}
        if schema == 1:  # the only place the identity attack is known by its name: old records lack the flag
            fields["baseline"] = record.get("attack") == "identity"
        if "attack_measured" not in record and isinstance(fields.get("attack_param"), dict):
            settings = fields["attack_param"]
            fields["attack_param"] = {k: v for k, v in settings.items() if k not in LEGACY_MEASURED}
            fields["attack_measured"] = {k: v for k, v in settings.items() if k in LEGACY_MEASURED}
        return cls.model_validate(fields)

    def record(self) -> dict[str, Any]:
        """The flat JSON record: schema-1 keys as they were (bound numbers flat), plus schema and outcomes."""
        data = self.model_dump(mode="json", exclude={"bounds", "outcomes"}, exclude_none=False)
        for key in ("n_labeled", "accuracy_flat", "accuracy_worst", "accuracy_spread", "accuracy_draws",
                    "agreement_worst", "agreement_spread", "agreement_draws", "tier", "budget_released",
                    "budget_labelled", "budget_public", "attack_seconds", "device", "threads", "code"):  # fmt: skip
            if data[key] is None:
                data.pop(key)  # written only when they apply, as schema 1 did
        if data["precision"] == "fp32":
            data.pop("precision")  # fp32 records keep the layout they always had
        for key in ("attack_config", "attack_measured"):
            if not data[key]:
                data.pop(key)
        data |= self.bounds
        data["schema"] = SCHEMA
        if self.outcomes is not None:
            data["outcomes"] = self.outcomes.model_dump(mode="json", exclude_none=True)
        return data
