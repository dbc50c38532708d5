"""Trace files the dashboard did not write: untrusted SQL in them, or not trace files at all.

``flock dashboard --db FILE`` opens whatever file it is given; its read connections reach
nothing but that file, and a file that is not a flock trace file gets a readable 503.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from flock.dashboard import create_app
from flock.exceptions import TracingError
from flock.tracing.query import TraceStore
from flock.tracing.store import SCHEMA
from tests.dashboard.conftest import client_for

ROUTES = (
    "/api/info",
    "/api/traces",
    "/api/traces?q=x",
    "/api/traces/names",
    "/api/stats",
    "/api/stats?by=span",
    "/api/correlations",
    "/api/correlations/cid-1",
    f"/api/traces/{'a' * 32}",
    f"/api/traces/{'a' * 32}/spans/{'b' * 16}",
)
SECRET = "the-secret-is-swordfish"


def make_file(path: Path, *statements: str) -> Path:
    conn = duckdb.connect(str(path))
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()
    return path


def trace_file(path: Path) -> Path:
    """A genuine (if tiny) flock trace file: one agent run."""
    attributes = json.dumps({"flock": {"correlation_id": "cid-1", "agent": {"name": "a"}}})
    return make_file(
        path,
        SCHEMA,
        "INSERT INTO spans VALUES ('" + "a" * 32 + "', '" + "b" * 16 + "', NULL, "
        "'Agent.execute', 'svc', 'execute', 'INTERNAL', 1000, 2000, 0.001, 'OK', NULL, "
        f"'{attributes}', '[]', '[]', '{{}}')",
    )


def evil_view_file(path: Path, secret: Path) -> Path:
    """A file whose ``spans`` is a view with the columns of a trace file over ``secret``."""
    return make_file(
        path,
        f"""
        CREATE VIEW spans AS
        SELECT '{"a" * 32}' AS trace_id, '{"b" * 16}' AS span_id, NULL::VARCHAR AS parent_id,
               content AS name, content AS service, NULL AS operation, 'INTERNAL' AS kind,
               1::BIGINT AS start_time, 2::BIGINT AS end_time, 0.0 AS duration_ms,
               'OK' AS status_code, content AS status_description,
               json_object('flock', json_object('correlation_id', 'cid-1')) AS attributes,
               '[]'::JSON AS events, '[]'::JSON AS links, '{{}}'::JSON AS resource
        FROM read_text('{secret}')
        """,
    )


async def test_a_view_reading_other_files_is_refused_not_run(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    db = evil_view_file(tmp_path / "evil.duckdb", secret)
    async with client_for(create_app(db)) as client:
        for route in ROUTES:
            r = await client.get(route)
            assert r.status_code == 503, (route, r.status_code, r.text)
            assert SECRET not in r.text
            assert "not a flock trace file: its 'spans' is a view" in r.json()["detail"]


def test_read_connections_have_no_file_or_network_access(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    store = TraceStore(trace_file(tmp_path / "traces.duckdb"))
    with store.connect() as conn:
        settings = conn.execute(
            "SELECT current_setting('enable_external_access'), "
            "current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions'), current_setting('lock_configuration')"
        ).fetchone()
        assert settings == (False, False, False, True)
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (1,)
    for sql in (
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM read_csv('http://127.0.0.1:9/spans.csv')",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        f"COPY spans TO '{tmp_path / 'out.csv'}'",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "INSTALL httpfs",
        "LOAD httpfs",
    ):
        with pytest.raises(TracingError) as caught, store.connect() as conn:
            conn.execute(sql).fetchall()
        assert SECRET not in str(caught.value), sql
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (["CREATE TABLE other (x INTEGER)"], "it has no 'spans' table"),
        ([], "it has no 'spans' table"),
        (
            ["CREATE TABLE spans (trace_id VARCHAR, name VARCHAR)"],
            "its 'spans' table lacks the columns span_id, parent_id, service",
        ),
        (
            [SCHEMA, "ALTER TABLE spans DROP COLUMN resource"],
            "its 'spans' table lacks the column resource",
        ),
        (["CREATE SCHEMA s", "CREATE TABLE s.spans (x INTEGER)"], "it has no 'spans' table"),
        (
            [SCHEMA.replace(" JSON USING COMPRESSION zstd", " VARCHAR")],
            "the columns attributes VARCHAR (flock's: JSON), events VARCHAR (flock's: JSON)",
        ),
        (
            [SCHEMA.replace("name VARCHAR NOT NULL", "name VARCHAR")],
            "the column name VARCHAR (flock's: VARCHAR NOT NULL)",
        ),
        (
            # A macro named like a DuckDB function takes its place in every query on the
            # file: this one would never end.
            [
                SCHEMA,
                "CREATE MACRO json_extract_string(a, b) AS "
                "(SELECT count(*)::VARCHAR FROM range(100000) x, range(100000) y)",
            ],
            "it defines SQL functions of its own (json_extract_string)",
        ),
        (
            # ... and macros named like the catalog functions that would find it
            [
                SCHEMA,
                "CREATE MACRO duckdb_functions() AS TABLE "
                "SELECT 'x' AS function_name, 'y' AS database_name, true AS internal",
                "CREATE MACRO list(a) AS 'no macros here'",
                "CREATE MACRO json_extract_string(a, b) AS 'pwned'",
            ],
            # (DuckDB 1.4 lets the file's duckdb_functions() shadow even the system one's
            # qualified name: refused all the same, as a catalog it cannot read)
            "it defines SQL functions of its own (duckdb_functions, json_extract_string, list)"
            if duckdb.__version__ >= "2"
            else "its catalog cannot be read",
        ),
    ],
    ids=[
        "no-spans",
        "empty-database",
        "old-columns",
        "one-missing",
        "other-schema",
        "json-as-text",
        "nullable-name",
        "macro",
        "macro-hiding-macros",
    ],
)
async def test_a_file_without_flock_spans_is_a_clear_503(
    tmp_path: Path, statements: list[str], message: str
) -> None:
    db = make_file(tmp_path / "other.duckdb", *statements)
    async with client_for(create_app(db)) as client:
        for route in ROUTES:
            r = await client.get(route)
            assert r.status_code == 503, (route, r.status_code, r.text)
            detail = r.json()["detail"]
            assert f"{str(db)!r} is not a flock trace file" in detail, route
            assert message in detail, (route, detail)
    with pytest.raises(TracingError, match="is not a flock trace file"):
        TraceStore(db).list_traces()


async def test_a_genuine_trace_file_still_reads(tmp_path: Path) -> None:
    db = trace_file(tmp_path / "traces.duckdb")
    async with client_for(create_app(db)) as client:
        for route in ROUTES:
            assert (await client.get(route)).status_code == 200, route
        assert (await client.get("/api/info")).json()["spans"] == 1
        corr = (await client.get("/api/correlations/cid-1")).json()
        assert corr["correlation"]["trace_ids"] == ["a" * 32]


def test_a_query_that_runs_too_long_is_stopped_with_a_clear_error(tmp_path: Path) -> None:
    db = trace_file(tmp_path / "traces.duckdb")
    store = TraceStore(db, query_timeout=0.3)
    started = time.monotonic()
    with (
        pytest.raises(TracingError, match=r"took longer than 0\.3 s and was stopped"),
        store.connect() as conn,
    ):
        conn.execute("SELECT count(*) FROM range(1000000) a, range(1000000) b").fetchall()
    assert time.monotonic() - started < 10
    assert store.search_traces().total == 1  # the next query runs as usual


async def test_health_of_a_read_only_dashboard_follows_its_file(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    async with client_for(create_app(db)) as client:
        r = await client.get("/api/health")  # no trace yet: a dashboard started first is ok
        assert (r.status_code, r.json()["problems"]) == (200, [])
        trace_file(db)
        r = await client.get("/api/health")
        assert (r.status_code, r.json()["problems"]) == (200, [])
        # Another process writes: waited out, not degraded (a test: blocking is fine here).
        holder = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-c",
                "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
                " sys.stdin.read()",
                str(db),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            r = await client.get("/api/health")
            assert (r.status_code, r.json()["problems"]) == (200, [])
        finally:
            holder.communicate("", timeout=30)
        db.write_bytes(b"not a duckdb file at all" * 100)
        r = await client.get("/api/health")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        (problem,) = r.json()["problems"]
        assert f"cannot read {str(db)!r}" in problem
        db.unlink()
        make_file(db, "CREATE TABLE other (x INTEGER)")
        r = await client.get("/api/health")
        assert r.status_code == 503 and "is not a flock trace file" in r.json()["problems"][0]
