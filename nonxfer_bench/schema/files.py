"""Reading YAML files into schema models: every problem is one line naming the file, the key and what is valid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nonxfer_bench.core.errors import UserError


def key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool"):  # a union member's tag, not a key
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def pydantic_message(error: Any) -> str:
    """An entry of ``ValidationError.errors()`` as a user reads it: without pydantic's "Value error, " or
    "Assertion failed, " prefix, which names a Python exception class, not the problem."""
    return re.sub(r"^(Value error|Assertion failed), ", "", error["msg"])


def read_yaml(path: Path) -> Any:
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


def validate(cls: type[BaseModel], data: Any, path: Path) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        first = max(error.errors(), key=lambda e: len(e["loc"]))  # the most specific of a union's errors
        key = key_path(first["loc"])
        message = pydantic_message(first)
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


def resolve_path(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)

