"""PostgresStore against the real local PostgreSQL (one schema per test, dropped after)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags
from psycopg import sql

from flock.artifacts import Artifact
from flock.exceptions import (
    AgentFailures,
    AgentRunError,
    ConfigurationError,
    PayloadValidationError,
    RunawayLoopError,
)
from flock.orchestrator import Flock
from flock.registry import registry
from flock.store.postgres import SCHEMA_VERSION, PostgresStore, parse_traceparent
from flock.store.queue import LeaseLost, RunRequest
from flock.testing import SpanCapture
from tests.models import Idea, Note, Pizza, Review

IDEA = registry.name_of(Idea)
PIZZA = registry.name_of(Pizza)
REVIEW = registry.name_of(Review)


def idea(topic: str, **kwargs: object) -> Artifact:
    return Artifact(type=IDEA, payload=Idea(topic=topic), **kwargs)  # type: ignore[arg-type]


def execute(dsn: str, schema: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cur = conn.execute(query)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []


# Schema --------------------------------------------------------------------------


async def test_schema_is_created_and_versioned(
    pg_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    assert await pg_store.is_idle()
    rows = execute(pg_dsn, pg_schema, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    tables = execute(
        pg_dsn,
        pg_schema,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{pg_schema}'",
    )
    assert {r[0] for r in tables} == {
        "schema_version",
        "artifacts",
        "consumptions",
        "runs",
        "run_counts",
    }


async def test_many_stores_migrate_one_schema_at_once(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.is_idle() for s in stores)) == [True] * 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    rows = execute(pg_dsn, pg_schema, "SELECT count(*) FROM schema_version")
    assert rows == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(pg_dsn: str, pg_schema: str) -> None:
    first = PostgresStore(pg_dsn, schema=pg_schema)
    await first.is_idle()
    await first.close()
    execute(pg_dsn, pg_schema, f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1})")
    newer = PostgresStore(pg_dsn, schema=pg_schema)
    with pytest.raises(ConfigurationError, match="newer than this flock"):
        await newer.is_idle()
    await newer.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresStore("postgresql://x", schema="a; DROP TABLE y")
    with pytest.raises(ConfigurationError, match="connection string"):
        PostgresStore("")


# Store interface -----------------------------------------------------------------


async def test_put_get_query_round_trip(pg_store: PostgresStore) -> None:
    span = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    a = idea("spicy", tags=frozenset({"x", "y"}), correlation_id="c1", span_context=span)
    b = Artifact(type=PIZZA, payload=Pizza(name="p", toppings=["ham"]), produced_by="chef",
                 correlation_id="c1")  # fmt: skip
    c = idea("mild", correlation_id="c2")
    await pg_store.put([a, b])
    await pg_store.put([c])

    got = await pg_store.get(a.id)
    assert got is not None
    assert got.payload == Idea(topic="spicy") and isinstance(got.payload, Idea)
    assert (got.type, got.produced_by, got.correlation_id, got.tags) == (
        IDEA, "external", "c1", frozenset({"x", "y"}),
    )  # fmt: skip
    assert got.traceparent == a.traceparent and got.span_context is not None
    assert got.span_context.is_remote
    assert abs(got.created_at - a.created_at) < timedelta(milliseconds=1)
    assert await pg_store.get("nope") is None

    assert [x.id for x in await pg_store.query()] == [a.id, b.id, c.id]
    assert [x.id for x in await pg_store.query(type=IDEA)] == [a.id, c.id]
    assert [x.id for x in await pg_store.query(correlation_id="c1")] == [a.id, b.id]
    assert [x.id for x in await pg_store.query(produced_by="chef")] == [b.id]
    assert [x.id for x in await pg_store.query(type=IDEA, correlation_id="c2")] == [c.id]
    assert [x.id for x in await pg_store.query(limit=2)] == [b.id, c.id]
    assert await pg_store.query(limit=0) == []
    # Putting the same artifact again stores nothing twice.
    await pg_store.put([a])
    assert len(await pg_store.query()) == 3


async def test_consumption_records(pg_store: PostgresStore) -> None:
    a = idea("x")
    await pg_store.put([a])
    await pg_store.record_consumption(a.id, "chef")
    await pg_store.record_consumption(a.id, "critic")
    assert await pg_store.consumers(a.id) == ["chef", "critic"]
    assert await pg_store.consumers("other") == []


async def test_payloads_are_revalidated_on_load(
    pg_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    a = Artifact(type=REVIEW, payload=Review(score=5))
    await pg_store.put([a])
    execute(pg_dsn, pg_schema, """UPDATE artifacts SET payload = '{"score": 99}'""")
    with pytest.raises(PayloadValidationError, match="not a valid"):
        await pg_store.get(a.id)


def test_parse_traceparent() -> None:
    ctx = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, int(ctx.trace_flags)) == (
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1,
    )  # fmt: skip
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01"):
        assert parse_traceparent(bad) is None


# Work queue ----------------------------------------------------------------------


async def test_enqueue_is_unique_per_agent_and_artifacts(pg_store: PostgresStore) -> None:
    a = idea("x")
    await pg_store.put([a])
    assert await pg_store.enqueue("chef", [a.id]) is True
    assert await pg_store.enqueue("chef", [a.id]) is False
    assert await pg_store.enqueue("critic", [a.id]) is True
    await pg_store.publish([], [RunRequest("chef", (a.id,))])
    assert await pg_store.run_states() == {"queued": 2}
    assert not await pg_store.is_idle()


async def test_concurrent_claims_never_share_a_run(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(3)]
    try:
        artifacts = [idea(f"t{i}") for i in range(60)]
        await stores[0].publish(artifacts, [RunRequest("chef", (a.id,)) for a in artifacts])
        claims = await asyncio.gather(
            *(s.claim(f"w{i}", ["chef"], 30, limit=7) for i in range(6) for s in stores[:1]),
            *(s.claim(f"v{i}", ["chef"], 30, limit=7) for i, s in enumerate(stores)),
        )
        ids = [run.id for claim in claims for run in claim]
        assert len(ids) == len(set(ids)) == 60
        assert all(run.attempt == 1 for claim in claims for run in claim)
        assert await stores[1].claim("late", ["chef"], 30, limit=5) == []
        assert await stores[1].run_states() == {"leased": 60}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_claim_filters_by_agent_and_loads_validated_artifacts(
    pg_store: PostgresStore,
) -> None:
    a, b = idea("x"), idea("y")
    await pg_store.publish(
        [a, b],
        [RunRequest("chef", (a.id,), "wf"), RunRequest("critic", (b.id, a.id))],
    )
    (run,) = await pg_store.claim("w1", ["critic"], 30, limit=5)
    assert run.agent == "critic" and [x.id for x in run.artifacts] == [b.id, a.id]
    assert isinstance(run.artifacts[0].payload, Idea)
    (run,) = await pg_store.claim("w1", ["chef", "critic"], 30, limit=5)
    assert (run.agent, run.workflow, run.worker_id) == ("chef", "wf", "w1")


async def test_an_expired_lease_is_claimed_again_as_attempt_two(
    pg_store: PostgresStore,
) -> None:
    a = idea("x")
    await pg_store.publish([a], [RunRequest("chef", (a.id,))])
    (first,) = await pg_store.claim("dead", ["chef"], 0.2)
    assert await pg_store.claim("other", ["chef"], 30) == []  # still leased
    await asyncio.sleep(0.3)
    (second,) = await pg_store.claim("other", ["chef"], 30)
    assert (second.id, second.attempt, second.previous_worker) == (first.id, 2, "dead")
    assert second.previous_claimed_at is not None
    # The dead worker's late completion is refused and stores nothing.
    out = Artifact(type=PIZZA, payload=Pizza(name="late"), produced_by="chef")
    with pytest.raises(LeaseLost, match="held by other"):
        await pg_store.complete(first, outputs=[out])
    assert await pg_store.get(out.id) is None
    # The new holder completes it; doing so again (a retried commit) is harmless.
    await pg_store.complete(second, outputs=[out], runs=[RunRequest("critic", (out.id,))])
    await pg_store.complete(second, outputs=[out])
    assert await pg_store.get(out.id) is not None
    assert await pg_store.consumers(a.id) == ["chef"]
    assert await pg_store.run_states() == {"done": 1, "queued": 1}


async def test_renew_keeps_a_lease(pg_store: PostgresStore) -> None:
    a = idea("x")
    await pg_store.publish([a], [RunRequest("chef", (a.id,))])
    (run,) = await pg_store.claim("w1", ["chef"], 0.3)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await pg_store.renew("w1", [run.id], 0.3) == 1
    assert await pg_store.claim("w2", ["chef"], 30) == []
    assert await pg_store.renew("w2", [run.id], 30) == 0  # not its lease


async def test_fail_and_give_up_after_max_attempts(pg_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(pg_dsn, schema=pg_schema, max_attempts=2)
    try:
        a, b = idea("x"), idea("y")
        await store.publish([a, b], [RunRequest("chef", (a.id,)), RunRequest("chef", (b.id,))])
        first = await store.claim("w1", ["chef"], 0.1, limit=2)
        await store.fail(first[0], "boom")
        await asyncio.sleep(0.2)
        (again,) = await store.claim("w2", ["chef"], 0.1)
        assert (again.id, again.attempt) == (first[1].id, 2)
        await asyncio.sleep(0.2)
        assert await store.claim("w3", ["chef"], 30) == []  # gave up: abandoned twice
        runs = await store.runs()
        assert [(r["state"], r["error"]) for r in runs] == [
            ("failed", "boom"),
            ("failed", "abandoned 2 times: worker w2 stopped renewing its lease"),
        ]
        assert await store.is_idle()
    finally:
        await store.close()


async def test_notify_wakes_a_waiting_worker(pg_dsn: str, pg_schema: str) -> None:
    waiter = PostgresStore(pg_dsn, schema=pg_schema)
    publisher = PostgresStore(pg_dsn, schema=pg_schema)
    try:
        assert await waiter.listen()
        seen = waiter.changes(work_only=True)
        a = idea("x")

        async def publish_later() -> None:
            await asyncio.sleep(0.2)
            await publisher.publish([a], [RunRequest("chef", (a.id,))])

        task = asyncio.create_task(publish_later())
        started = time.perf_counter()
        await waiter.wait_for_change(30, seen=seen, work_only=True)
        assert time.perf_counter() - started < 5
        assert waiter.changes(work_only=True) > seen
        await task
        # A completion wakes idle-waiters but not work-waiters.
        (run,) = await waiter.claim("w", ["chef"], 30)
        seen_work, seen_any = waiter.changes(work_only=True), waiter.changes()
        await publisher.complete(run)
        await waiter.wait_for_change(30, seen=seen_any)
        assert waiter.changes() > seen_any and waiter.changes(work_only=True) == seen_work
    finally:
        await waiter.close()
        await publisher.close()


# The orchestrator on PostgreSQL --------------------------------------------------


def chain(store: PostgresStore, **kwargs: object) -> Flock:
    flock = Flock(store=store, **kwargs)  # type: ignore[arg-type]
    (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(lambda i: Pizza(name=f"{i.topic} pizza"))
        .without_output()
    )
    (
        flock.agent("critic")
        .consumes(Pizza)
        .publishes(Review)
        .with_engines(lambda p: Review(score=len(p.name) % 10))
        .without_output()
    )
    return flock


async def test_a_chain_runs_through_the_queue(pg_store: PostgresStore) -> None:
    flock = chain(pg_store)
    await flock.publish([Idea(topic=f"t{i}") for i in range(20)])
    assert await pg_store.run_states() == {"queued": 20}
    await flock.run_until_idle(timeout=60)
    reviews = await pg_store.query(type=REVIEW)
    assert len(reviews) == 20 and all(r.produced_by == "critic" for r in reviews)
    runs = await pg_store.runs()
    assert len(runs) == 40 and {(r["state"], r["attempt"]) for r in runs} == {("done", 1)}
    # Each (artifact, agent) pair ran once.
    assert len({(r["agent"], tuple(r["artifact_ids"])) for r in runs}) == 40
    for pizza in await pg_store.query(type=PIZZA):
        assert await pg_store.consumers(pizza.id) == ["critic"]


async def test_a_publisher_that_does_not_work_waits_for_the_workers(
    pg_dsn: str, pg_schema: str
) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(3)]
    publisher, *workers = (chain(s) for s in stores)
    tasks = [asyncio.create_task(w.work(concurrency=2)) for w in workers]
    try:
        await publisher.publish([Idea(topic=f"t{i}") for i in range(30)])
        await publisher.run_until_idle(timeout=60, work=False)
        assert len(await stores[0].query(type=REVIEW)) == 30
        runs = await stores[0].runs()
        assert {r["state"] for r in runs} == {"done"} and len(runs) == 60
        assert len({r["worker_id"] for r in runs}) == 2  # both workers took runs
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_failing_agent_is_reported_and_marked_failed(pg_store: PostgresStore) -> None:
    flock = Flock(store=pg_store)

    def explode(idea: Idea) -> Pizza:
        raise ValueError(f"no {idea.topic}")

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(explode).without_output()
    await flock.publish(Idea(topic="anchovies"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert failure.agent == "chef" and isinstance(failure.__cause__, ValueError)
    (run,) = await pg_store.runs()
    assert run["state"] == "failed" and "no anchovies" in run["error"]


async def test_where_and_tags_route_at_publish(pg_store: PostgresStore) -> None:
    flock = Flock(store=pg_store)
    (
        flock.agent("chef")
        .consumes(Idea, where=lambda i: i.topic.startswith("ok"), tags=["go"])
        .publishes(Note)
        .with_engines(lambda i: Note(text=i.topic))
        .without_output()
    )
    await flock.publish([Idea(topic="ok1"), Idea(topic="no")], tags=["go"])
    await flock.publish(Idea(topic="ok2"))
    await flock.run_until_idle(timeout=30)
    assert [n.payload.text for n in await pg_store.query(type=registry.name_of(Note))] == ["ok1"]


async def test_agent_runs_are_children_of_the_publish_span(pg_store: PostgresStore) -> None:
    publisher_capture, worker_capture = SpanCapture(), SpanCapture()
    publisher = chain(pg_store, tracer_provider=publisher_capture.provider)
    worker = chain(pg_store, tracer_provider=worker_capture.provider)
    async with publisher.traced_run("pg_workflow"):
        await publisher.publish(Idea(topic="x"))
        await worker.run_until_idle(timeout=30)
        await publisher.run_until_idle(timeout=30, work=False)
    (root,) = publisher_capture.named("pg_workflow")
    (publish,) = publisher_capture.named("Flock.publish")
    chef, critic = sorted(worker_capture.named("Agent.execute"), key=lambda s: s.start_time or 0)
    trace_id = root.context.trace_id
    assert {s.context.trace_id for s in (publish, chef, critic)} == {trace_id}
    assert chef.parent is not None and chef.parent.span_id == publish.context.span_id
    assert critic.parent is not None and critic.parent.span_id == chef.context.span_id
    assert chef.attributes is not None and critic.attributes is not None
    assert chef.attributes["workflow.name"] == "pg_workflow"
    assert chef.attributes["flock.attempt"] == 1
    assert str(chef.attributes["flock.worker.id"]).count(":") == 2


async def test_a_taken_over_run_shows_the_abandoned_attempt(pg_store: PostgresStore) -> None:
    capture = SpanCapture()
    flock = chain(pg_store, tracer_provider=capture.provider)
    await flock.publish(Idea(topic="x"))
    (abandoned,) = await pg_store.claim("dead-worker", ["chef"], 0.1)
    await asyncio.sleep(0.2)
    await flock.run_until_idle(timeout=30)
    runs = {r["agent"]: r for r in await pg_store.runs()}
    assert (runs["chef"]["attempt"], runs["chef"]["state"]) == (2, "done")
    executes = [
        s for s in capture.named("Agent.execute")
        if s.attributes is not None and s.attributes["gen_ai.agent.name"] == "chef"
    ]  # fmt: skip
    old, new = sorted(executes, key=lambda s: s.attributes["flock.attempt"])  # type: ignore[index]
    assert old.attributes is not None and new.attributes is not None
    assert old.attributes["flock.abandoned"] is True
    assert old.attributes["flock.worker.id"] == "dead-worker"
    assert old.status.status_code is StatusCode.ERROR
    assert "dead-worker stopped renewing its lease" in (old.status.description or "")
    assert new.attributes["flock.attempt"] == 2 and new.status.status_code is not StatusCode.ERROR
    assert old.attributes["flock.run_id"] == new.attributes["flock.run_id"] == str(abandoned.id)
    assert old.parent == new.parent  # both children of the publish


async def test_flock_store_url_selects_postgres(
    monkeypatch: pytest.MonkeyPatch, pg_dsn: str, pg_schema: str
) -> None:
    monkeypatch.setenv("FLOCK_STORE_URL", pg_dsn)
    monkeypatch.setenv("FLOCK_STORE_SCHEMA", pg_schema)
    flock = Flock()
    assert isinstance(flock.store, PostgresStore) and flock.store.schema == pg_schema
    await flock.store.close()
    monkeypatch.setenv("FLOCK_STORE_URL", "redis://x")
    with pytest.raises(ConfigurationError, match="not supported"):
        Flock()


async def test_work_needs_a_distributed_store() -> None:
    with pytest.raises(ConfigurationError, match="no work queue"):
        await Flock().work()


async def test_created_at_survives_as_utc(pg_store: PostgresStore) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    a = idea("x", created_at=when)
    await pg_store.put([a])
    got = await pg_store.get(a.id)
    assert got is not None and got.created_at == when


# Across workers: failures, the runaway-loop limit, stopping ----------------------


def picky_chef(store: PostgresStore) -> Flock:
    flock = Flock(store=store)

    def cook(idea: Idea) -> Pizza:
        if idea.topic.startswith("bad"):
            raise ValueError(f"no {idea.topic}")
        return Pizza(name=idea.topic)

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(cook).without_output()
    return flock


async def test_failures_in_other_workers_are_reported_to_their_publisher(
    pg_dsn: str, pg_schema: str
) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(3)]
    publisher, other, worker = (picky_chef(s) for s in stores)
    task = asyncio.create_task(worker.work(concurrency=2))
    try:
        mine = await publisher.publish([Idea(topic="bad1"), Idea(topic="ok"), Idea(topic="bad2")])
        theirs = await other.publish(Idea(topic="bad3"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        failures = sorted(info.value.failures, key=lambda f: "no bad2" in str(f))
        assert [type(f) for f in failures] == [AgentRunError, AgentRunError]
        assert [f.agent for f in failures] == ["chef", "chef"]
        assert [[a.id for a in f.artifacts] for f in failures] == [[mine[0].id], [mine[2].id]]
        assert "ValueError: no bad1" in str(failures[0])
        assert "ValueError: no bad2" in str(failures[1])
        assert all("worker" in str(f) and "attempt 1" in str(f) for f in failures)
        # Reported once; a later round in a reused workflow reports only its own failures.
        await publisher.run_until_idle(timeout=30, work=False)
        cid = mine[0].correlation_id
        await publisher.publish(Idea(topic="ok2"), correlation_id=cid)
        await publisher.run_until_idle(timeout=30, work=False)
        await publisher.publish(Idea(topic="bad4"), correlation_id=cid)
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert "no bad4" in str(failure)
        # The other publisher gets the failure of its own workflow, not ours.
        with pytest.raises(AgentFailures) as info:
            await other.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert [a.id for a in failure.artifacts] == [theirs.id] and "no bad3" in str(failure)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_run_that_failed_in_this_process_keeps_its_exception(
    pg_dsn: str, pg_schema: str
) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    publisher, worker = (picky_chef(s) for s in stores)
    try:
        await worker.publish(Idea(topic="bad-theirs"))
        ours = await publisher.publish(Idea(topic="bad-ours"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30)  # works both runs itself
        (failure,) = info.value.failures  # only its own workflow's
        assert [a.id for a in failure.artifacts] == [ours.id]
        assert isinstance(failure.__cause__, ValueError)
        with pytest.raises(AgentFailures) as info:
            await worker.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert "no bad-theirs" in str(failure)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


def echo(store: PostgresStore, max_agent_runs: int) -> Flock:
    flock = Flock(store=store, max_agent_runs=max_agent_runs)

    async def twice(note: Note) -> list[Note]:
        await asyncio.sleep(0.05)  # long enough for the other worker to claim a pending run
        return [Note(text=note.text + "."), Note(text=note.text + "!")]

    (
        flock.agent("echo")
        .consumes(Note)
        .publishes(Note)
        .prevent_self_trigger(False)
        .with_engines(twice)
        .without_output()
        .max_concurrency(4)
    )
    return flock


async def test_the_runaway_limit_holds_across_workers(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(3)]
    publisher, *workers = (echo(s, max_agent_runs=6) for s in stores)
    # One run at a time per worker: once runs fan out, both workers must take some (with
    # more, the first worker to wake could claim them all and the test would prove nothing
    # about counting across workers).
    tasks = [asyncio.create_task(w.work(concurrency=1)) for w in workers]
    try:
        note = await publisher.publish(Note(text="x"))
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert isinstance(failure, RunawayLoopError) and failure.agent == "echo"
        assert f"agent 'echo' ran 6 times in workflow '{note.correlation_id}'" in str(failure)
        runs = await stores[0].runs(agent="echo")
        assert sum(r["state"] == "done" for r in runs) == 6  # not 6 per worker
        assert len({r["worker_id"] for r in runs if r["state"] == "done"}) == 2
        stopped = [r for r in runs if r["state"] == "failed"]
        assert stopped and all(r["attempt"] == 0 and r["worker_id"] is None for r in stopped)
        assert len(await stores[0].query(produced_by="echo")) == 12
        await publisher.run_until_idle(timeout=30, work=False)  # reported once
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_stopped_worker_gives_its_runs_back_at_once(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    started = asyncio.Event()

    async def slow(idea: Idea) -> Pizza:
        started.set()
        await asyncio.sleep(60)
        return Pizza(name="never")

    stopping = Flock(store=stores[0])
    stopping.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow).without_output()
    taker = picky_chef(stores[1])
    try:
        await taker.publish(Idea(topic="x"))
        task = asyncio.create_task(stopping.work(lease=30))
        await asyncio.wait_for(started.wait(), 10)
        (run,) = await stores[1].runs()
        assert run["state"] == "leased" and run["attempt"] == 1
        task.cancel()  # what SIGTERM/Ctrl-C does in `flock worker`
        await asyncio.gather(task, return_exceptions=True)
        (run,) = await stores[1].runs()
        assert (run["state"], run["attempt"], run["lease_until"]) == ("queued", 0, None)
        begin = time.monotonic()
        await taker.run_until_idle(timeout=10)  # long before the 30 s lease would expire
        assert time.monotonic() - begin < 5
        (run,) = await stores[1].runs()
        assert (run["state"], run["attempt"], run["previous_worker"]) == ("done", 1, None)
        assert [p.payload.name for p in await stores[1].query(type=PIZZA)] == ["x"]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
