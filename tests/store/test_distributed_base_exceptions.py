"""A PostgreSQL worker and a ``BaseException`` from an agent's code that is not fatal (as
pytest's ``Failed``): a failure of that run like any ``Exception``. It used to end the run's
task silently and leave the run leased: no failure reported, ``run_until_idle`` waiting for
the lease to expire, and the run claimed and lost the same way again."""

from __future__ import annotations

import asyncio

import pytest

from flock.artifacts import Artifact
from flock.components import AgentComponent, RunContext
from flock.exceptions import AgentFailures
from flock.orchestrator import Flock
from flock.store.postgres import PostgresStore
from tests.models import Idea, Pizza, Review


class Oops(BaseException):
    """Not an ``Exception``, and not fatal (not Ctrl-C, ``sys.exit`` or a cancellation)."""


class BurnsBadIdeas(AgentComponent):
    async def on_pre_evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
        if inputs[0].payload == Idea(topic="bad"):
            raise Oops("the hook burnt it")
        return inputs


async def states(store: PostgresStore) -> dict[str, tuple[str, int]]:
    return {f"{r['agent']}": (r["state"], r["attempt"]) for r in await store.runs()}


async def test_a_base_exception_fails_the_run_and_is_reported(pg_dsn: str, pg_schema: str) -> None:
    calls: list[str] = []

    def burn(idea: Idea) -> Pizza:
        calls.append(idea.topic)
        raise Oops("burnt")

    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(burn).without_output()
    flock.agent("critic").consumes(Idea).publishes(Review).with_engines(
        lambda idea: Review(score=7)
    ).without_output()
    try:
        await flock.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures) as info:
            await flock.run_until_idle(timeout=10)  # the lease (30 s) does not run out
        (failure,) = info.value.failures
        assert failure.agent == "chef" and failure.attempts == 1
        assert str(failure).startswith("agent 'chef' failed on tests.models.Idea ")
        assert str(failure).endswith(": Oops: burnt")
        assert isinstance(failure.__cause__, Oops)
        assert await states(store) == {"chef": ("failed", 1), "critic": ("done", 1)}
        (chef,) = await store.runs(agent="chef")
        assert chef["error"] == str(failure) and chef["lease_until"] is None
        assert await store.payloads(Review) == [Review(score=7)]
        assert await store.payloads(Pizza) == []
        assert calls == ["spicy"]  # once: not retried (no .retries()) nor taken over
    finally:
        await store.close()


async def test_a_base_exception_is_retried_like_an_error(pg_dsn: str, pg_schema: str) -> None:
    calls: list[str] = []

    def flaky(idea: Idea) -> Pizza:
        calls.append(idea.topic)
        if len(calls) == 1:
            raise Oops("first try burnt")
        return Pizza(name=idea.topic)

    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(flaky)
        .retries(1, backoff=0)
        .without_output()
    )
    try:
        await flock.publish(Idea(topic="spicy"))
        await flock.run_until_idle(timeout=10)  # no AgentFailures: the retry succeeded
        assert calls == ["spicy", "spicy"]
        assert await store.payloads(Pizza) == [Pizza(name="spicy")]
        assert await states(store) == {"chef": ("done", 1)}  # retried in the same claim
    finally:
        await store.close()


async def test_a_worker_goes_on_after_a_hook_raises_a_base_exception(
    pg_dsn: str, pg_schema: str
) -> None:
    def build(store: PostgresStore) -> Flock:
        flock = Flock(store=store)
        (
            flock.agent("chef")
            .consumes(Idea)
            .publishes(Pizza)
            .with_engines(lambda idea: Pizza(name=idea.topic))
            .with_utilities(BurnsBadIdeas())
            .without_output()
        )
        return flock

    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    publisher, worker = (build(s) for s in stores)
    task = asyncio.create_task(worker.work())
    try:
        await publisher.publish(Idea(topic="bad"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=10, work=False)
        (failure,) = info.value.failures
        assert failure.agent == "chef"
        (run,) = await stores[0].runs()
        assert (run["state"], run["attempt"]) == ("failed", 1)
        assert "Oops: the hook burnt it" in str(failure)
        assert f"(run {run['id']}, attempt 1, worker {run['worker_id']})" in str(failure)
        # The worker still works: the next run is done.
        await publisher.publish(Idea(topic="good"))
        await publisher.run_until_idle(timeout=10, work=False)
        assert not task.done()
        assert await stores[0].payloads(Pizza) == [Pizza(name="good")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))
