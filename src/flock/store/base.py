"""The blackboard store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar, cast

from pydantic import BaseModel

from flock.artifacts import Artifact

__all__ = ["Store"]

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
        type: str | None = None,
        correlation_id: str | None = None,
        produced_by: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Artifacts matching every given filter, oldest first (the newest ``limit`` if given)."""

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
        from flock.registry import registry

        artifacts = await self.query(
            type=registry.name_of(model),
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
