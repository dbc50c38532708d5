"""Failures a worker used to lose on PostgreSQL: after publishing, in a where= predicate
evaluated in the worker, and stored inputs that no longer load; and aliased payloads."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import sql
from pydantic import BaseModel, Field

from flock.artifacts import Artifact
from flock.components import AgentComponent, RunContext
from flock.exceptions import AgentFailures, PayloadValidationError
from flock.orchestrator import Flock
from flock.registry import flock_type, registry
from flock.store.postgres import PostgresStore
from tests.models import Idea, Pizza, Review


class FailingNotifier(AgentComponent):
    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        raise RuntimeError("webhook down")


async def run_states(store: PostgresStore) -> dict[str, str]:
    return {r["agent"]: r["state"] for r in await store.runs()}


async def test_a_failure_after_publishing_in_a_worker_is_reported(
    pg_dsn: str, pg_schema: str
) -> None:
    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(lambda idea: Pizza(name=idea.topic))
        .with_utilities(FailingNotifier())
        .retries(1, backoff=0)
        .without_output()
    )
    try:
        await flock.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures) as info:
            await flock.run_until_idle(timeout=30)
        (failure,) = info.value.failures
        assert "webhook down" in str(failure) and len(failure.published) == 1
        assert isinstance(failure.__cause__, RuntimeError)
        assert await run_states(store) == {"chef": "failed"}
        assert len(await store.query(type=registry.name_of(Pizza))) == 1  # published once
    finally:
        await store.close()


async def test_a_where_predicate_failing_in_a_worker_reaches_the_publisher(
    pg_dsn: str, pg_schema: str
) -> None:
    def build(store: PostgresStore) -> Flock:
        flock = Flock(store=store)

        def picky(pizza: Pizza) -> bool:
            raise ValueError("predicate bug")

        flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
            lambda idea: Pizza(name=idea.topic)
        ).without_output()
        flock.agent("critic").consumes(Pizza, where=picky).publishes(Review).with_engines(
            lambda pizza: Review(score=1)
        ).without_output()
        return flock

    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    publisher, worker = (build(s) for s in stores)
    task = asyncio.create_task(worker.work())  # the chef's output is routed in the worker
    try:
        await publisher.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert failure.agent == "critic"
        assert "predicate bug" in str(failure) and "where= predicate raised" in str(failure)
        assert await run_states(stores[0]) == {"chef": "done", "critic": "failed"}
        assert worker._failures == []  # nothing left unreported in the worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


@flock_type
class Ticket(BaseModel):
    ticket_id: str = Field(alias="ticketId")


async def test_aliased_payloads_round_trip_through_the_queue(pg_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    flock.agent("support").consumes(Ticket).publishes(Pizza).with_engines(
        lambda ticket: Pizza(name=ticket.ticket_id)
    ).without_output()
    try:
        ticket = await flock.publish(
            {"type": registry.name_of(Ticket), "payload": {"ticketId": "T-1"}}
        )
        got = await store.get(ticket.id)
        assert got is not None and got.payload == Ticket(ticketId="T-1")
        await flock.run_until_idle(timeout=30)
        (pizza,) = await store.query(type=registry.name_of(Pizza))
        assert pizza.payload.name == "T-1"
        assert await store.payloads(Pizza, produced_by="support") == [Pizza(name="T-1")]
    finally:
        await store.close()


async def test_a_run_whose_stored_input_no_longer_loads_fails_and_is_reported(
    pg_dsn: str, pg_schema: str
) -> None:
    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    ).without_output()
    try:
        idea = await flock.publish(Idea(topic="spicy"))
        # The stored payload stops matching the model (as after a model change).
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.artifacts SET payload = %s::jsonb WHERE id = %s").format(
                    sql.Identifier(pg_schema)
                ),
                ['{"topic": ""}', idea.id],
            )
        with pytest.raises(AgentFailures) as info:
            await flock.run_until_idle(timeout=30)
        (failure,) = info.value.failures
        assert "could not load its inputs" in str(failure) and idea.id in str(failure)
        assert await run_states(store) == {"chef": "failed"}  # not left leased
    finally:
        await store.close()


async def test_a_run_whose_stored_input_type_is_unknown_here_fails_with_the_reason(
    pg_dsn: str, pg_schema: str
) -> None:
    # A publisher run as `python app.py` stores its types as __main__.*, which a worker that
    # imports app cannot resolve: the worker used to die on it and leave the runs leased.
    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    ).without_output()
    try:
        idea = await flock.publish(Idea(topic="spicy"))
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.artifacts SET type = %s WHERE id = %s").format(
                    sql.Identifier(pg_schema)
                ),
                ["__main__.Idea", idea.id],
            )
        with pytest.raises(AgentFailures) as info:
            await flock.run_until_idle(timeout=30)
        (failure,) = info.value.failures
        assert "could not load its inputs" in str(failure)
        assert "unknown type '__main__.Idea'" in str(failure)
        assert "a module that the publisher and the workers both import" in str(failure)
        assert await run_states(store) == {"chef": "failed"}  # not left leased
    finally:
        await store.close()


class SlowFailingNotifier(AgentComponent):
    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        await asyncio.sleep(0.5)  # the publisher checks for idle meanwhile
        raise RuntimeError("webhook down late")


async def test_a_late_failure_after_publishing_reaches_a_publisher_that_only_waits(
    pg_dsn: str, pg_schema: str
) -> None:
    def build(store: PostgresStore) -> Flock:
        flock = Flock(store=store)
        (
            flock.agent("chef")
            .consumes(Idea)
            .publishes(Pizza)
            .with_engines(lambda idea: Pizza(name=idea.topic))
            .with_utilities(SlowFailingNotifier())
            .without_output()
        )
        return flock

    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    publisher, worker = (build(s) for s in stores)
    task = asyncio.create_task(worker.work())
    try:
        await publisher.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert "webhook down late" in str(failure)
        assert await run_states(stores[0]) == {"chef": "failed"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_worker_that_takes_over_its_own_run_keeps_its_lease(
    pg_dsn: str, pg_schema: str
) -> None:
    calls: list[float] = []
    started = asyncio.Event()

    async def slow(idea: Idea) -> Pizza:
        calls.append(asyncio.get_running_loop().time())
        started.set()
        # Longer than the lease (kept only by renewal); attempt 2 outlives attempt 1.
        await asyncio.sleep(1.5 if len(calls) == 1 else 3.0)
        return Pizza(name=idea.topic)

    store = PostgresStore(pg_dsn, schema=pg_schema)
    flock = Flock(store=store)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow).without_output()
    task = asyncio.create_task(flock.work(lease=0.5))
    try:
        await flock.publish(Idea(topic="spicy"))
        await asyncio.wait_for(started.wait(), 30)
        # The lease runs out once (as after a database outage longer than the lease), and
        # this worker is woken at once: it claims the run again as attempt 2, and must keep
        # renewing that lease while attempt 1 ends with a lost lease.
        # Both in one transaction: the wake-up sees the expired lease.
        with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {}.runs SET lease_until = now() - interval '1 s'").format(
                    sql.Identifier(pg_schema)
                )
            )
            conn.execute("SELECT pg_notify(%s, 'q')", [store.channel])
        await flock.run_until_idle(timeout=30, work=False)
        (run,) = await store.runs()
        assert (run["state"], run["attempt"]) == ("done", 2)
        assert len(calls) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_a_schema_name_with_capitals_works(pg_dsn: str) -> None:
    schema = "Flock_Test_Capitals"
    store = PostgresStore(pg_dsn, schema=schema)
    try:
        flock = Flock(store=store)
        idea = await flock.publish(Idea(topic="spicy"))
        assert (await store.get(idea.id)) == idea
    finally:
        await store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@flock_type
class Reading(BaseModel):
    value: float
    label: str = ""


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (Reading(value=float("nan")), "would not load back"),
        (Reading(value=float("inf")), "would not load back"),
        (Reading(value=1.0, label="a\x00b"), "NUL character"),
    ],
    ids=["nan", "infinity", "nul"],
)
async def test_payloads_postgres_cannot_hold_are_refused_at_publish(
    pg_store: PostgresStore, reading: Reading, reason: str
) -> None:
    flock = Flock(store=pg_store)
    with pytest.raises(PayloadValidationError, match=reason):
        await flock.publish(reading)
    assert await pg_store.query() == []
