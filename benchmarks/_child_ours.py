"""Benchmark workloads for *our* flock, run by the benchmark scripts in a fresh process.

    python _child_ours.py WORKLOAD PARAMS_JSON RESULT_PATH

Runs in a temporary working directory; writes one JSON object (figures + peak RSS) to
RESULT_PATH. Not meant to be run by hand.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

from _child_common import LagProbe, file_bytes, run, run_inputs, trace_file_stats
from pydantic import BaseModel


def make_types(count: int) -> list[type[BaseModel]]:
    from pydantic import create_model

    from flock import flock_type

    return [
        flock_type(create_model(f"Item{i}", __module__="bench", text=(str, ...), n=(int, ...)))
        for i in range(count)
    ]


def build_flock(topology: str, engine: str) -> tuple[Any, type[BaseModel], int]:
    """A Flock with plain-Python engines; (flock, input type, outputs per input)."""
    from flock import Flock

    flock = Flock()

    def engine_for(out: type[BaseModel]) -> Any:
        if engine == "async":

            async def fn(item: Any) -> BaseModel:
                return out(text=item.text, n=item.n + 1)

        else:

            def fn(item: Any) -> BaseModel:  # type: ignore[misc]
                return out(text=item.text, n=item.n + 1)

        return fn

    if topology == "one":
        a, b = make_types(2)
        flock.agent("a").consumes(a).publishes(b).with_engines(engine_for(b))
        return flock, a, 1
    if topology == "chain":
        t = make_types(4)
        for i in range(3):
            flock.agent(f"a{i}").consumes(t[i]).publishes(t[i + 1]).with_engines(
                engine_for(t[i + 1])
            )
        return flock, t[0], 3
    if topology == "fanout":
        t = make_types(6)
        for i in range(5):
            flock.agent(f"a{i}").consumes(t[0]).publishes(t[i + 1]).with_engines(
                engine_for(t[i + 1])
            )
        return flock, t[0], 5
    raise SystemExit(f"unknown topology {topology!r}")


# Workloads ----------------------------------------------------------------------


async def throughput(p: dict[str, Any]) -> dict[str, Any]:
    """N inputs published one by one, then run_until_idle (optionally traced, with a lag probe)."""
    flock, in_type, fan = build_flock(p["topology"], p["engine"])
    n, warmup = int(p["n"]), int(p.get("warmup", 0))
    if warmup:
        for i in range(warmup):
            await flock.publish(in_type(text=f"warm {i}", n=i))
        await flock.run_until_idle()
        settings = _settings()
        if settings is not None and settings.file is not None:
            settings.file.force_flush(60_000)
    probe = LagProbe() if p.get("lag") else None
    if probe:
        probe.start()
    before = len(flock.store)
    t0 = time.perf_counter()
    if p.get("publish_many"):
        await flock.publish_many([in_type(text=f"idea {i}", n=i) for i in range(n)])
    else:
        for i in range(n):
            await flock.publish(in_type(text=f"idea {i}", n=i))
    t_published = time.perf_counter()
    await flock.run_until_idle()
    t_idle = time.perf_counter()
    settings = _settings()
    spans_written = None
    if settings is not None and settings.file is not None:
        await settings.file.flush_async(600)
        spans_written = settings.file.written
    t_flushed = time.perf_counter()
    lag = await probe.stop() if probe else None
    stored = len(flock.store) - before
    expected = n * (1 + fan)
    return {
        "n": n,
        "stored": stored,
        "complete": stored == expected,
        "publish_s": t_published - t0,
        "idle_s": t_idle - t0,
        "flushed_s": t_flushed - t0,
        "per_s": n / (t_idle - t0),
        "per_s_flushed": n / (t_flushed - t0),
        "spans_written": spans_written,
        "lag": lag,
    }


def _settings() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return None
    from flock.tracing.setup import _configured

    return _configured.get(id(provider))


SPAN_ATTRS = {
    "gen_ai.agent.name": "chef",
    "flock.run_id": "8f0c2f6e-3c1b-4bd4-9a43-2d1c8a0d6f11",
    "flock.attempt": 1,
    "flock.input.ids": ["0b9d8c4e-1f7a-4c3b-8f55-6a2e9d7c1b03"],
}


def span_cost(p: dict[str, Any]) -> dict[str, Any]:
    """ns per span (enter + exit of a current span with 4 attributes), best of `repeats` loops."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    variant, m, repeats = p["variant"], int(p["m"]), int(p.get("repeats", 3))
    provider = TracerProvider()
    writer = None
    if variant == "bare_noop_processor":
        provider.add_span_processor(SpanProcessor())
    elif variant in ("flock", "flock_writer_idle"):
        from flock.tracing import configure

        if variant == "flock":
            settings = configure(provider, trace_file=True, db_path="traces.duckdb")
            assert settings is not None and settings.file is not None
            writer = settings.file
        else:  # flock's processors, the writer told not to run during the loop
            from flock.tracing.processor import DuckDBSpanProcessor
            from flock.tracing.workflow import WorkflowSpanProcessor

            provider.add_span_processor(WorkflowSpanProcessor())  # type: ignore[arg-type]
            writer = DuckDBSpanProcessor(
                "traces.duckdb", flush_interval=3600, batch_size=10**9, max_queue=10**9
            )
            provider.add_span_processor(writer)
    elif variant != "bare_no_processor":
        raise SystemExit(f"unknown variant {variant!r}")

    if variant.startswith("flock"):
        from flock.tracing._instrument import Instrument

        instrument = Instrument(provider.get_tracer("flock"))

        def one() -> None:
            with instrument.span("Agent.execute", SPAN_ATTRS):
                pass
    else:
        tracer = provider.get_tracer("bench")

        def one() -> None:
            with tracer.start_as_current_span("Agent.execute", attributes=SPAN_ATTRS):
                pass

    for _ in range(1000):
        one()
    loops = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(m):
            one()
        loops.append((time.perf_counter_ns() - t0) / m)
    result: dict[str, Any] = {"ns_per_span": min(loops), "loops_ns": loops, "m": m}
    if writer is not None:
        t0 = time.perf_counter()
        writer.force_flush(600_000)
        result["flush_after_s"] = time.perf_counter() - t0
        result["written"] = writer.written
    return result


def make_spans(m: int, *, payload_chars: int = 120) -> list[Any]:
    """m finished SDK spans shaped like flock's Agent.execute spans (not timed)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "flock"}))
    tracer = provider.get_tracer("flock")
    text = ("x" * payload_chars)[:payload_chars]
    spans = []
    with tracer.start_as_current_span("pizza_workflow") as root:
        root.set_attribute("flock.workflow", True)
        for i in range(m):
            span = tracer.start_span(
                "Agent.execute",
                attributes={
                    **SPAN_ATTRS,
                    "flock.workflow": True,
                    "workflow.name": "pizza_workflow",
                    "flock.correlation_id": f"corr-{i % 997}",
                    "input.value": f'{{"topic":"{text}","n":{i}}}',
                },
            )
            span.end()
            spans.append(span)
    # Pay the fixtures' garbage-collection debt before anything is timed: creating 200,000
    # spans (~2M objects) leaves a full collection due, which otherwise lands in the timed
    # phase (0.6 s of a 2 s writer run, measured) and is charged to the writer.
    gc.collect()
    return spans


def writer(p: dict[str, Any]) -> dict[str, Any]:
    """Push m finished spans through DuckDBSpanProcessor; spans/s until force_flush returns."""
    from flock.tracing.processor import DuckDBSpanProcessor

    m = int(p["m"])
    spans = make_spans(m)
    proc = DuckDBSpanProcessor("traces.duckdb")
    t0 = time.perf_counter()
    for span in spans:
        proc.on_end(span)
    t_queued = time.perf_counter()
    ok = proc.force_flush(600_000)
    t1 = time.perf_counter()
    proc.shutdown()
    import duckdb

    with duckdb.connect("traces.duckdb", read_only=True) as conn:
        row = conn.execute("SELECT count(*) FROM spans").fetchone()
    count = int(row[0]) if row else 0
    return {
        "m": m,
        "flushed": ok,
        "rows": count,
        "enqueue_s": t_queued - t0,
        "total_s": t1 - t0,
        "spans_per_s": m / (t1 - t0),
        "file_bytes": file_bytes(Path("traces.duckdb")),
        **writer_parts(spans),
    }


def writer_parts(spans: list[Any], batch: int = 25_000) -> dict[str, Any]:
    """The writer's two stages timed alone, one after the other, on the same spans: encoding
    (Python, in the writer thread) and DuckDB appending pre-encoded Arrow batches."""
    import pyarrow as pa

    try:
        from flock.tracing._encode import FinishedSpan, spans_to_arrow
    except ImportError:  # a checkout before 39e0bda, through FLOCK_BENCH_SRC
        from flock.tracing.store import FinishedSpan, spans_to_arrow  # type: ignore[attr-defined,no-redef]
    from flock.tracing.processor import ENCODE_CHUNK
    from flock.tracing.store import Appender

    finished = [FinishedSpan(s) for s in spans]
    t0 = time.perf_counter()
    tables = [
        spans_to_arrow(finished[i : i + ENCODE_CHUNK]) for i in range(0, len(spans), ENCODE_CHUNK)
    ]
    encode_s = time.perf_counter() - t0
    table = pa.concat_tables(tables)
    appender = Appender("stages.duckdb")
    t0 = time.perf_counter()
    for i in range(0, len(table), batch):
        appender.append(table.slice(i, batch))
    append_s = time.perf_counter() - t0
    appender.close()
    return {
        "encode_us_per_span": encode_s / len(spans) * 1e6,
        "append_us_per_span": append_s / len(spans) * 1e6,
        "append_batch": batch,
    }


async def lag(p: dict[str, Any]) -> dict[str, Any]:
    """Event-loop lag (1 ms sleeper) while m spans are encoded and written in the background."""
    from flock.tracing.processor import DuckDBSpanProcessor

    m = int(p["m"])
    spans = make_spans(m)
    proc = DuckDBSpanProcessor("traces.duckdb")
    started = await LagProbe.over(1.0)  # the writer thread starts: it loads pyarrow, once
    baseline = await LagProbe.over(0.5)
    burst = int(p.get("burst", 0))
    bursts_s: list[float] = []
    if not burst:
        # All queued before the probe starts, so the lag is the export's alone: on_end's
        # work minus its wake-up call, so that the writer starts only with the probe.
        try:
            from flock.tracing._encode import FinishedSpan
        except ImportError:  # a checkout before 39e0bda, through FLOCK_BENCH_SRC
            from flock.tracing.store import FinishedSpan  # type: ignore[attr-defined,no-redef]

        proc._queue.extend(FinishedSpan(span) for span in spans)
    probe = LagProbe()
    probe.start()
    t0 = time.perf_counter()
    for i in range(0, m if burst else 0, burst or 1):  # spans "end" in bursts on the loop
        b0 = time.perf_counter()
        for span in spans[i : i + burst]:
            proc.on_end(span)
        bursts_s.append(time.perf_counter() - b0)
        await asyncio.sleep(0)
    # flush_async, not to_thread(force_flush): starting the executor's first thread while
    # the writer holds the GIL stalled the probe ~10 ms (the benchmark's own cost).
    await proc.flush_async(600)
    write_s = time.perf_counter() - t0
    during = await probe.stop()
    proc.shutdown()
    return {
        "m": m,
        "burst": burst,
        "longest_burst_ms": max(bursts_s) * 1000 if bursts_s else None,
        "write_s": write_s,
        "written": proc.written,
        "startup": started,
        "idle": baseline,
        "during": during,
    }


async def pizza(p: dict[str, Any]) -> dict[str, Any]:
    """The seed-like workflow, traced into .flock/traces.duckdb, `runs` times."""
    from flock import Flock, flock_type

    @flock_type
    class Idea(BaseModel):
        topic: str

    @flock_type
    class Pizza(BaseModel):
        name: str
        toppings: list[str]
        steps: list[str]

    async def chef(idea: Idea) -> Pizza:
        return Pizza(
            name=f"{idea.topic} pizza",
            toppings=["tomato", "mozzarella", "basil", idea.topic],
            steps=["make dough", "add sauce", "add toppings", "bake at 250°C for 10 min"],
        )

    flock = Flock()
    flock.agent("pizza_master").consumes(Idea).publishes(Pizza).with_engines(chef)
    runs = int(p["runs"])
    t0 = time.perf_counter()
    for i in range(runs):
        async with flock.traced_run("pizza_workflow"):
            await flock.publish(Idea(topic=f"pineapple {i}"))
            await flock.run_until_idle()
    elapsed = time.perf_counter() - t0
    settings = _settings()
    settings.provider.shutdown()
    return {"runs": runs, "elapsed_s": elapsed, **trace_file_stats(Path(".flock/traces.duckdb"))}


async def dspy_pizza(p: dict[str, Any]) -> dict[str, Any]:
    """The seed's workflow with its default DSPy engine, against the stand-in server.

    ``flock._demo.build_flock()``: ``Flock("openai/gpt-4o")``, agent ``pizza_master`` consumes
    ``PizzaIdea`` and publishes ``Pizza``, no ``with_engines`` (so the default DSPyEngine;
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point it at the server the parent started) and the
    default ``max_concurrency``. Shape ``run`` (the seed's): one ``traced_run`` per input
    (publish + run_until_idle inside; spans are in the file when it exits). Shape ``batch``:
    one ``traced_run`` around N publishes and one run_until_idle. Shape ``clients``: ``clients``
    callers at once, each one ``traced_run`` per input as in ``run`` (a server's requests). ``warmup`` runs first
    (DSPy import, LM creation, first connection) and is not timed.
    """
    from flock._demo import PizzaIdea, build_flock

    flock = build_flock()
    n, warmup, shape = int(p["n"]), int(p.get("warmup", 2)), p.get("shape", "run")

    async def one(topic: str) -> None:
        async with flock.traced_run("pizza_workflow") as span:
            span.set_attribute("pipeline.version", "2.0")
            await flock.publish(PizzaIdea(topic=topic))
            await flock.run_until_idle()

    t_start = time.perf_counter()
    for i in range(warmup):
        await one(f"warm-up {i}")
    warmup_s = time.perf_counter() - t_start
    settings = _settings()
    written_before = settings.file.written if settings is not None and settings.file else 0
    pizzas_before = len(await flock.store.query(type="Pizza"))
    t0 = time.perf_counter()
    if shape == "batch":
        async with flock.traced_run("pizza_workflow") as span:
            span.set_attribute("pipeline.version", "2.0")
            for i in range(n):
                await flock.publish(PizzaIdea(topic=f"spicy pineapple {i}"))
            await flock.run_until_idle()
    else:
        await run_inputs(one, n, int(p.get("clients", 1)) if shape == "clients" else 1)
    elapsed = time.perf_counter() - t0
    spans_written = None
    if settings is not None and settings.file is not None:
        await settings.file.flush_async(600)
        spans_written = settings.file.written - written_before
    t_flushed = time.perf_counter()
    pizzas = await flock.store.query(type="Pizza")
    made = len(pizzas) - pizzas_before
    return {
        "n": n,
        "shape": shape,
        "clients": int(p.get("clients", 1)) if shape == "clients" else 1,
        "warmup": warmup,
        "warmup_s": warmup_s,
        "pizzas": made,
        "complete": made == n and all(getattr(a.payload, "name", None) for a in pizzas),
        "elapsed_s": elapsed,
        "per_s": n / elapsed,
        "per_s_flushed": n / (t_flushed - t0),
        "traced": settings is not None,
        "trace_file": settings is not None and settings.file is not None,
        "spans_written": spans_written,
    }


WORKLOADS = {
    "throughput": throughput,
    "span_cost": span_cost,
    "writer": writer,
    "lag": lag,
    "pizza": pizza,
    "dspy_pizza": dspy_pizza,
}


if __name__ == "__main__":
    run(WORKLOADS)
