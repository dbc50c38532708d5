"""A small flock application run as a child process by the fault tests.

It traces into ``.flock/traces.duckdb`` through the default set-up (``FLOCK_AUTO_TRACE=true``)
and prints ``ended <span_id> <name> <monotonic time>`` the moment each span ends (from a span
processor added after flock's own, so the span is already queued for the file when the line
is printed). The parent test thus knows exactly which spans ended before it sent a signal.

Modes (``argv[1]``):
    normal   a traced workflow, a chef and a critic agent; exits normally.
    plain    the same without traced_run, plus one span of the application's own; exits.
    raise    the traced workflow, then an unhandled RuntimeError inside traced_run.
    hang     the traced workflow whose critic sleeps for a minute (prints "critic sleeping").
    ticker   publishes an Idea every 20 ms forever (no traced_run, no run_until_idle).
    rounds   8 traced workflows of 20 ideas, 0.25 s apart (many OTLP batches); prints
             "elapsed <s>" and "otlp_failed_batches <n>".
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.tracing import configure


@flock_type
class Idea(BaseModel):
    topic: str


@flock_type
class Pizza(BaseModel):
    name: str


@flock_type
class Review(BaseModel):
    score: int


class Printer:
    """A duck-typed SDK span processor that reports every ended span on stdout."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: Any) -> None:
        print(f"ended {span.context.span_id:016x} {span.name} {time.monotonic()!r}", flush=True)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def report_otlp() -> None:
    """At the very end of the exit (registered first, so it runs last): failed OTLP batches."""
    exporters = [  # the SDK keeps its processors private; reach the exporter flock wrapped
        p._batch_processor._exporter
        for p in settings.provider._active_span_processor._span_processors
        if hasattr(p, "_batch_processor")
    ]
    print(f"otlp_failed_batches {exporters[0].failed_batches if exporters else -1}", flush=True)


MODE = sys.argv[1]
if MODE == "rounds":
    atexit.register(report_otlp)
settings = configure()
assert settings is not None, "tracing is off"
settings.provider.add_span_processor(Printer())

flock = Flock()


async def critic(pizza: Pizza) -> Review:
    if MODE == "hang":
        print("critic sleeping", flush=True)
        await asyncio.sleep(60)
    return Review(score=len(pizza.name))


flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
    lambda idea: Pizza(name=f"{idea.topic} pizza")
)
flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(critic)


async def main() -> None:
    if MODE == "ticker":
        i = 0
        while True:
            await flock.publish(Idea(topic=f"t{i}"))
            i += 1
            await asyncio.sleep(0.02)
    if MODE == "rounds":
        start = time.monotonic()
        for r in range(8):
            async with flock.traced_run(f"round_{r}"):
                await flock.publish([Idea(topic=f"{r}.{i}") for i in range(20)])
                await flock.run_until_idle()
            await asyncio.sleep(0.25)
        print(f"elapsed {time.monotonic() - start:.3f}", flush=True)
        print("done", flush=True)
        return
    if MODE == "plain":
        await flock.publish(Idea(topic="plain"))
        await flock.run_until_idle()
        with trace.get_tracer("app").start_as_current_span("app.after_flock"):
            pass
        print("done", flush=True)
        return
    async with flock.traced_run("fault_workflow"):
        await flock.publish(Idea(topic="spicy"))
        await flock.run_until_idle()
        if MODE == "raise":
            raise RuntimeError("boom in main")
    print("done", flush=True)


asyncio.run(main())
