"""The plain-Python engine: any function from the input model to the output model(s)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

from flock._threads import run_sync
from flock.artifacts import Artifact
from flock.components import RunContext
from flock.engines.base import Engine, EngineOutput

__all__ = ["FunctionEngine"]


class FunctionEngine(Engine):
    """Runs ``fn(payload)`` for each run.

    ``fn`` may be ``async def`` (awaited on the loop) or a plain function (run in a worker
    thread, with the tracing context copied, so it never blocks the loop). It receives the
    input payload — or a list of payloads when ``batch=True`` — and returns a model, a list
    of models, or ``None``.

    Example:
        >>> engine = FunctionEngine(lambda idea: None)
        >>> engine.name
        '<lambda>'
    """

    def __init__(
        self,
        fn: Callable[[Any], EngineOutput] | Callable[[Any], Awaitable[EngineOutput]],
        *,
        batch: bool = False,
    ) -> None:
        if not callable(fn):
            from flock.exceptions import ConfigurationError

            raise ConfigurationError(f"FunctionEngine needs a callable, got {fn!r}")
        self.fn = fn
        self.batch = batch
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.name: str = getattr(fn, "__name__", type(fn).__name__)

    async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        arg: Any = [a.payload for a in inputs] if self.batch else inputs[0].payload
        if self.is_async:
            return await cast("Callable[[Any], Awaitable[EngineOutput]]", self.fn)(arg)
        return await run_sync(cast("Callable[[Any], EngineOutput]", self.fn), arg)

    def __repr__(self) -> str:
        return f"FunctionEngine({self.name})"
