"""PostgreSQL fixtures: each test gets its own schema, dropped afterwards.

The server is ``FLOCK_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When it is unreachable the tests are skipped with the reason, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from flock.store.postgres import PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get("FLOCK_TEST_PG_DSN") or DEFAULT_DSN
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL is not reachable at {dsn}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name; the schema (created by the store) is dropped after the test."""
    name = f"flock_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def pg_store(pg_dsn: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, schema=pg_schema, reconnect_timeout=10.0)
    yield store
    await store.close()
