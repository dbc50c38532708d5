"""Engines turn an agent's inputs into outputs.

``DSPyEngine`` is imported lazily (DSPy takes about a second to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flock.engines.base import Engine, EngineOutput
from flock.engines.function import FunctionEngine

if TYPE_CHECKING:
    from flock.engines.dspy import DSPyEngine

__all__ = ["DSPyEngine", "Engine", "EngineOutput", "FunctionEngine"]


def __getattr__(name: str) -> Any:
    if name == "DSPyEngine":
        from flock.engines.dspy import DSPyEngine

        return DSPyEngine
    raise AttributeError(f"module 'flock.engines' has no attribute {name!r}")
