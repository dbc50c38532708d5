"""A two-agent chain on a shared PostgreSQL store, for the multi-process tests.

Workers run it with ``flock worker tests/store/chain_app.py:flock``; the publisher with
``python chain_app.py publish N`` (publishes N jobs inside ``traced_run("chain_workflow")``,
waits — without working — until every worker is idle, prints the trace id).

The store comes from ``FLOCK_STORE_URL`` / ``FLOCK_STORE_SCHEMA``; ``CHAIN_SLEEP`` makes each
engine call sleep that many seconds (an LLM stand-in).
"""

from __future__ import annotations

import asyncio
import os
import sys

from opentelemetry import trace
from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type(name="chain.Job")
class Job(BaseModel):
    n: int


@flock_type(name="chain.Step")
class Step(BaseModel):
    n: int
    pid: int


@flock_type(name="chain.Done")
class Done(BaseModel):
    n: int
    pid: int


SLEEP = float(os.environ.get("CHAIN_SLEEP", "0"))
CONCURRENCY = int(os.environ.get("CHAIN_CONCURRENCY", "4"))


async def first(job: Job) -> Step:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    return Step(n=job.n, pid=os.getpid())


async def second(step: Step) -> Done:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    return Done(n=step.n, pid=os.getpid())


flock = Flock()
(
    flock.agent("first")
    .consumes(Job)
    .publishes(Step)
    .with_engines(first)
    .without_output()
    .max_concurrency(CONCURRENCY)
)
(
    flock.agent("second")
    .consumes(Step)
    .publishes(Done)
    .with_engines(second)
    .without_output()
    .max_concurrency(CONCURRENCY)
)


async def publish(n: int, batch: int = 1000) -> str:
    async with flock.traced_run("chain_workflow") as span:
        for start in range(0, n, batch):
            await flock.publish([Job(n=i) for i in range(start, min(n, start + batch))])
        print("published", flush=True)
        await flock.run_until_idle(
            work=False, timeout=float(os.environ.get("CHAIN_TIMEOUT", "600"))
        )
        trace_id = f"{span.get_span_context().trace_id:032x}"
    await flock.store.close()
    return trace_id


if __name__ == "__main__" and sys.argv[1:2] == ["publish"]:
    print("trace", asyncio.run(publish(int(sys.argv[2]))), flush=True)
    trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
