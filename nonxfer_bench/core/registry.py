"""One small registry mechanism for attacks, encoders and datasets (decorator + entry points).

Like timm's ``register_model``: built-in components register with a decorator when their module is
imported, and every module of the registry's package is imported (found on disk, not listed: a new file is a new
component); third-party packages register through an ``importlib.metadata`` entry-point group whose
entries point at a module (importing it runs the decorators) or at the class itself. A plugin that
fails to import is reported in one line naming its entry point and the error, and skipped: the
built-in components and the other plugins keep working.
"""

from __future__ import annotations

import pkgutil
import re
import sys
from importlib import import_module, metadata
from typing import Any, Callable, Generic, TypeVar

from pydantic import ValidationError

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import describe_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to component classes; each class declares a pydantic ``Params`` model."""

    def __init__(self, kind: str, package: str | None, entry_point_group: str) -> None:
        self.kind = kind
        self._package = (
            package  # its modules hold the built-in components (those named _* hold none); None: no built-ins
        )
        self._entry_point_group = entry_point_group
        self._classes: dict[str, type[T]] = {}
        self._loaded = False
        self.broken: dict[str, str] = {}  # entry point "name = value" -> the error that stopped its import
        self.plugins: dict[str, str] = {}  # component name -> the distribution that registered it

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@ATTACKS.register("jpeg_pil")``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in pkgutil.iter_modules(import_module(self._package).__path__) if self._package else ():
            if not module.name.startswith("_"):
                import_module(f"{self._package}.{module.name}")
        for entry in metadata.entry_points(group=self._entry_point_group):
            before = set(self._classes)
            try:
                loaded = entry.load()
                if isinstance(loaded, type) and entry.name not in self._classes:
                    self.register(entry.name)(loaded)
            except Exception as error:  # a plugin's bug or missing dependency must not stop every command
                label = f"{entry.name} = {entry.value}"
                lines = str(error).strip().splitlines()
                self.broken[label] = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
                print(
                    f"nonxfer-bench: warning: {self.kind} plugin {label!r} (entry point group "
                    f"{self._entry_point_group}) failed to import and is skipped: {self.broken[label]}",
                    file=sys.stderr,
                )
                continue
            distribution = getattr(entry, "dist", None)
            for name in set(self._classes) - before:
                self.plugins[name] = distribution.name if distribution is not None else entry.value

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._classes:
            broken = f"; plugins that failed to import: {', '.join(self.broken)}" if self.broken else ""
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}{broken}")
        return self._classes[name]

    def create(self, name: str, params: dict[str, Any] | None = None) -> T:
        """Instantiate a registered component with validated parameters; bad ones are a one-line UserError."""
        cls = self.get(name)
        model = cls.Params  # type: ignore[attr-defined]
        try:
            validated = model.model_validate(params or {})
        except ValidationError as error:
            key, message = describe_error(error, model)
            where = f"parameter '{key}': " if key else ""
            raise UserError(f"{self.kind} {name!r}: {where}{message}") from None
        return cls(validated)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line, with RST markup removed."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    paragraph = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", paragraph)  # :class:`Name` -> Name
    paragraph = paragraph.replace("``", "").replace("`", "")
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph, maxsplit=1)[0]


def parameter_defaults(params_cls: Any) -> list[str]:
    """``name=default`` for each declared parameter (``name (required)`` without a default)."""
    out = []
    for name, field in params_cls.model_fields.items():
        if field.is_required():
            out.append(f"{name} (required)")
        else:
            default = field.get_default(call_default_factory=True)
            out.append(
                f"{name}={default.model_dump(exclude_defaults=True) if hasattr(default, 'model_dump') else default!r}"
            )
    return out
