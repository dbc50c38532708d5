"""Visibility on PostgreSQL: stored and loaded with each artifact, the migration of a table
from before visibility, and routing across processes (a worker never runs an agent that may
not see the artifact)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import sql

from flock.artifacts import Artifact
from flock.exceptions import AgentFailures, PayloadValidationError
from flock.orchestrator import Flock
from flock.registry import registry
from flock.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from flock.visibility import (
    PUBLIC,
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    Visibility,
    only_for,
)
from tests.models import Idea, Note, Pizza
from tests.store.test_postgres import execute

IDEA = registry.name_of(Idea)
NOTE = registry.name_of(Note)
PIZZA = registry.name_of(Pizza)

KINDS: list[Visibility] = [
    PublicVisibility(),
    PrivateVisibility(agents={"b", "a"}),
    LabelledVisibility(required_labels={"clearance:secret", "eu"}),
    TenantVisibility(tenant_id="acme"),
    TenantVisibility(),
]


async def test_every_kind_round_trips_through_the_store(
    pg_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    artifacts = [
        Artifact(type=IDEA, payload=Idea(topic=f"t{i}"), visibility=v) for i, v in enumerate(KINDS)
    ]
    await pg_store.put(artifacts)
    for artifact in artifacts:
        got = await pg_store.get(artifact.id)
        assert got is not None and got.visibility == artifact.visibility
        assert type(got.visibility) is type(artifact.visibility)
    assert [a.visibility for a in await pg_store.query(type=IDEA)] == KINDS
    assert (await pg_store.query(limit=1))[0].visibility == TenantVisibility()
    assert (await pg_store.get(artifacts[0].id)).visibility is PUBLIC  # type: ignore[union-attr]
    rows = execute(pg_dsn, pg_schema, "SELECT visibility FROM artifacts ORDER BY seq")
    assert [r[0] for r in rows] == [v.to_json() for v in KINDS]  # JSONB, the stable form


def program(store: PostgresStore, ran: list[str], *, bob_labels: tuple[str, ...] = ()) -> Flock:
    """alice and bob both cook every Idea; bob may carry labels."""
    flock = Flock(store=store)
    for name in ("alice", "bob"):
        builder = flock.agent(name)
        if name == "bob" and bob_labels:
            builder.labels(*bob_labels)

        def cook(idea: Idea, name: str = name) -> Pizza:
            ran.append(f"{name}:{idea.topic}")
            return Pizza(name=f"{name} {idea.topic}")

        builder.consumes(Idea).publishes(Pizza).with_engines(cook).without_output()
    return flock


async def test_a_worker_never_runs_an_agent_that_may_not_see_the_artifact(
    pg_dsn: str, pg_schema: str
) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    published: list[str] = []
    ran: list[str] = []
    publisher, worker = program(stores[0], published), program(stores[1], ran)
    task = asyncio.create_task(worker.work(concurrency=4))
    try:
        await publisher.publish(Idea(topic="secret"), visibility=only_for("alice"))
        await publisher.publish(Idea(topic="hr"), visibility=LabelledVisibility({"hr"}))
        await publisher.publish(Idea(topic="open"))
        await publisher.run_until_idle(timeout=30, work=False)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    try:
        assert published == []  # the publisher did not work
        assert sorted(ran) == ["alice:open", "alice:secret", "bob:open"]
        runs = await stores[0].runs()
        assert {r["state"] for r in runs} == {"done"}
        ideas = {a.id: a.payload.topic for a in await stores[0].query(type=IDEA)}  # type: ignore[attr-defined]
        routed = sorted((ideas[r["artifact_ids"][0]], r["agent"]) for r in runs)
        assert routed == [("open", "alice"), ("open", "bob"), ("secret", "alice")]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_worker_that_declares_the_agent_otherwise_refuses_its_run(
    pg_dsn: str, pg_schema: str
) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    ran: list[str] = []
    publisher = program(stores[0], ran, bob_labels=("hr",))  # routes the Idea to bob …
    worker = program(stores[1], ran)  # … whose worker says bob carries no label
    task = asyncio.create_task(worker.work(concurrency=4))
    try:
        (idea,) = await publisher.publish(
            [Idea(topic="payroll")], visibility=LabelledVisibility({"hr"})
        )
        with pytest.raises(AgentFailures) as info:
            await publisher.run_until_idle(timeout=30, work=False)
        (failure,) = info.value.failures
        assert failure.agent == "bob" and [a.id for a in failure.artifacts] == [idea.id]
        assert "PermissionError: agent 'bob' may not see" in str(failure)
        assert "declare the agent alike" in str(failure)
        assert ran == []  # its engine never ran
        (run,) = await stores[0].runs()
        assert run["state"] == "failed" and "may not see" in run["error"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in stores))


async def test_outputs_completed_through_the_queue_keep_their_visibility(
    pg_store: PostgresStore,
) -> None:
    flock = Flock(store=pg_store)
    flock.agent("clerk").consumes(Idea).publishes(
        Note, visibility=only_for("auditor")
    ).with_engines(lambda i: Note(text=i.topic)).without_output()
    noted: list[str] = []
    for name in ("auditor", "reader"):
        flock.agent(name).consumes(Note).with_engines(
            lambda n, name=name: noted.append(f"{name}:{n.text}")
        ).without_output()
    await flock.publish(Idea(topic="ledger"))
    await flock.run_until_idle(timeout=30)
    (note,) = await pg_store.query(type=NOTE)
    assert note.visibility == only_for("auditor") and note.produced_by == "clerk"
    assert noted == ["auditor:ledger"]
    assert sorted(r["agent"] for r in await pg_store.runs()) == ["auditor", "clerk"]


def old_schema(dsn: str, schema: str, *, with_column: bool = False) -> str:
    """A schema as flock made it before visibility (migrations 1 to 3), holding one artifact;
    returns its id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, migration in enumerate(MIGRATIONS[:3], start=1):
            conn.execute(migration)  # type: ignore[call-overload]
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
        if with_column:  # e.g. added by hand before upgrading
            conn.execute(
                "ALTER TABLE artifacts ADD COLUMN visibility jsonb NOT NULL"
                """ DEFAULT '{"kind": "Public"}'"""
            )
        conn.execute(
            "INSERT INTO artifacts (id, type, payload, produced_by, correlation_id, created_at)"
            """ VALUES ('old-1', %s, '{"topic": "from before"}', 'external', 'c', now())""",
            [IDEA],
        )
    return "old-1"


@pytest.mark.parametrize("with_column", [False, True], ids=["plain", "column-added-by-hand"])
async def test_a_table_from_before_visibility_is_migrated(
    pg_dsn: str, pg_schema: str, with_column: bool
) -> None:
    old_id = old_schema(pg_dsn, pg_schema, with_column=with_column)
    assert SCHEMA_VERSION == 4
    store = PostgresStore(pg_dsn, schema=pg_schema)
    try:
        old = await store.get(old_id)
        assert old is not None and old.payload == Idea(topic="from before")
        assert old.visibility is PUBLIC
        versions = execute(pg_dsn, pg_schema, "SELECT version FROM schema_version ORDER BY 1")
        assert [v[0] for v in versions] == [1, 2, 3, 4]
        ran: list[str] = []
        flock = program(store, ran)
        await flock.publish(Idea(topic="new"), visibility=only_for("bob"))
        await flock.run_until_idle(timeout=30)
        assert ran == ["bob:new"]
        new = (await store.query(type=IDEA))[-1]
        assert new.visibility == only_for("bob")
    finally:
        await store.close()


async def test_an_unknown_kind_in_stored_data_is_a_clear_error_and_fails_its_run(
    pg_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    artifact = Artifact(type=IDEA, payload=Idea(topic="later"))
    await pg_store.put([artifact])
    execute(
        pg_dsn,
        pg_schema,
        """UPDATE artifacts SET visibility = '{"kind": "After", "ttl": 60}'""",
    )
    with pytest.raises(PayloadValidationError, match="unknown visibility kind 'After'"):
        await pg_store.get(artifact.id)
    with pytest.raises(PayloadValidationError, match=f"stored artifact {artifact.id}"):
        await pg_store.query()
    # A run on it fails (reported, not retried, not run as if public).
    assert await pg_store.enqueue("chef", [artifact.id])
    assert await pg_store.claim("w", ["chef"], 30) == []
    (run,) = await pg_store.runs()
    assert run["state"] == "failed" and "unknown visibility kind 'After'" in run["error"]
