"""The engine interface: what turns an agent's inputs into its outputs."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel

from flock.artifacts import Artifact
from flock.components import AgentComponent, RunContext

__all__ = ["Engine", "EngineOutput"]

EngineOutput = BaseModel | Sequence[BaseModel] | None
"""An engine returns one model, several, or nothing."""


class Engine(AgentComponent):
    """An agent component that evaluates inputs. Subclass it and implement :meth:`evaluate`.

    Engines are components too: they may implement any lifecycle hook.
    """

    @abstractmethod
    async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        """Produce outputs for ``inputs`` (the payloads are ``artifact.payload``)."""
