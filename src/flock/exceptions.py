"""Errors raised by flock.

Every error derives from :class:`FlockError`::

    FlockError
    ├── ConfigurationError (ValueError)      misuse of the builder or of Flock(...)
    ├── RegistryError (TypeError)            unknown or unregistered types
    ├── PayloadValidationError (ValueError)  a payload that does not validate; nothing is stored
    ├── MissingAPIKeyError                   an LLM engine without credentials
    ├── AgentRunError                        one failed agent run (agent, input artifact, cause)
    │   └── RunawayLoopError                 an agent exceeded its runs per workflow
    ├── AgentFailures (ExceptionGroup)       raised by run_until_idle: all failed runs
    └── TracingError                         the trace store cannot be used
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flock.artifacts import Artifact

__all__ = [
    "AgentFailures",
    "AgentRunError",
    "ConfigurationError",
    "FlockError",
    "MissingAPIKeyError",
    "PayloadValidationError",
    "RegistryError",
    "RunawayLoopError",
    "TracingError",
]


class FlockError(Exception):
    """Root of every flock error."""


class ConfigurationError(FlockError, ValueError):
    """The framework was set up wrongly (builder misuse, bad argument)."""


class RegistryError(FlockError, TypeError):
    """A type is unknown to the registry or cannot be registered."""


class PayloadValidationError(FlockError, ValueError):
    """A payload failed validation; nothing was stored."""


class MissingAPIKeyError(FlockError):
    """An LLM engine has no credentials for its model."""


class TracingError(FlockError):
    """The trace store cannot be opened or written."""


class AgentRunError(FlockError):
    """One agent run failed. The original exception is ``__cause__``.

    ``published`` holds the outputs the run had already published when it failed (an
    ``on_post_publish`` or ``on_terminate`` hook raised, or the timeout fired there); such a
    run is not retried, since a retry would publish them again.
    """

    def __init__(
        self,
        message: str,
        *,
        agent: str,
        artifacts: tuple[Artifact, ...] = (),
        attempts: int = 1,
        published: tuple[Artifact, ...] = (),
    ) -> None:
        super().__init__(message)
        self.agent = agent
        self.artifacts = artifacts
        self.attempts = attempts
        self.published = published


class RunawayLoopError(AgentRunError):
    """An agent ran more often in one workflow than ``Flock(max_agent_runs=...)`` allows."""


class AgentFailures(FlockError, ExceptionGroup[AgentRunError]):
    """Raised by ``run_until_idle`` when agent runs failed since the previous call.

    The other agents kept running; ``exceptions`` holds one :class:`AgentRunError` per failed
    run, each with the agent name, its input artifacts and the original exception as
    ``__cause__``. Catch it with ``except AgentFailures`` or ``except* AgentRunError``.
    """

    def __new__(cls, message: str, errors: list[AgentRunError]) -> AgentFailures:
        return super().__new__(cls, message, errors)

    @property
    def failures(self) -> tuple[AgentRunError, ...]:
        return tuple(e for e in self.exceptions if isinstance(e, AgentRunError))


def retryable(exc: BaseException) -> bool:
    """Whether a failed agent run may succeed when retried: not when its configuration is
    wrong (a missing API key, a misconfigured engine), which fails the same way each time."""
    return not isinstance(exc, ConfigurationError | MissingAPIKeyError)
