"""The type registry: which Pydantic models may live on the blackboard, under which names.

A registered type has a stable, unique name: ``module.QualName`` by default, so two classes
called ``Idea`` in different modules never collide; ``@flock_type(name="Idea")`` picks a
shorter one. The registry is keyed by the class itself, so a subclass never inherits its
parent's name: it is registered under its own name (or not at all).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from flock.exceptions import RegistryError

__all__ = ["TypeRegistry", "flock_type", "registry"]

M = TypeVar("M", bound=type[BaseModel])


class TypeRegistry:
    """Maps registered Pydantic models to stable names and back."""

    def __init__(self) -> None:
        self._by_type: dict[type[BaseModel], str] = {}
        self._by_name: dict[str, type[BaseModel]] = {}
        self._by_short: dict[str, list[type[BaseModel]]] = {}
        self._lock = threading.Lock()

    def register(self, model: type[BaseModel], *, name: str | None = None) -> str:
        """Register ``model`` and return its name. Registering twice is a no-op."""
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise RegistryError(
                f"@flock_type needs a pydantic.BaseModel subclass, got {model!r}; "
                "declare it as `class X(BaseModel): ...`"
            )
        type_name = name or f"{model.__module__}.{model.__qualname__}"
        if not type_name or not type_name.strip():
            raise RegistryError(f"type name must be a non-empty string, got {name!r}")
        with self._lock:
            existing = self._by_type.get(model)
            if existing is not None:
                if name is not None and name != existing:
                    raise RegistryError(
                        f"{model.__qualname__} is already registered as {existing!r}, "
                        f"cannot rename it to {name!r}"
                    )
                return existing
            other = self._by_name.get(type_name)
            if other is not None and other is not model:
                if _same_definition(other, model):
                    # A module re-executed (e.g. a script run twice in one interpreter):
                    # the new class replaces the old one under the same name.
                    self._forget(other)
                else:
                    raise RegistryError(
                        f"type name {type_name!r} is already taken by {other!r}; "
                        f"pass @flock_type(name=...) to give {model!r} another name"
                    )
            self._by_type[model] = type_name
            self._by_name[type_name] = model
            self._by_short.setdefault(model.__name__, []).append(model)
            if "." in type_name:
                short = type_name.rsplit(".", 1)[1]
                if short != model.__name__:
                    self._by_short.setdefault(short, []).append(model)
        return type_name

    def _forget(self, model: type[BaseModel]) -> None:
        name = self._by_type.pop(model)
        self._by_name.pop(name, None)
        for models in self._by_short.values():
            if model in models:
                models.remove(model)

    def name_of(self, model: type[BaseModel]) -> str:
        """The registered name of ``model``; raises :class:`RegistryError` if unregistered."""
        try:
            return self._by_type[model]
        except KeyError:
            raise RegistryError(
                f"{model.__qualname__} is not a registered flock type; decorate it with @flock_type"
            ) from None

    def is_registered(self, model: type[BaseModel]) -> bool:
        return model in self._by_type

    def resolve(self, name: str) -> type[BaseModel]:
        """The model registered as ``name`` (full name, or a short class name if unique)."""
        model = self._by_name.get(name)
        if model is not None:
            return model
        candidates = self._by_short.get(name, [])
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            options = ", ".join(sorted(self._by_type[c] for c in candidates))
            raise RegistryError(f"type name {name!r} is ambiguous; use one of: {options}")
        raise RegistryError(
            f"unknown type {name!r}; register the model with @flock_type "
            f"(known: {', '.join(sorted(self._by_name)) or 'none'})"
        )

    def ambiguous(self, name: str) -> bool:
        """Whether ``name`` is no registered name but the short name of several types."""
        return name not in self._by_name and len(self._by_short.get(name, ())) > 1

    def types(self) -> dict[str, type[BaseModel]]:
        """A snapshot of all registered types by name."""
        return dict(self._by_name)


def _same_definition(a: type[BaseModel], b: type[BaseModel]) -> bool:
    # Only a re-executed module or function body defines the same qualified name twice.
    return a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__


registry = TypeRegistry()
"""The process-wide registry used by :func:`flock_type` and :class:`flock.Flock`."""


@overload
def flock_type(model: M, /) -> M: ...
@overload
def flock_type(*, name: str | None = None) -> Callable[[M], M]: ...
def flock_type(model: Any = None, /, *, name: str | None = None) -> Any:
    """Register a Pydantic model as a blackboard type.

    Example:
        >>> from pydantic import BaseModel
        >>> from flock.registry import flock_type
        >>> @flock_type
        ... class Idea(BaseModel):
        ...     topic: str
        >>> registry.name_of(Idea).endswith("Idea")
        True
    """

    def decorate(cls: M) -> M:
        registry.register(cls, name=name)
        return cls

    if model is None:
        return decorate
    return decorate(model)
