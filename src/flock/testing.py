"""Test helpers for flock users (and flock's own tests).

- :class:`SpanCapture` records the spans of a Flock in memory and summarises them as a tree.
- :class:`ScriptedEngine` returns prepared outputs instead of calling a model.
- :class:`~flock.store.MemoryStore` is the in-memory store.
- ``FakeOpenAIServer`` (from :mod:`flock.fake_llm`) is a local OpenAI-compatible server.

Example:
    >>> import asyncio
    >>> from pydantic import BaseModel
    >>> from flock import Flock, flock_type
    >>> @flock_type
    ... class Ping(BaseModel):
    ...     n: int
    >>> @flock_type
    ... class Pong(BaseModel):
    ...     n: int
    >>> capture = SpanCapture()
    >>> flock = Flock(tracer_provider=capture.provider)
    >>> _ = flock.agent("pong").consumes(Ping).publishes(Pong).with_engines(ScriptedEngine(Pong(n=1)))
    >>> async def main():
    ...     async with flock.traced_run("ping_workflow"):
    ...         await flock.publish(Ping(n=0))
    ...         await flock.run_until_idle()
    >>> asyncio.run(main())
    >>> capture.tree()[0][0]
    'ping_workflow'
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flock.artifacts import Artifact
from flock.components import RunContext
from flock.engines.base import Engine, EngineOutput
from flock.store.memory import MemoryStore

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from flock.fake_llm import FakeOpenAIServer

__all__ = ["FakeOpenAIServer", "MemoryStore", "ScriptedEngine", "SpanCapture", "SpanTree"]

SpanTree = list[tuple[str, "SpanTree"]]
"""``[(name, children), ...]`` in start order."""


class SpanCapture:
    """An SDK tracer provider whose finished spans are kept in memory.

    Pass ``capture.provider`` to ``Flock(tracer_provider=...)``.
    """

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def clear(self) -> None:
        self.exporter.clear()

    def tree(self, *, trace_id: int | None = None) -> SpanTree:
        """The parent/child structure of the captured spans (roots first, by start time)."""
        return span_tree(self.spans, trace_id=trace_id)


def span_tree(spans: Sequence[ReadableSpan], *, trace_id: int | None = None) -> SpanTree:
    """Summarise spans as nested ``(name, children)`` tuples in start order."""
    selected = [
        s
        for s in spans
        if s.context is not None and (trace_id is None or s.context.trace_id == trace_id)
    ]
    ids = {s.context.span_id for s in selected if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in selected:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)

    def build(parent: int | None) -> SpanTree:
        kids = sorted(children.get(parent, []), key=lambda s: s.start_time or 0)
        return [(s.name, build(s.context.span_id if s.context else None)) for s in kids]

    return build(None)


class ScriptedEngine(Engine):
    """Returns the given outputs, one item per run (the last one repeats).

    An item may be a model, a list of models, ``None``, an exception (raised), or a function
    of the input payload. ``calls`` records the input payloads it saw.
    """

    def __init__(self, *outputs: Any) -> None:
        self.outputs = list(outputs)
        self.calls: list[BaseModel] = []

    async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        payload = inputs[0].payload
        self.calls.append(payload)
        if not self.outputs:
            return None
        item = self.outputs[min(len(self.calls), len(self.outputs)) - 1]
        if isinstance(item, BaseException):
            raise item
        if callable(item) and not isinstance(item, BaseModel):
            result = item(payload)
            if inspect.isawaitable(result):  # an async function, as with_engines() takes
                result = await result
            return result  # type: ignore[no-any-return]
        return item  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name == "FakeOpenAIServer":
        from flock.fake_llm import FakeOpenAIServer

        return FakeOpenAIServer
    raise AttributeError(f"module 'flock.testing' has no attribute {name!r}")
