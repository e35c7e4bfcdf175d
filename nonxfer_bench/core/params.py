"""The one strict base for every parameter and schema model, and the one way a pydantic error becomes a message.

An unknown key is an error, never ignored; a validation error names the key that is wrong, what is wrong
with it and, for an unknown key, the keys that would be valid there. Every numeric parameter of a component
declares a lower and an upper bound (:func:`unbounded` finds those that do not); a parameter whose valid values
depend on the suite carries a :class:`SuiteBound` marker that the loader checks (zoo model names, the
authorized models' input dimension).
"""

from __future__ import annotations

from typing import Annotated, Any, Iterator, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from nonxfer_bench.core.errors import excerpt

# what pydantic puts before the text of an error raised in a validator (ValueError, assert)
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


MAX_STRENGTH = 1000.0  # |encoder strength| in dB: far beyond any meaningful PSNR (suite and --strength)
MAX_TRAIN_STEPS = 10_000_000  # DDPM training steps (config and --steps)
# Bounds shared by component parameters: every numeric parameter has a lower and an upper bound, so an absurd
# value (1e300, 10**18) is one line at load instead of hours of work or an allocation that cannot succeed.
MAX_IMAGES = 10**9  # a count of images (a budget, a training set): the largest dataset limit
MAX_ITERATIONS = 10_000  # epochs, optimizer or sampler steps, solver iterations
MAX_LR = 10.0  # a learning rate
MAX_KERNEL = 4096  # a window, stride or padding in pixels: the largest model input side


class Strict(BaseModel):
    """A pydantic model that refuses keys it does not declare (a typo in a suite is an error) and infinite or
    NaN numbers (no parameter means anything at infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Strict):
    """Parameters of a component that takes none."""


class SuiteBound:
    """Marks a parameter that the loader checks against the suite it is in (``Annotated[int, INPUT_DIMENSION]``),
    beyond the bounds the parameter declares itself; :func:`marked` finds its values."""


ZOO_MODEL = SuiteBound()  # the name of a model of the suite's zoo
INPUT_DIMENSION = SuiteBound()  # at most the input dimension (C x H x W) of every authorized model
ZooModelName = Annotated[str, Field(min_length=1, max_length=128), ZOO_MODEL]


def marked(params: BaseModel, bound: SuiteBound, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every value ``params`` holds in a field marked with ``bound``, nested models included;
    a list field gives one pair per item (``candidates[2]``), an unset optional field none."""
    for name, field in type(params).model_fields.items():
        value, key = getattr(params, name), f"{prefix}{name}"
        if bound in field.metadata or _holds(field.annotation, bound):
            items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
            yield from ((key if i is None else f"{key}[{i}]", item) for i, item in items if item is not None)
        elif isinstance(value, BaseModel):
            yield from marked(value, bound, f"{key}.")


def _holds(annotation: Any, bound: SuiteBound) -> bool:
    return any(arg is bound or _holds(arg, bound) for arg in get_args(annotation))


def unbounded(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Key paths of the numeric parameters of ``model`` that lack a lower or an upper bound (``ge``/``gt`` and
    ``le``/``lt``): in the field itself, in optional values, tuple and list items, dict values and nested models."""
    return [
        path
        for name, field in model.model_fields.items()
        for path in _unbounded(field.annotation, field.metadata, f"{prefix}{name}")
    ]


def _unbounded(annotation: Any, metadata: list, key: str) -> list[str]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _unbounded(args[0], [*metadata, *args[1:]], key)
    if annotation in (int, float):
        limits = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        lower = any(getattr(m, "ge", None) is not None or getattr(m, "gt", None) is not None for m in limits)
        upper = any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in limits)
        return [] if lower and upper else [key]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return unbounded(annotation, f"{key}.")
    if origin is Literal:
        return []
    if origin is dict:
        return _unbounded(args[1], [], f"{key}.*")
    if origin in (list, tuple):
        return [path for arg in args if arg is not Ellipsis for path in _unbounded(arg, [], f"{key}[]")]
    return [path for arg in args for path in _unbounded(arg, metadata, key)]  # a union: each member


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
