"""A blackboard on PostgreSQL, shared by many worker processes (psycopg 3, async).

``PostgresStore(dsn)`` implements :class:`~flock.store.base.Store` (artifacts as JSONB with
their type, producer, correlation id, tags, W3C ``traceparent``, creation time and
visibility; consumption records) and :class:`~flock.store.queue.WorkQueue`: a ``runs`` table
from which workers claim agent runs with ``FOR UPDATE SKIP LOCKED`` under a lease.
``LISTEN/NOTIFY`` wakes idle workers; a run whose worker stopped renewing its lease is claimed
again (``attempt`` + 1).

The tables live in their own PostgreSQL schema (default ``flock``), created and migrated by
the store on first use (the ``schema_version`` table records the applied migrations; a
transaction-scoped advisory lock lets many processes start at once). Payloads are stored as
JSON and re-validated through the type registry when loaded.

Example:
    >>> from flock.orchestrator import Flock
    >>> from flock.store.postgres import PostgresStore
    >>> flock = Flock(store=PostgresStore("postgresql://postgres@127.0.0.1/test"))  # doctest: +SKIP

Connection failures (a PostgreSQL restart, say) are retried with backoff for up to
``reconnect_timeout`` seconds; every write is idempotent, so a retried commit never stores
anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from opentelemetry.trace import SpanContext, TraceFlags

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg-pool: pip install 'flock[postgres]'"
    ) from exc
from pydantic import BaseModel, ValidationError

from flock._names import checked_count
from flock.artifacts import Artifact
from flock.exceptions import ConfigurationError, PayloadValidationError, RegistryError
from flock.registry import registry
from flock.store import _postgres_sql as q
from flock.store._postgres_sql import MIGRATIONS, SCHEMA_VERSION
from flock.store._stored_json import stored_json
from flock.store.base import Store, checked_query
from flock.store.queue import ClaimedRun, FailedRun, LeaseLost, RunRequest, WorkQueue
from flock.visibility import Visibility

__all__ = ["SCHEMA_VERSION", "PostgresStore", "parse_traceparent"]

log = logging.getLogger("flock.store.postgres")

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote :class:`SpanContext` of a W3C ``traceparent`` (``None`` if absent/invalid).

    Example:
        >>> ctx = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        >>> f"{ctx.span_id:016x}", ctx.is_remote
        ('b7ad6b7169203331', True)
    """
    if not value:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))


def _artifact_params(a: Artifact) -> tuple[Any, ...]:
    return (
        a.id,
        a.type,
        stored_json(a),
        a.produced_by,
        a.correlation_id,
        sorted(a.tags),
        a.traceparent,
        a.created_at,
        orjson.dumps(a.visibility.to_json()).decode(),
    )


def _artifact_json(a: Artifact) -> dict[str, Any]:
    return {
        "id": a.id,
        "type": a.type,
        "payload": orjson.Fragment(stored_json(a)),
        "produced_by": a.produced_by,
        "correlation_id": a.correlation_id,
        "tags": sorted(a.tags),
        "traceparent": a.traceparent,
        "created_at": a.created_at.isoformat(),
        "visibility": a.visibility.to_json(),
    }


def _runs_json(runs: Sequence[RunRequest]) -> str:
    return orjson.dumps(
        [
            {
                "agent": r.agent,
                "ids": r.artifact_ids,
                "workflow": r.workflow,
                "cid": r.correlation_id,
                "max_runs": r.max_runs,
                "error": r.error,
                "ord": i,
            }
            for i, r in enumerate(runs)
        ]
    ).decode()


def _inputs_for_report(rows: dict[str, Sequence[Any]], ids: Sequence[str]) -> tuple[Artifact, ...]:
    """The inputs of a failed run that still exist and load: reporting the failure must not
    fail on the input that made the run fail (every id stays in ``artifact_ids``)."""
    inputs = []
    for artifact_id in ids:
        row = rows.get(artifact_id)
        if row is not None:
            with contextlib.suppress(PayloadValidationError, RegistryError):
                inputs.append(_load_artifact(row))
    return tuple(inputs)


def _load_artifact(row: Sequence[Any]) -> Artifact:
    """An artifact from a row of ``q.ARTIFACT_COLUMNS``, its payload re-validated."""
    *fields, stored_visibility = row
    artifact_id, type_name, payload, produced_by, correlation_id, tags, traceparent, created = (
        fields
    )
    try:
        visibility = Visibility.from_json(stored_visibility)
    except ValueError as exc:  # not guessed at: a run on it fails, a query says why
        raise PayloadValidationError(f"stored artifact {artifact_id}: {exc}") from exc
    try:
        model = registry.resolve(type_name)
    except RegistryError as exc:
        if not type_name.startswith("__main__."):
            raise
        raise RegistryError(
            f"{exc}. {type_name!r} was published by a program run as a script, whose module "
            "is called __main__ only there: define the types in a module that the publisher "
            "and the workers both import, or name them with @flock_type(name=...)"
        ) from None
    try:
        value = model.model_validate_json(payload, by_name=True)  # stored by field name
    except ValidationError as exc:
        raise PayloadValidationError(
            f"stored artifact {artifact_id} is not a valid {type_name} any more "
            f"(did the model change?):\n{exc}"
        ) from exc
    return Artifact(
        type=type_name,
        payload=value,
        produced_by=produced_by,
        correlation_id=correlation_id,
        tags=frozenset(tags),
        id=artifact_id,
        created_at=created,
        span_context=parse_traceparent(traceparent),
        visibility=visibility,
    )


def default_worker_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresStore(Store, WorkQueue):
    """Artifacts, consumption records and the run queue in PostgreSQL.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the PostgreSQL schema holding flock's tables (created if missing); two
            programs with different schemas share nothing.
        max_connections: the size of the connection pool.
        max_attempts: a run claimed this many times without finishing (its workers died)
            is marked failed instead of being claimed again.
        reconnect_timeout: how long operations retry while the database is unreachable.

    The store connects on first use, from the event loop that uses it.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "flock",
        max_connections: int = 8,
        max_attempts: int = 5,
        reconnect_timeout: float = 60.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigurationError(f"PostgresStore needs a connection string, got {dsn!r}")
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"schema must be a plain identifier (letters, digits, _), got {schema!r}"
            )
        checked_count(max_connections, "max_connections", minimum=2)
        checked_count(max_attempts, "max_attempts")
        self.dsn = dsn
        self.schema = schema
        self.max_connections = max_connections
        self.max_attempts = max_attempts
        self.reconnect_timeout = reconnect_timeout
        self.channel = f"flock_{schema.lower()}"
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": f'-c search_path="{schema}"',  # quoted: keeps the name's case
        }
        self._pool: AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        self._changed = asyncio.Event()
        self._work_changed = asyncio.Event()
        self._generation = 0
        self._work_generation = 0
        self._outage = False

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store for ``FLOCK_STORE_URL`` (schema from ``FLOCK_STORE_SCHEMA``, default flock)."""
        return cls(url, schema=os.environ.get("FLOCK_STORE_SCHEMA") or "flock")

    # Connections -----------------------------------------------------------

    async def _ensure(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._loop is not loop:  # first use, or a new event loop (asyncio.run again)
            self._pool, self._loop, self._listener = None, loop, None
            self._opening = asyncio.Lock()
            self._listening = asyncio.Event()
            self._changed = asyncio.Event()
            self._work_changed = asyncio.Event()
        assert self._opening is not None
        async with self._opening:
            if self._pool is None:
                await self._retry(self._migrate, "migrate")
                pool = AsyncConnectionPool(
                    self.dsn,
                    kwargs=self._kwargs,
                    min_size=1,
                    max_size=self.max_connections,
                    open=False,
                    name=f"flock-{self.schema}",
                    reconnect_timeout=self.reconnect_timeout,
                )
                await pool.open(wait=True, timeout=self.reconnect_timeout)
                self._pool = pool
        assert self._pool is not None
        return self._pool

    async def _migrate(self) -> None:
        """Create the schema and apply missing migrations (one process at a time)."""
        connect = psycopg.AsyncConnection.connect
        async with await connect(self.dsn, **self._kwargs) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [q.MIGRATION_LOCK])
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"schema {self.schema!r} is at version {current}, newer than this flock "
                    f"({SCHEMA_VERSION}); upgrade flock or use another schema"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
                log.info("flock: migrated %s to version %d", self.schema, version)

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``op``, retrying with backoff while the database is unreachable."""
        delay = 0.05
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                result = await op()
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if isinstance(exc, psycopg.errors.QueryCanceled):
                    raise
                if time.monotonic() > deadline:
                    raise
                if not self._outage:
                    self._outage = True
                    log.warning("flock: PostgreSQL %s failed, retrying: %s", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self._outage:
                self._outage = False
                log.warning("flock: PostgreSQL works again")
            return result

    async def _run(
        self, what: str, op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """``op(connection)`` on a pooled connection, retried on connection failures."""

        async def attempt() -> T:
            pool = await self._ensure()
            async with pool.connection() as conn:
                return await op(conn)

        return await self._retry(attempt, what)

    async def close(self) -> None:
        """Stop listening and close the pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            try:
                await self._pool.close()
            finally:
                self._pool = None
                self._loop = None

    # Store -----------------------------------------------------------------

    async def put(self, artifacts: Sequence[Artifact]) -> None:
        await self.publish(artifacts, ())

    async def get(self, artifact_id: str) -> Artifact | None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> Artifact | None:
            cur = await conn.execute(
                f"SELECT {q.ARTIFACT_COLUMNS} FROM artifacts WHERE id = %s", [artifact_id]
            )
            row = await cur.fetchone()
            return _load_artifact(row) if row is not None else None

        return await self._run("get", op)

    async def query(
        self,
        *,
        type: type[BaseModel] | str | None = None,
        correlation_id: str | None = None,
        produced_by: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        type = checked_query(type, correlation_id, produced_by, limit)
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("type", type),
            ("correlation_id", correlation_id),
            ("produced_by", produced_by),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if limit is not None and limit <= 0:
            return []
        text = f"SELECT {q.ARTIFACT_COLUMNS} FROM artifacts"
        if where:
            text += " WHERE " + " AND ".join(where)
        if limit is not None:
            text += " ORDER BY seq DESC LIMIT %s"
            params.append(limit)
        else:
            text += " ORDER BY seq"

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[Artifact]:
            cur = await conn.execute(text, params)
            rows = await cur.fetchall()
            return [_load_artifact(row) for row in rows]

        result = await self._run("query", op)
        if limit is not None:
            result.reverse()
        return result

    async def record_consumption(self, artifact_id: str, agent: str) -> None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO consumptions (artifact_id, agent) VALUES (%s, %s)",
                [artifact_id, agent],
            )

        await self._run("record_consumption", op)

    async def consumers(self, artifact_id: str) -> list[str]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            cur = await conn.execute(
                "SELECT agent FROM consumptions WHERE artifact_id = %s ORDER BY seq",
                [artifact_id],
            )
            return [row[0] for row in await cur.fetchall()]

        return await self._run("consumers", op)

    # Work queue ------------------------------------------------------------

    async def publish(self, artifacts: Sequence[Artifact], runs: Sequence[RunRequest]) -> None:
        if not artifacts and not runs:
            return
        artifact_rows = [_artifact_params(a) for a in artifacts]
        run_params = {"runs": _runs_json(runs), "channel": self.channel}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                if artifact_rows:
                    await cur.executemany(q.INSERT_ARTIFACT, artifact_rows)
                if runs:
                    await cur.execute(q.PUBLISH_RUNS, run_params)

        await self._run("publish", op)

    async def enqueue(
        self, agent: str, artifact_ids: Sequence[str], *, workflow: str | None = None
    ) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    q.INSERT_RUN + " RETURNING id", [agent, list(artifact_ids), workflow]
                )
                inserted = await cur.fetchone() is not None
                if inserted:
                    await conn.execute("SELECT pg_notify(%s, 'q')", [self.channel])
                return inserted

        return await self._run("enqueue", op)

    async def claim(
        self, worker_id: str, agents: Sequence[str], lease_s: float, *, limit: int = 1
    ) -> list[ClaimedRun]:
        if not agents or limit < 1:
            return []
        params = {
            "agents": list(agents),
            "limit": limit,
            "worker": worker_id,
            "lease": float(lease_s),
            "max_attempts": self.max_attempts,
        }

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[ClaimedRun]:
            cur = await conn.execute(q.CLAIM, params)
            claimed = await cur.fetchall()
            if not claimed:
                given_up = await conn.execute(q.GIVE_UP, [self.max_attempts])
                abandoned = await conn.execute(q.ABANDONED_FINISHING)
                if given_up.rowcount or abandoned.rowcount:
                    await conn.execute("SELECT pg_notify(%s, 'd')", [self.channel])
                return []
            ids = sorted({i for row in claimed for i in row[2]})
            cur = await conn.execute(
                f"SELECT {q.ARTIFACT_COLUMNS} FROM artifacts WHERE id = ANY(%s)", [ids]
            )
            rows = await cur.fetchall()
            by_id = {row[0]: row for row in rows}
            runs: list[ClaimedRun] = []
            unloadable = False
            for run_id, agent, artifact_ids, attempt, workflow, prev_worker, prev_at in claimed:
                try:
                    artifacts = tuple(_load_artifact(by_id[i]) for i in artifact_ids)
                except (PayloadValidationError, RegistryError) as exc:
                    # e.g. the model changed since, or this worker does not know the type
                    # Failed (and reported to its publisher), not left leased to be retried
                    # by worker after worker until its attempts run out.
                    await conn.execute(
                        "UPDATE runs SET state = 'failed', error = %s, lease_until = NULL,"
                        " finished_at = now() WHERE id = %s",
                        [f"agent {agent!r} could not load its inputs: {exc}", run_id],
                    )
                    unloadable = True
                    continue
                runs.append(
                    ClaimedRun(
                        id=run_id,
                        agent=agent,
                        artifacts=artifacts,
                        attempt=attempt,
                        worker_id=worker_id,
                        workflow=workflow,
                        previous_worker=prev_worker,
                        previous_claimed_at=prev_at,
                    )
                )
            if unloadable:
                await conn.execute("SELECT pg_notify(%s, 'd')", [self.channel])
            runs.sort(key=lambda r: r.id)
            return runs

        return await self._run("claim", op)

    async def renew(self, worker_id: str, run_ids: Sequence[int], lease_s: float) -> int:
        if not run_ids:
            return 0

        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "UPDATE runs SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND worker_id = %s AND state IN ('leased', 'finishing')",
                [float(lease_s), list(run_ids), worker_id],
            )
            return cur.rowcount

        return await self._run("renew", op)

    async def complete(
        self,
        run: ClaimedRun,
        *,
        outputs: Sequence[Artifact] = (),
        runs: Sequence[RunRequest] = (),
        finishing: bool = False,
    ) -> None:
        # One statement (one round trip, atomic): mark done if still ours, then store.
        params = {
            "finishing": finishing,
            "run": run.id,
            "worker": run.worker_id,
            "attempt": run.attempt,
            "agent": run.agent,
            "inputs": [a.id for a in run.artifacts],
            "artifacts": orjson.dumps([_artifact_json(a) for a in outputs]).decode(),
            "runs": _runs_json(runs),
            "channel": self.channel,
            "kind": "q" if runs else "d",
        }

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.execute(q.COMPLETE, params)
                row = await cur.fetchone()
                if not row or row[0] != 1:
                    await self._check_owner(cur, run)  # ok if a retried commit did it

        await self._run("complete", op)

    async def _check_owner(self, cur: psycopg.AsyncCursor[Any], run: ClaimedRun) -> None:
        """Raise :class:`LeaseLost` unless ``run`` was already finished by this attempt."""
        await cur.execute("SELECT state, worker_id, attempt FROM runs WHERE id = %s", [run.id])
        row = await cur.fetchone()
        if row is None or tuple(row) not in {
            ("done", run.worker_id, run.attempt),
            ("finishing", run.worker_id, run.attempt),
            ("failed", run.worker_id, run.attempt),
        }:
            holder = f"{row[1]} (attempt {row[2]}, {row[0]})" if row else "nobody"
            raise LeaseLost(
                f"run {run.id} of agent {run.agent!r} (attempt {run.attempt}) lost its lease; "
                f"now held by {holder}"
            )

    async def finish(self, run: ClaimedRun) -> None:
        await self._end("finish", run, "done", None, from_states=("finishing",))

    async def fail(self, run: ClaimedRun, error: str) -> None:
        await self._end("fail", run, "failed", error, from_states=("leased", "finishing"))

    async def _end(
        self,
        what: str,
        run: ClaimedRun,
        state: str,
        error: str | None,
        *,
        from_states: tuple[str, ...],
    ) -> None:
        """Move ``run`` to a final ``state`` if this attempt still holds it in one of
        ``from_states`` (a lost lease changes nothing), and wake the waiters."""

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE runs SET state = %s, error = coalesce(%s, error), lease_until = NULL,"
                " finished_at = now() WHERE id = %s AND worker_id = %s AND attempt = %s"
                " AND state = ANY(%s)",
                [state, error, run.id, run.worker_id, run.attempt, list(from_states)],
            )
            await conn.execute("SELECT pg_notify(%s, 'd')", [self.channel])

        await self._run(what, op)

    async def release(self, worker_id: str, run_ids: Sequence[int]) -> int:
        if not run_ids:
            return 0

        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                # Back to queued as if never claimed by this worker (the attempt is not
                # counted; the previous holder stays the one an abandoned-attempt span names).
                cur = await conn.execute(
                    "UPDATE runs SET state = 'queued', attempt = attempt - 1,"
                    " worker_id = previous_worker, claimed_at = previous_claimed_at,"
                    " lease_until = NULL"
                    " WHERE id = ANY(%s) AND worker_id = %s AND state = 'leased'",
                    [list(run_ids), worker_id],
                )
                if cur.rowcount:
                    await conn.execute("SELECT pg_notify(%s, 'q')", [self.channel])
                return cur.rowcount

        return await self._run("release", op)

    async def failed_runs(
        self, correlation_ids: Sequence[str], *, since: datetime | None = None
    ) -> tuple[list[FailedRun], datetime]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> tuple[list[FailedRun], datetime]:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("SELECT now()")
                now_row = await cur.fetchone()
                assert now_row is not None
                await cur.execute(
                    "SELECT id, agent, artifact_ids, error, attempt, worker_id, runaway,"
                    " correlation_id FROM runs WHERE state = 'failed'"
                    " AND correlation_id = ANY(%(cids)s)"
                    " AND (%(since)s::timestamptz IS NULL OR finished_at > %(since)s)"
                    " ORDER BY id",
                    {"cids": list(correlation_ids), "since": since},
                )
                rows = await cur.fetchall()
                ids = sorted({i for row in rows for i in row[2]})
                await cur.execute(
                    f"SELECT {q.ARTIFACT_COLUMNS} FROM artifacts WHERE id = ANY(%s)", [ids]
                )
                by_id = {row[0]: row for row in await cur.fetchall()}
            failed: list[FailedRun] = []
            runaways: set[tuple[str, str]] = set()
            for run_id, agent, artifact_ids, error, attempt, worker, runaway, cid in rows:
                if runaway:  # one report per (workflow, agent), as in one process
                    if (cid, agent) in runaways:
                        continue
                    runaways.add((cid, agent))
                failed.append(
                    FailedRun(
                        id=run_id,
                        agent=agent,
                        artifacts=_inputs_for_report(by_id, artifact_ids),
                        artifact_ids=tuple(artifact_ids),
                        error=error or "failed",
                        attempt=attempt,
                        worker_id=worker,
                        runaway=runaway,
                    )
                )
            return failed, now_row[0]

        return await self._run("failed_runs", op)

    async def is_idle(self) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM runs"
                " WHERE state IN ('queued', 'leased', 'finishing'))"
            )
            row = await cur.fetchone()
            return not (row and row[0])

        return await self._run("is_idle", op)

    # Notifications ---------------------------------------------------------

    def changes(self, *, work_only: bool = False) -> int:
        return self._work_generation if work_only else self._generation

    def _bump(self, work: bool) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        if work:
            self._work_generation += 1
            self._work_changed.set()
            self._work_changed = asyncio.Event()

    async def listen(self, timeout: float = 10.0) -> bool:
        """Start listening for change notifications; ``True`` once the listener is ready."""
        await self._ensure()
        assert self._listening is not None
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name=f"flock-listen-{self.schema}"
            )
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _listen(self) -> None:
        assert self._listening is not None
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, **self._kwargs)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._listening.set()
                    delay = 0.05
                    self._bump(True)  # anything may have happened while not listening
                    async for notify in conn.notifies():
                        self._bump(notify.payload == "q")
            except psycopg.Error as exc:
                log.debug("flock: PostgreSQL listener reconnecting: %s", exc)
            self._listening.clear()
            self._bump(True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def wait_for_change(
        self, timeout: float, *, seen: int | None = None, work_only: bool = False
    ) -> None:
        if self._listener is None or self._listener.done():
            await self.listen()
        if seen is not None and self.changes(work_only=work_only) > seen:
            return
        event = self._work_changed if work_only else self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    # Inspection (tests, benchmarks, operators) -----------------------------

    async def run_states(self) -> dict[str, int]:
        """How many runs are in each state."""

        async def op(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cur = await conn.execute("SELECT state, count(*) FROM runs GROUP BY state")
            return {state: int(n) for state, n in await cur.fetchall()}

        return await self._run("run_states", op)

    async def runs(self, *, agent: str | None = None) -> list[dict[str, Any]]:
        """Every run (``agent``'s only, if given) as a dict, oldest first."""

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT id, agent, artifact_ids, workflow, state, attempt, worker_id,"
                    " claimed_at, lease_until, previous_worker, previous_claimed_at, error,"
                    " enqueued_at, finished_at FROM runs"
                    " WHERE %(agent)s::text IS NULL OR agent = %(agent)s ORDER BY id",
                    {"agent": agent},
                )
                return list(await cur.fetchall())

        return await self._run("runs", op)
