"""Reading YAML files into schema models: every problem is one line naming the file, the key and what is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import describe_error


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
        key, message = describe_error(error, cls)
        raise UserError(f"{path}: key '{key or '(top level)'}': {message}") from None


def resolve_path(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)

