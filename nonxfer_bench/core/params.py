"""The one strict base for every parameter and schema model, and the one way a pydantic error becomes a message.

An unknown key is an error, never ignored; a validation error names the key that is wrong, what is wrong
with it and, for an unknown key, the keys that would be valid there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from nonxfer_bench.core.errors import excerpt

# what pydantic puts before the text of an error raised in a validator (ValueError, assert)
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


MAX_STRENGTH = 1000.0  # |encoder strength| in dB: far beyond any meaningful PSNR (suite and --strength)
MAX_TRAIN_STEPS = 10_000_000  # DDPM training steps (config and --steps)


class Strict(BaseModel):
    """A pydantic model that refuses keys it does not declare (a typo in a suite is an error) and infinite or
    NaN numbers (no parameter means anything at infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Strict):
    """Parameters of a component that takes none."""


def describe_error(error: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(key path, one-line message) for the most specific problem of a validation of ``model``.

    The key path reads like the file (``attacks[0].params.sigma``; empty for the model as a whole); the
    message has pydantic's validator prefixes removed and, for a key that is there, the offending value.
    """
    first = max(error.errors(), key=lambda e: len(e["loc"]))  # the most specific of a union's errors
    loc = first["loc"]
    if first["type"] == "extra_forbidden":
        fields = _fields_at(model, tuple(p for p in loc[:-1] if not (isinstance(p, str) and "[" in p)))
        return key_path(loc), f"unknown key; valid keys here: {', '.join(fields)}" if fields else "unknown key"
    message = first["msg"]
    for prefix in _VALIDATOR_PREFIXES:
        message = message.removeprefix(prefix)
    if loc and "input" in first and first["type"] != "missing":  # a model-level error's input is everything
        message = f"{message} (got {excerpt(first['input'])})"
    return key_path(loc), message


def key_path(loc: tuple) -> str:
    """A pydantic error location as a key path: ``attacks[0].strengths``; union member tags are skipped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool"):  # a union member's tag, not a key
            continue
        else:
            name = str(part) if len(str(part)) <= 40 and str(part).isprintable() else excerpt(str(part), 40)
            path += f".{name}" if path else name
    return path


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model at ``loc`` inside ``model`` (for 'valid keys' hints)."""
    current: Any = model
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
