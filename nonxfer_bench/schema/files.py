"""Reading YAML files into schema models: every problem is one line naming the file, the key and what is valid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.core.params import describe_error
from nonxfer_bench.core.reading import open_regular

MAX_YAML_CHARACTERS = 1 << 20  # suites and zoo files are a few KB
MAX_YAML_VALUES = 100_000  # values after alias expansion; the largest shipped suite has a few hundred
MAX_YAML_DEPTH = 64  # nested [ ] / { } levels; PyYAML's scanner slows down quadratically with them
_QUOTED_OR_COMMENT = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"|(?:^|\s)#[^\n]*")


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only, never Python objects) that refuses duplicate keys, which it
    would otherwise resolve silently in favour of the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {excerpt(key_node.value)}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a document whose expansion (every alias followed) has more than ``MAX_YAML_VALUES`` values, or
    an alias that contains itself: pydantic would walk every expanded copy (a "billion laughs" file under
    1 KB). Iterative and linear in the number of distinct nodes."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_VALUES:
                raise UserError(
                    f"{where}: expands to more than {MAX_YAML_VALUES:,} values through YAML aliases; refusing to read "
                    "it"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UserError(
                f"{where}: line {node.start_mark.line + 1}: a YAML alias contains itself; refusing to read it"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` within bounds (size, alias expansion, nesting, no duplicate keys); every problem is
    one :class:`UserError` naming ``where``."""
    if len(text) > MAX_YAML_CHARACTERS:
        raise UserError(
            f"{where}: {len(text):,} characters; a suite, zoo or config file has at most {MAX_YAML_CHARACTERS:,}"
        )
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _QUOTED_OR_COMMENT.sub("", text)):
        depth = depth + 1 if bracket in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    if deepest > MAX_YAML_DEPTH:
        raise UserError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels; refusing to read it")
    loader = None
    try:
        loader = _SafeLoader(text)  # its reader refuses control characters (ESC ...) at once, with a YAMLError
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise UserError(f"{where}: nested too deeply; refusing to read it") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(error, "problem", None) or error)
        raise UserError(
            f"{where}:{line} not valid YAML ({problem if len(problem) <= 160 else problem[:157] + '...'})"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> Any:
    """A suite, zoo or config file, read with :func:`parse_yaml`'s bounds: a regular file (a FIFO or a device is one
    line, never a hang), of which at most ``4 * MAX_YAML_CHARACTERS`` bytes are read (its size as stat reports it
    can be 0 for files that are generated on reading)."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    limit = 4 * MAX_YAML_CHARACTERS
    with open_regular(path, "give a suite, zoo or config file (YAML)") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UserError(
            f"{path}: more than {limit:,} bytes; a suite, zoo or config file has at most {MAX_YAML_CHARACTERS:,} "
            "characters"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    return parse_yaml(text, str(path))


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
