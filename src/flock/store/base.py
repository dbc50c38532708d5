"""The blackboard store interface."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar, cast

from pydantic import BaseModel

from flock._names import checked_count, is_name
from flock.artifacts import Artifact
from flock.exceptions import ConfigurationError, RegistryError
from flock.registry import registry

__all__ = ["Store", "checked_query"]

M = TypeVar("M", bound=BaseModel)


class Store(ABC):
    """Where artifacts live. Implementations must be safe to call from one event loop."""

    @abstractmethod
    async def put(self, artifacts: Sequence[Artifact]) -> None:
        """Store validated artifacts (all of them, or none on error)."""

    @abstractmethod
    async def get(self, artifact_id: str) -> Artifact | None:
        """The artifact with this id, or ``None``."""

    @abstractmethod
    async def query(
        self,
        *,
        type: type[BaseModel] | str | None = None,
        correlation_id: str | None = None,
        produced_by: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Artifacts matching every given filter, oldest first (the newest ``limit`` if given).
        ``type`` is a registered model class or its registered name (or its class name, if
        no other registered type has it; any other name filters as stored). Implementations
        start with :func:`checked_query`.

        Raises:
            ConfigurationError: a filter is not one (a model instance, a class name several
                types share, a limit that is not an int ≥ 0, ...).
        """

    async def payloads(
        self,
        model: type[M],
        *,
        correlation_id: str | None = None,
        produced_by: str | None = None,
        limit: int | None = None,
    ) -> list[M]:
        """The payloads of the artifacts of the registered type ``model``, typed, filtered as
        :meth:`query` does. Example: ``pizzas = await flock.store.payloads(Pizza)``."""
        type_name = checked_query(model, correlation_id, produced_by, limit, what="payloads()")
        artifacts = await self.query(
            type=type_name,
            correlation_id=correlation_id,
            produced_by=produced_by,
            limit=limit,
        )
        return [cast(M, artifact.payload) for artifact in artifacts]

    @abstractmethod
    async def record_consumption(self, artifact_id: str, agent: str) -> None:
        """Remember that ``agent`` consumed the artifact."""

    @abstractmethod
    async def consumers(self, artifact_id: str) -> list[str]:
        """The agents that consumed the artifact, in order."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. The default does nothing."""


def checked_query(
    type: object,
    correlation_id: object,
    produced_by: object,
    limit: object,
    *,
    what: str = "query(type=)",
) -> str | None:
    """The registered name of the type :meth:`Store.query` filters by (``None``: any type),
    once every filter was found to be one; a :class:`ConfigurationError` otherwise. The one
    place where the query filters of every store are checked and ``type`` resolved."""
    for name, value in (("correlation_id", correlation_id), ("produced_by", produced_by)):
        if value is not None and not is_name(value):
            raise ConfigurationError(
                f"{name}= must be a non-blank string without NUL or None, got {value!r}"
            )
    if limit is not None:
        checked_count(limit, "limit", minimum=0)
    if type is None:
        return None
    expected = "a registered model class (as in payloads(Pizza)) or its registered name"
    if isinstance(type, str):
        if not is_name(type):
            raise ConfigurationError(f"{what} takes {expected}, got {type!r:.200}")
        try:
            return registry.name_of(registry.resolve(type))
        except RegistryError as exc:
            if registry.ambiguous(type):
                raise ConfigurationError(f"{what}: {exc}") from None
        # Not registered here: the exact name artifacts are stored under (a type of another
        # program sharing the store, a model renamed since).
        return type
    if isinstance(type, BaseModel):
        raise ConfigurationError(
            f"{what} takes {expected}, not an instance: got {type!r:.200}; "
            f"pass the class {builtins.type(type).__name__} itself"
        )
    if not (isinstance(type, builtins.type) and issubclass(type, BaseModel)):
        raise ConfigurationError(f"{what} takes {expected}, got {type!r:.200}")
    if not registry.is_registered(type):
        raise ConfigurationError(
            f"{what}: {type.__qualname__} is not a registered flock type; decorate it with "
            "@flock_type or declare it in an agent's consumes()/publishes()"
        )
    return registry.name_of(type)
