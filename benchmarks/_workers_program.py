"""The two-agent chain that ``benchmarks/workers.py`` runs on 1, 2 and 4 ``flock worker``s.

Each engine call sleeps ``BENCH_SLEEP`` seconds (default 0.05: an LLM stand-in); each agent
runs up to ``BENCH_CONCURRENCY`` (default 4) at once per worker. The store comes from
``FLOCK_STORE_URL`` / ``FLOCK_STORE_SCHEMA``.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type(name="bench.Job")
class Job(BaseModel):
    n: int


@flock_type(name="bench.Step")
class Step(BaseModel):
    n: int


@flock_type(name="bench.Done")
class Done(BaseModel):
    n: int


SLEEP = float(os.environ.get("BENCH_SLEEP", "0.05"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))


async def first(job: Job) -> Step:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    return Step(n=job.n)


async def second(step: Step) -> Done:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    return Done(n=step.n)


def build(flock: Flock) -> Flock:
    """Declare the chain's two agents on ``flock``."""
    for name, consumes, publishes, engine in (
        ("first", Job, Step, first),
        ("second", Step, Done, second),
    ):
        (
            flock.agent(name)
            .consumes(consumes)
            .publishes(publishes)
            .with_engines(engine)
            .without_output()
            .max_concurrency(CONCURRENCY)
        )
    return flock


flock = build(Flock())
