"""One small registry mechanism for attacks, encoders and datasets (decorator + entry points).

Like timm's ``register_model``: built-in components register with a decorator when their module is
imported; third-party packages register through an ``importlib.metadata`` entry-point group whose
entries point at a module (importing it runs the decorators) or at the class itself.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any, Callable, Generic, TypeVar

from pydantic import ValidationError

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import describe_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to component classes; each class declares a pydantic ``Params`` model."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...], entry_point_group: str) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._entry_point_group = entry_point_group
        self._classes: dict[str, type[T]] = {}
        self._loaded = False

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
        for module in self._builtin_modules:
            import_module(module)
        for entry in metadata.entry_points(group=self._entry_point_group):
            loaded = entry.load()
            if isinstance(loaded, type) and entry.name not in self._classes:
                self.register(entry.name)(loaded)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._classes:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
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
