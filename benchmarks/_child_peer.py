"""Benchmark workloads for the baseline (flock-core 0.5.7), run in the peer's own venv.

    /path/to/peer-venv/bin/python _child_peer.py WORKLOAD PARAMS_JSON RESULT_PATH

Imports nothing from this repository's package (the two share the import name ``flock``),
only the stdlib helpers of ``_child_common.py`` beside it.
Tracing is switched by the environment the parent sets (FLOCK_AUTO_TRACE, FLOCK_TRACE_FILE);
the peer writes its trace file to .flock/traces.duckdb under the working directory.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from _child_common import LagProbe, run, run_inputs, trace_file_stats
from pydantic import BaseModel, create_model


def make_types(count: int) -> list[type[BaseModel]]:
    from flock import flock_type

    return [
        flock_type(create_model(f"Item{i}", __module__="bench", text=(str, ...), n=(int, ...)))
        for i in range(count)
    ]


def engine_for(out: type[BaseModel]) -> Any:
    """A plain-Python engine: the peer's EngineComponent whose evaluate returns the model
    (the peer wraps a returned BaseModel into an EvalResult itself)."""
    from flock.components import EngineComponent

    class FnEngine(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Any, inputs: Any) -> Any:
            payload = inputs.artifacts[0].payload
            return out(text=payload["text"], n=payload["n"] + 1)

    return FnEngine(name=f"fn_{out.__name__}")


def build_flock(topology: str) -> tuple[Any, type[BaseModel], int]:
    from flock import Flock

    flock = Flock()
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


async def throughput(p: dict[str, Any]) -> dict[str, Any]:
    flock, in_type, fan = build_flock(p["topology"])
    n, warmup = int(p["n"]), int(p.get("warmup", 0))
    if warmup:
        for i in range(warmup):
            await flock.publish(in_type(text=f"warm {i}", n=i))
        await flock.run_until_idle()
    before = len(await flock.store.list())
    probe = LagProbe() if p.get("lag") else None
    if probe:
        probe.start()
    t0 = time.perf_counter()
    for i in range(n):
        await flock.publish(in_type(text=f"idea {i}", n=i))
    t_published = time.perf_counter()
    await flock.run_until_idle()
    t_idle = time.perf_counter()
    lag = await probe.stop() if probe else None
    stored = len(await flock.store.list()) - before
    return {
        "n": n,
        "stored": stored,
        "complete": stored == n * (1 + fan),
        "publish_s": t_published - t0,
        "idle_s": t_idle - t0,
        "per_s": n / (t_idle - t0),
        "lag": lag,
    }


def span_cost(p: dict[str, Any]) -> dict[str, Any]:
    """Cost of one span on the peer's own path: a call of a @traced_and_logged function
    (what every public method of its agents and components goes through)."""
    from flock.logging.trace_and_logged import traced_and_logged

    @traced_and_logged
    def step(run_id: str, attempt: int) -> None:
        return None

    m, repeats = int(p["m"]), int(p.get("repeats", 3))
    for _ in range(min(m, 100)):
        step("8f0c2f6e-3c1b-4bd4-9a43-2d1c8a0d6f11", 1)
    loops = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(m):
            step("8f0c2f6e-3c1b-4bd4-9a43-2d1c8a0d6f11", 1)
        loops.append((time.perf_counter_ns() - t0) / m)
    return {"ns_per_span": min(loops), "loops_ns": loops, "m": m}


def writer(p: dict[str, Any]) -> dict[str, Any]:
    """The peer's DuckDBSpanExporter: m spans exported one per call (as its
    SimpleSpanProcessor does) or in one batch call (the most favourable use)."""
    from flock.logging.telemetry_exporter.duckdb_exporter import DuckDBSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    m = int(p["m"])
    provider = TracerProvider(resource=Resource.create({"service.name": "flock"}))
    tracer = provider.get_tracer("flock")
    spans = []
    for i in range(m):
        span = tracer.start_span(
            "Agent.execute",
            attributes={
                "gen_ai.agent.name": "chef",
                "flock.run_id": "8f0c2f6e-3c1b-4bd4-9a43-2d1c8a0d6f11",
                "flock.attempt": 1,
                "flock.input.ids": ["0b9d8c4e-1f7a-4c3b-8f55-6a2e9d7c1b03"],
                "flock.workflow": True,
                "workflow.name": "pizza_workflow",
                "flock.correlation_id": f"corr-{i % 997}",
                "input.value": '{"topic":"' + "x" * 120 + f'","n":{i}}}',
            },
        )
        span.end()
        spans.append(span)
    exporter = DuckDBSpanExporter(".flock", "traces.duckdb")
    gc.collect()  # the fixtures' collection debt is paid before timing, as for ours
    t0 = time.perf_counter()
    if p.get("batch"):
        exporter.export(spans)
    else:
        for span in spans:
            exporter.export([span])
    elapsed = time.perf_counter() - t0
    import duckdb

    with duckdb.connect(".flock/traces.duckdb", read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    return {"m": m, "rows": int(rows), "total_s": elapsed, "spans_per_s": m / elapsed}


async def pizza(p: dict[str, Any]) -> dict[str, Any]:
    from flock import Flock, flock_type
    from flock.components import EngineComponent

    @flock_type
    class Idea(BaseModel):
        topic: str

    @flock_type
    class Pizza(BaseModel):
        name: str
        toppings: list[str]
        steps: list[str]

    class Chef(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Any, inputs: Any) -> Any:
            topic = inputs.artifacts[0].payload["topic"]
            return Pizza(
                name=f"{topic} pizza",
                toppings=["tomato", "mozzarella", "basil", topic],
                steps=["make dough", "add sauce", "add toppings", "bake at 250°C for 10 min"],
            )

    flock = Flock()
    flock.agent("pizza_master").consumes(Idea).publishes(Pizza).with_engines(Chef())
    runs = int(p["runs"])
    t0 = time.perf_counter()
    for i in range(runs):
        async with flock.traced_run("pizza_workflow"):
            await flock.publish(Idea(topic=f"pineapple {i}"))
            await flock.run_until_idle()
    elapsed = time.perf_counter() - t0
    from opentelemetry import trace

    trace.get_tracer_provider().shutdown()
    return {"runs": runs, "elapsed_s": elapsed, **trace_file_stats(Path(".flock/traces.duckdb"))}


async def dspy_pizza(p: dict[str, Any]) -> dict[str, Any]:
    """The seed's workflow with flock-core's default DSPy engine against the stand-in server.

    ``Flock("openai/gpt-4o")``, agent ``pizza_master`` consumes ``PizzaIdea`` and publishes
    ``Pizza``, no ``with_engines`` (the peer builds its DSPyEngine: streaming, a new dspy.LM per
    call) and its default ``max_concurrency``; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point
    litellm at the server. Same shapes as ours: ``run`` = one traced_run per input (the seed's),
    ``batch`` = one traced_run around all N, ``clients`` = ``run`` by several callers at once. ``warmup`` runs are not timed.
    """
    from pydantic import Field

    from flock import Flock, flock_type

    @flock_type(name="PizzaIdea")
    class PizzaIdea(BaseModel):
        topic: str = Field(description="what the pizza should be about")

    @flock_type(name="Pizza")
    class Pizza(BaseModel):
        name: str
        toppings: list[str]
        description: str

    flock = Flock("openai/gpt-4o")
    (
        flock.agent("pizza_master")
        .description("Invents a pizza from an idea")
        .consumes(PizzaIdea)
        .publishes(Pizza)
    )
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
    pizzas_before = len(await flock.store.list_by_type("Pizza"))
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
    pizzas = await flock.store.list_by_type("Pizza")
    made = len(pizzas) - pizzas_before
    result: dict[str, Any] = {
        "n": n,
        "shape": shape,
        "clients": int(p.get("clients", 1)) if shape == "clients" else 1,
        "warmup": warmup,
        "warmup_s": warmup_s,
        "pizzas": made,
        "complete": made == n and all((a.payload or {}).get("name") for a in pizzas),
        "elapsed_s": elapsed,
        "per_s": n / elapsed,
    }
    return {**result, **span_count(Path(".flock/traces.duckdb"))}


def span_count(path: Path) -> dict[str, Any]:
    """Spans and bytes in the peer's trace file (empty when it wrote none)."""
    if not path.exists():
        return {}
    import duckdb

    with duckdb.connect(str(path), read_only=True) as conn:
        spans = int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
    return {"spans_in_file": spans, "file_bytes": path.stat().st_size}


WORKLOADS = {
    "throughput": throughput,
    "span_cost": span_cost,
    "writer": writer,
    "pizza": pizza,
    "dspy_pizza": dspy_pizza,
}


if __name__ == "__main__":
    run(WORKLOADS, auto_trace=os.environ.get("FLOCK_AUTO_TRACE"))
