"""MkDocs hook: the reference pages of every registered attack, encoder and dataset, written at build time.

The pages are made from the registries themselves (each class's docstring, its pydantic ``Params`` fields, an
attack's declared ``ThreatModel``, an encoder's ``secret``, strength unit and release declarations), never committed, so they cannot go stale: a component added to the
package or installed as a plugin appears at the next ``mkdocs build``. ``mkdocs.yml`` loads this file under
``hooks:``; ``tests/test_docs.py`` builds the site with a plugin installed and checks every component is there.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from nonxfer_bench.core.registry import Registry, first_sentence

_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥", "max_length": "length ≤", "multiple_of": "multiple of"}


def type_text(annotation: Any) -> str:
    """A field's type as a reader of a suite sees it: ``int or None``, ``'clip' or 'minmax'``, ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    if origin is Annotated:  # a bounded item (list[Annotated[int, Field(ge=1)]]): its bounds are in the bounds column
        return type_text(args[0])
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in a suite (JSON, which YAML reads), or ``required``."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is PydanticUndefined:
        return "required"
    return json.dumps(to_jsonable_python(default))


def bounds_text(field: FieldInfo) -> str:
    """The field's numeric and length constraints (``> 0, ≤ 1``); empty when it has none."""
    bounds = []
    for constraint in field.metadata:
        for key, symbol in _BOUNDS.items():
            value = getattr(constraint, key, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return ", ".join(bounds)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") if text else "—"


def params_table(params: type[BaseModel]) -> str:
    """One row per declared parameter: name, type, default, bounds and the Field's description."""
    if not params.model_fields:
        return "No parameters.\n"
    rows = ["| parameter | type | default | bounds | description |", "|---|---|---|---|---|"]
    for name, field in params.model_fields.items():
        cells = [f"`{name}`", _cell(type_text(field.annotation)), f"`{default_text(field)}`", _cell(bounds_text(field)), _cell(field.description or "")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def docstring(cls: type) -> str:
    """The class docstring as Markdown (Sphinx roles and double backticks become code spans)."""
    text = inspect.getdoc(cls) or "(no docstring)"
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def threat_text(cls: type) -> str:
    """An attack's declared threat model and the runner-facing flags, as a short list."""
    threat = cls.threat
    uses = [what for what, used in (("released NEs", threat.released), ("public clean images", threat.public), ("labelled NEs", threat.labelled)) if used]
    lines = [
        f"- **tier**: `{threat.tier}` ({threat.text})",
        f"- **uses**: {', '.join(uses) if uses else 'nothing beyond the batch it attacks'}",
        f"- **model access**: `{threat.queries}`",
    ]
    flags = [flag for flag in ("baseline", "adapts_model", "cpu_only", "cache_outputs") if getattr(cls, flag, False)]
    if flags:
        lines.append(f"- **flags**: {', '.join(f'`{flag}`' for flag in flags)}")
    return "\n".join(lines) + "\n"


def component_section(registry: Registry, name: str) -> str:
    """The reference entry of one component: heading, source, docstring, threat model, parameters."""
    cls = registry.get(name)
    plugin = f" (plugin: `{registry.plugins[name]}`)" if name in registry.plugins else ""
    parts = [f"## `{name}` {{ #{name} }}\n", f"`{cls.__module__}.{cls.__qualname__}`{plugin}\n", docstring(cls) + "\n"]
    if hasattr(cls, "threat"):
        parts.append("**Threat model**\n\n" + threat_text(cls))
    if hasattr(cls, "secret"):
        parts.append(f"**Threat model**: {cls.secret or '(not declared)'}\n")
    if hasattr(cls, "strength_unit"):
        parts.append(f"**Strength**: {cls.strength_unit}\n")
    if hasattr(cls, "in_unit_range"):
        values = "within [0, 1]" if cls.in_unit_range else "unclipped ([0, 1] pixel units that may leave [0, 1])"
        keys = "another release for every key (generator seed)" if cls.keyed else "the same release for every key"
        parts.append(f"**Release**: {values}; {keys}\n")
    parts.append("**Parameters**\n\n" + params_table(cls.Params))
    return "\n".join(parts)


def reference_page(registry: Registry, title: str, intro: str) -> str:
    """A whole reference page: an index table, then one section per registered component, sorted by name."""
    names = registry.names()
    tier = hasattr(registry.get(names[0]), "threat") if names else False
    header = "| name | tier | summary |\n|---|---|---|" if tier else "| name | summary |\n|---|---|"
    rows = [header]
    for name in names:
        cls = registry.get(name)
        cells = [f"[`{name}`](#{name})"] + ([f"`{cls.threat.tier}`"] if tier else []) + [_cell(first_sentence(cls.__doc__))]
        rows.append("| " + " | ".join(cells) + " |")
    generated = "Generated from the registry when the site is built (`docs/gen_reference.py`), plugins included."
    sections = "\n".join(component_section(registry, name) for name in names)
    by_tier = tier_table(registry) if tier else ""
    return f"# {title}\n\n{intro}\n\n{generated}\n\n" + "\n".join(rows) + "\n\n" + by_tier + sections


def tier_table(registry: Registry) -> str:
    """The attacks of each knowledge tier, in the ladder's order (tiers no attack declares are left out)."""
    tiers = {name: registry.get(name).threat.tier for name in registry.names()}
    rows = ["## By knowledge tier { #by-tier }\n", "| tier | attacks |", "|---|---|"]
    for tier in type(next(iter(tiers.values()))):
        members = [f"[`{name}`](#{name})" for name, declared in tiers.items() if declared == tier]
        if members:
            rows.append(f"| `{tier}` | {', '.join(members)} |")
    return "\n".join(rows) + "\n\n"


def pages() -> dict[str, str]:
    """Path under docs/ -> Markdown, for every registry."""
    from nonxfer_bench.attacks.base import ATTACKS
    from nonxfer_bench.datasets.base import DATASETS
    from nonxfer_bench.encoders.base import ENCODERS

    return {
        "reference/attacks.md": reference_page(
            ATTACKS, "Attacks", "Every attack maps a common strength in [0, 1] (0 mildest, 1 harshest) to its own parameter; "
            "its threat model says what the attacker knows and uses ([threat tiers](../concepts/threat-models.md))."),
        "reference/encoders.md": reference_page(
            ENCODERS, "Encoders", "An encoder turns clean images into a release for one authorized model; its threat model says what "
            "the owner keeps secret and what the release assumes, its strength unit whether a strength is a standard PSNR target "
            "([which PSNR](../concepts/psnr.md)), and every release reports the standard PSNR it achieved "
            "([adding a protection](../tutorial/add-a-protection.md))."),
        "reference/datasets.md": reference_page(
            DATASETS, "Datasets", "A dataset decodes images to uint8 tensors with labels (-1: unlabeled); a suite names it under `dataset:` "
            "with these parameters."),
    }  # fmt: skip


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated reference pages to the site's files."""
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
