"""Helpers of the dashboard tests: traced workflows into a file, a real server in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, StatusCode
from pydantic import BaseModel, Field

from flock import Flock
from flock._demo import Pizza, PizzaIdea, offline_chef
from flock.exceptions import AgentFailures
from flock.registry import flock_type
from flock.tracing import configure
from flock.tracing.processor import DuckDBSpanProcessor


@flock_type(name="Order")
class Order(BaseModel):
    """A form test type: required fields of several kinds, with constraints."""

    dish: str = Field(min_length=2, description="what to cook")
    quantity: int = Field(ge=1, le=20)
    extras: list[str] = []
    rush: bool = False


class Traced:
    """A tracer provider writing into ``db`` and a pizza Flock traced by it."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.provider = TracerProvider()
        settings = configure(self.provider, trace_file=True, db_path=str(db))
        assert settings is not None and settings.file is not None
        self.writer: DuckDBSpanProcessor = settings.file
        self.flock = Flock("openai/gpt-4o", tracer_provider=self.provider)
        self.flock.agent("pizza_master").description("Invents a pizza from an idea").consumes(
            PizzaIdea
        ).publishes(Pizza).with_engines(offline_chef)
        self.flock.agent("kitchen").consumes(Order).publishes(Pizza).with_engines(
            lambda order: Pizza(name=order.dish, toppings=order.extras, description="ordered")
        )

    async def pizza_workflow(self, topic: str = "spicy pineapple with chili honey") -> None:
        """The seed's workflow, as ``flock demo`` runs it."""
        async with self.flock.traced_run("pizza_workflow") as span:
            span.set_attribute("pipeline.version", "2.0")
            await self.flock.publish(PizzaIdea(topic=topic))
            await self.flock.run_until_idle()

    async def failing_workflow(self) -> None:
        """A workflow whose agent raises: its spans are ERROR with the exception recorded."""
        failing = Flock(tracer_provider=self.provider)

        def burn(pizza: Pizza) -> None:
            raise RuntimeError("the oven is on fire")

        failing.agent("oven").consumes(Pizza).with_engines(burn)
        with pytest.raises(AgentFailures):
            async with failing.traced_run("baking_workflow"):
                await failing.publish(Pizza(name="x", toppings=[], description="d"))
                await failing.run_until_idle()

    def flush(self) -> None:
        assert self.writer.force_flush(10_000)

    def close(self) -> None:
        self.writer.shutdown()


def run(coro: Any) -> Any:
    """Run ``coro`` to completion in a fresh event loop in its own thread (so it also works
    beside Playwright's sync API, which keeps a loop running in the main thread)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    if error:
        raise error[0]
    return result[0] if result else None


class ServerThread:
    """``flock.dashboard.serve`` on 127.0.0.1 (a free port) in a thread with its own loop."""

    def __init__(self, db: Path, **kwargs: Any) -> None:
        self.db = db
        self.kwargs = kwargs
        self.url = ""
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from flock.dashboard import serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]

            def started(url: str) -> None:
                self.url = url
                self._ready.set()

            kwargs = {"port": 0, **self.kwargs}  # port=N to restart on the same port
            await serve(self.db, announce=self.lines.append, started=started, **kwargs)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(20), "the dashboard did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(15)
        assert not self._thread.is_alive()


@contextmanager
def server(db: Path, **kwargs: Any) -> Iterator[ServerThread]:
    srv = ServerThread(db, **kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()


def running_workflow(
    t: Traced, workflow: str, *, ago_s: float = 0.0, spans: int = 2, root_name: str | None = None
) -> Span:
    """A workflow still running: ``spans`` finished child spans (with ``workflow.name``, as
    ``traced_run`` stamps them) written to the file, its root span not ended (returned; end
    it to complete the trace). ``ago_s`` dates them back, as a writer that died would."""
    tracer = t.provider.get_tracer("tests")
    start = time.time_ns() - int(ago_s * 1e9) - 1_000_000
    root = tracer.start_span(root_name or workflow, start_time=start)
    root.set_attribute("flock.workflow", True)
    root.set_attribute("workflow.name", workflow)
    add_child(t, root, "Flock.publish", count=spans, at=start)
    t.flush()
    return root


def add_child(t: Traced, root: Span, name: str, *, count: int = 1, at: int | None = None) -> None:
    """End ``count`` child spans of ``root`` (ending now, or just after ``at``)."""
    tracer = t.provider.get_tracer("tests")
    workflow = root.attributes.get("workflow.name") if root.attributes else None  # type: ignore[attr-defined]
    ctx = trace.set_span_in_context(root)
    for i in range(count):
        begin = (time.time_ns() - 2_000_000 if at is None else at + 1_000) + i * 1_000
        child = tracer.start_span(name, context=ctx, start_time=begin)
        child.set_attribute("flock.workflow", True)
        if workflow:
            child.set_attribute("workflow.name", str(workflow))
        child.end(end_time=begin + 500)


def sdk_trace(*exporters: SpanExporter, service: str) -> tuple[int, dict[str, int]]:
    """A small nested trace made by a real SDK provider — parent and children, attributes,
    events, a link, an error, a resource with ``service.name`` — sent by ``exporters`` (as a
    worker does);
    returns the trace id and the span ids by name."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.otlp")
    with tracer.start_as_current_span(
        "remote_workflow", attributes={"workflow.name": "remote"}
    ) as root:
        with tracer.start_as_current_span("Flock.publish") as publish:
            publish.set_attribute("flock.artifact.count", 3)
            publish.set_attribute("flock.artifact.types", ["Job", "Step"])
        with tracer.start_as_current_span(
            "Agent.execute",
            links=[Link(publish.get_span_context(), {"link.kind": "consumed"})],
        ) as run:
            run.set_attribute("gen_ai.agent.name", "first")
            run.set_attribute("flock.attempt", 1)
            run.set_attribute("flock.ratio", 0.5)
            run.set_attribute("flock.abandoned", False)
            run.add_event("retrying", {"delay_s": 1.5})
            try:
                raise RuntimeError("the oven is on fire")
            except RuntimeError as exc:
                run.record_exception(exc)
                run.set_status(StatusCode.ERROR, "RuntimeError: the oven is on fire")
    ids = {
        "remote_workflow": root.get_span_context().span_id,
        "Flock.publish": publish.get_span_context().span_id,
        "Agent.execute": run.get_span_context().span_id,
    }
    provider.shutdown()  # exports what is left, like a worker at exit
    return run.get_span_context().trace_id, ids
