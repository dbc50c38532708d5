"""A where= predicate that raises: on PostgreSQL, as in memory, the failure keeps the exception
as ``__cause__`` when the predicate failed in this process (only its text otherwise)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from flock.exceptions import AgentFailures, AgentRunError
from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.store.memory import MemoryStore
from flock.store.postgres import PostgresStore
from tests.models import Idea, Pizza, Review


@flock_type(name="tests.store.where_cause.Quota")
class Quota(BaseModel):
    n: int


def picky_flock(store: MemoryStore | PostgresStore) -> Flock:
    flock = Flock(store=store)
    flock.agent("picky").consumes(Quota, where=lambda q: 1 / q.n > 0).with_engines(
        lambda q: None
    ).without_output()
    return flock


async def failure_of(flock: Flock) -> AgentRunError:
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    return failure


async def test_a_where_predicate_raising_in_the_publisher_keeps_its_cause(
    pg_store: PostgresStore,
) -> None:
    flocks = [picky_flock(MemoryStore()), picky_flock(pg_store)]
    for flock in flocks:
        await flock.publish(Quota(n=0))
        failure = await failure_of(flock)
        assert type(failure) is AgentRunError
        assert isinstance(failure.__cause__, ZeroDivisionError)
        assert failure.agent == "picky" and len(failure.artifacts) == 1
        assert "its where= predicate raised" in str(failure)
        await flock.run_until_idle(timeout=30)  # reported once
    assert [r["state"] for r in await pg_store.runs()] == ["failed"]
    assert flocks[1]._distributed is not None
    assert flocks[1]._distributed.routing_errors == {}  # nothing kept once reported


async def test_a_where_predicate_raising_on_an_output_worked_here_keeps_its_cause(
    pg_store: PostgresStore,
) -> None:
    flock = Flock(store=pg_store)

    def picky(pizza: Pizza) -> bool:
        raise ValueError("predicate bug")

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    ).without_output()
    flock.agent("critic").consumes(Pizza, where=picky).publishes(Review).with_engines(
        lambda pizza: Review(score=1)
    ).without_output()
    await flock.publish(Idea(topic="spicy"))
    failure = await failure_of(flock)  # the chef's output is routed by this process
    assert failure.agent == "critic" and isinstance(failure.__cause__, ValueError)
    assert "predicate bug" in str(failure)


async def test_a_worker_keeps_no_exception_for_the_failures_it_routes(
    pg_dsn: str, pg_schema: str
) -> None:
    def build(store: PostgresStore) -> Flock:
        flock = Flock(store=store)

        def picky(pizza: Pizza) -> bool:
            raise ValueError("predicate bug")

        flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
            lambda idea: Pizza(name=idea.topic)
        ).without_output()
        flock.agent("critic").consumes(Pizza, where=picky).with_engines(
            lambda pizza: None
        ).without_output()
        return flock

    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    publisher, worker = (build(s) for s in stores)
    task = asyncio.create_task(worker.work())  # a worker: it reports nothing itself
    try:
        await publisher.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert failure.agent == "critic" and "predicate bug" in str(failure)
        assert failure.__cause__ is None  # it failed in the worker: its text only
        assert worker._distributed is not None and worker._distributed.routing_errors == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))
