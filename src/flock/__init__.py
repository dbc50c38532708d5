"""flock: agents on a typed blackboard, with one OpenTelemetry trace per workflow.

Example:
    >>> from flock import Flock, flock_type
    >>> Flock("openai/gpt-4o").model
    'openai/gpt-4o'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flock.agent import Agent, AgentBuilder
from flock.artifacts import Artifact
from flock.components import AgentComponent, OutputUtilityComponent, RunContext
from flock.engines.base import Engine
from flock.engines.function import FunctionEngine
from flock.exceptions import (
    AgentFailures,
    AgentRunError,
    ConfigurationError,
    FlockError,
    MissingAPIKeyError,
    PayloadValidationError,
    RegistryError,
    RunawayLoopError,
    TracingError,
)
from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.store import MemoryStore, Store
from flock.visibility import (
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    Visibility,
    only_for,
)

if TYPE_CHECKING:
    from flock.engines.dspy import DSPyEngine

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentBuilder",
    "AgentComponent",
    "AgentFailures",
    "AgentRunError",
    "Artifact",
    "ConfigurationError",
    "DSPyEngine",
    "Engine",
    "Flock",
    "FlockError",
    "FunctionEngine",
    "LabelledVisibility",
    "MemoryStore",
    "MissingAPIKeyError",
    "OutputUtilityComponent",
    "PayloadValidationError",
    "PrivateVisibility",
    "PublicVisibility",
    "RegistryError",
    "RunContext",
    "RunawayLoopError",
    "Store",
    "TenantVisibility",
    "TracingError",
    "Visibility",
    "__version__",
    "flock_type",
    "only_for",
]


def __getattr__(name: str) -> Any:
    if name == "DSPyEngine":  # imported on first use: DSPy takes ~1 s to import
        from flock.engines.dspy import DSPyEngine

        return DSPyEngine
    raise AttributeError(f"module 'flock' has no attribute {name!r}")
