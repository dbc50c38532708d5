from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from opentelemetry.sdk.trace import TracerProvider

from flock import Flock
from flock.tracing import configure
from flock.tracing._attributes import flatten, nest
from flock.tracing._encode import spans_to_arrow
from flock.tracing.processor import ENCODE_CHUNK, DuckDBSpanProcessor
from flock.tracing.store import INSERT_COLUMNS, Appender, connect
from tests.models import Idea, Pizza

# The seed's queries, as printed in the docs (the first with the GROUP BY fix).
WORKFLOWS_QUERY = """
    SELECT
        trace_id,
        json_extract(attributes, '$.workflow.name') as workflow_name,
        COUNT(*) as span_count,
        MIN(start_time) as start_time,
        MAX(end_time) as end_time,
        (MAX(end_time) - MIN(start_time)) / 1000000.0 as duration_ms
    FROM spans
    WHERE json_extract(attributes, '$.flock.workflow') = 'true'
    GROUP BY trace_id, workflow_name
    ORDER BY start_time DESC
"""
SLOWEST_QUERY = """
SELECT
    json_extract(attributes, '$.workflow.name') as workflow,
    AVG((end_time - start_time) / 1000000.0) as avg_duration_ms,
    COUNT(*) as executions
FROM spans
WHERE name LIKE '%workflow%'
  AND json_extract(attributes, '$.flock.workflow') = 'true'
GROUP BY workflow
ORDER BY avg_duration_ms DESC
LIMIT 10
"""
PARENT_QUERY = """
    SELECT name, parent_id
    FROM spans
    WHERE trace_id = '{trace_id}'
    ORDER BY start_time
"""


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[TracerProvider, DuckDBSpanProcessor, Path]]:
    db = tmp_path / ".flock" / "traces.duckdb"
    provider = TracerProvider()
    settings = configure(provider, trace_file=True, db_path=str(db))
    assert settings is not None and settings.file is not None
    yield provider, settings.file, db
    settings.file.shutdown()


def pizza_flock(provider: TracerProvider) -> Flock:
    flock = Flock("openai/gpt-4o", tracer_provider=provider)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=f"{idea.topic} pizza")
    )
    return flock


async def run_workflow(flock: Flock, name: str, n: int = 1) -> None:
    async with flock.traced_run(name):
        for i in range(n):
            await flock.publish(Idea(topic=f"t{i}"))
        await flock.run_until_idle()


async def test_seed_queries_return_the_right_rows(traced) -> None:  # type: ignore[no-untyped-def]
    provider, _, db = traced
    flock = pizza_flock(provider)
    await run_workflow(flock, "pizza_workflow")
    await run_workflow(flock, "pizza_workflow")
    await run_workflow(flock, "batch_workflow", n=3)
    await flock.publish(Idea(topic="untraced"))  # a root trace outside any workflow
    await flock.run_until_idle()
    await asyncio_flush(flock)

    conn = duckdb.connect(str(db), read_only=True)
    try:
        spans_per_workflow = {
            trace_id: count
            for trace_id, count in conn.execute(
                "SELECT trace_id, count(*) FROM spans GROUP BY trace_id"
            ).fetchall()
        }
        rows = conn.execute(WORKFLOWS_QUERY).fetchall()
        assert [r[1] for r in rows] == ['"batch_workflow"', '"pizza_workflow"', '"pizza_workflow"']
        for trace_id, _, span_count, start, end, duration in rows:
            assert span_count == spans_per_workflow[trace_id]  # all spans of the workflow
            root_start, root_end = conn.execute(
                "SELECT start_time, end_time FROM spans WHERE trace_id = ? AND parent_id IS NULL",
                [trace_id],
            ).fetchone()
            assert (start, end) == (root_start, root_end)  # its whole duration
            assert duration == pytest.approx((root_end - root_start) / 1e6)
        assert (
            rows[0][2] == 1 + 3 * 5 + 2
        )  # root, 3 x (publish, execute, 2 hooks, engine), run, shutdown
        slowest = conn.execute(SLOWEST_QUERY).fetchall()
        assert sorted((w, n) for w, _, n in slowest) == [
            ('"batch_workflow"', 1),
            ('"pizza_workflow"', 2),
        ]
        trace_id = rows[-1][0]
        listing = conn.execute(PARENT_QUERY.format(trace_id=trace_id)).fetchall()
        names = [name for name, _ in listing]
        assert names[0] == "pizza_workflow" and listing[0][1] is None
        ids = dict(
            conn.execute(
                "SELECT name, span_id FROM spans WHERE trace_id = ?", [trace_id]
            ).fetchall()
        )
        parents = dict(listing)
        assert parents["Flock.publish"] == ids["pizza_workflow"]
        assert parents["Agent.execute"] == ids["Flock.publish"]
        assert parents["Flock.shutdown"] == ids["Flock.run_until_idle"]
    finally:
        conn.close()


async def asyncio_flush(flock: Flock) -> None:
    assert flock._workflows is not None
    await flock._workflows.flush()


async def test_spans_are_in_the_file_when_traced_run_exits(traced) -> None:  # type: ignore[no-untyped-def]
    provider, processor, db = traced
    processor.flush_interval = 3600  # only the exit of traced_run may write
    flock = pizza_flock(provider)
    await run_workflow(flock, "pizza_workflow")
    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 8
    finally:
        conn.close()


async def test_small_appends_stay_in_the_log_until_shutdown_merges_it(
    traced,  # type: ignore[no-untyped-def]
) -> None:
    provider, processor, db = traced
    processor.flush_interval = 3600
    flock = pizza_flock(provider)
    await run_workflow(flock, "first")
    await run_workflow(flock, "second")
    wal = db.with_name(db.name + ".wal")
    assert wal.is_file()  # two small appends: below the checkpoint threshold
    conn = duckdb.connect(str(db), read_only=True)  # a reader replays the log
    try:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 16
    finally:
        conn.close()
    processor.shutdown()
    assert not wal.exists()  # merged: the file alone holds every span
    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 16
    finally:
        conn.close()


async def test_columns_and_json(traced) -> None:  # type: ignore[no-untyped-def]
    provider, _, db = traced
    flock = pizza_flock(provider)
    await run_workflow(flock, "pizza_workflow")
    conn = duckdb.connect(str(db), read_only=True)
    try:
        cols = {r[0]: r[1] for r in conn.execute("DESCRIBE spans").fetchall()}
        for name in (
            "trace_id",
            "span_id",
            "parent_id",
            "name",
            "service",
            "operation",
            "kind",
            "status_code",
            "status_description",
        ):
            assert cols[name] == "VARCHAR"
        assert cols["start_time"] == cols["end_time"] == "BIGINT"
        assert cols["duration_ms"] == "DOUBLE"
        for name in ("attributes", "events", "links", "resource"):
            assert cols[name] == "JSON"
        row = conn.execute(
            "SELECT attributes, links, resource, kind, status_code, start_time, end_time, duration_ms "
            "FROM spans WHERE name = 'Agent.execute'"
        ).fetchone()
        attributes, links, resource = (json.loads(v) for v in row[:3])
        assert attributes["gen_ai"]["agent"]["name"] == "chef"
        assert attributes["workflow"]["name"] == "pizza_workflow"
        assert links[0]["attributes"]["flock.artifact.type"].endswith("Idea")
        assert "telemetry.sdk.name" in resource
        assert row[3] == "INTERNAL" and row[4] == "UNSET"
        assert row[6] > row[5] > 1_600_000_000 * 10**9  # integer ns since the epoch
        assert row[7] == pytest.approx((row[6] - row[5]) / 1e6)
    finally:
        conn.close()


async def test_long_attributes_are_capped_and_redaction_applies(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    provider = TracerProvider()
    settings = configure(
        provider,
        trace_file=True,
        db_path=str(db),
        max_attribute_chars=100,
        redact=lambda key, value: None if "secret" in key else value,
    )
    assert settings is not None and settings.file is not None
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("capped") as span:
        span.set_attribute("big", "x" * 10_000)
        span.set_attribute("api.secret", "hunter2")
        span.set_attribute("keep", "ok")
    assert settings.file.force_flush()
    settings.file.shutdown()
    conn = duckdb.connect(str(db), read_only=True)
    attributes = json.loads(conn.execute("SELECT attributes FROM spans").fetchone()[0])
    conn.close()
    assert attributes["big"] == "x" * 100 + "…[truncated 9900 chars]"
    assert attributes["keep"] == "ok"
    assert "api" not in attributes


def test_clear_traces_contract(tmp_path: Path) -> None:
    missing = Flock.clear_traces(str(tmp_path / "nope.duckdb"))
    assert missing["success"] is False and missing["deleted_count"] == 0
    assert "not found" in missing["error"]


async def test_clear_traces_on_an_instance_clears_the_file_that_flock_traces_to(
    traced,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, _, db = traced  # this Flock's own provider writes to db, not the default file
    other = tmp_path / "default.duckdb"
    monkeypatch.setenv("FLOCK_TRACE_DB", str(other))
    connect(other).close()
    await run_workflow(pizza_flock(provider), "mine")
    flock = pizza_flock(provider)
    assert flock.clear_traces()["deleted_count"] > 0
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (0,)
    assert "older_than" in (flock.clear_traces.__doc__ or "")


async def test_clear_traces_deletes_and_reclaims_space(traced) -> None:  # type: ignore[no-untyped-def]
    provider, processor, db = traced
    flock = pizza_flock(provider)
    for _ in range(50):
        await run_workflow(flock, "pizza_workflow", n=20)
    assert processor.force_flush()
    size_before = db.stat().st_size
    result = flock.clear_traces(str(db))  # on an instance
    assert result == {"success": True, "deleted_count": 50 * (2 + 20 * 5 + 1), "error": None}
    assert db.stat().st_size < size_before
    again = Flock.clear_traces(str(db))  # on the class
    assert again == {"success": True, "deleted_count": 0, "error": None}
    await run_workflow(flock, "after_clear")
    assert processor.force_flush()
    conn = duckdb.connect(str(db), read_only=True)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 8
    conn.close()


async def test_clear_traces_also_clears_spans_not_yet_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_FLUSH_INTERVAL", "3600")  # nothing is written on its own
    db = tmp_path / "t.duckdb"
    provider = TracerProvider()
    settings = configure(provider, trace_file=True, db_path=str(db))
    assert settings is not None and settings.file is not None
    processor = settings.file
    flock = pizza_flock(provider)
    await flock.publish(Idea(topic="pending"))  # no traced_run: no flush at its end
    await flock.run_until_idle()
    assert processor.written == 0
    result = Flock.clear_traces(str(db))
    assert result == {"success": True, "deleted_count": 5 + 2, "error": None}
    assert processor.force_flush()
    conn = duckdb.connect(str(db), read_only=True)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
    conn.close()
    processor.shutdown()


def test_clear_traces_older_than_deletes_whole_traces_that_ended_before(tmp_path: Path) -> None:
    from datetime import timedelta

    from tests.tracing.stored import seed_trace, write_spans

    now = time.time_ns()
    day = 86_400 * 10**9
    old = seed_trace(start_ns=now - 10 * day, workflow="old_workflow")
    recent = seed_trace(start_ns=now - 60 * 10**9, workflow="recent_workflow")
    # A long trace that started 10 days ago but ended an hour ago is kept whole.
    straddling = seed_trace(start_ns=now - 10 * day, workflow="long_workflow")
    root = straddling[0]
    straddling[0] = root.__class__(
        name=root.name,
        context=root.context,
        parent=root.parent,
        resource=root.resource,
        attributes=root.attributes,
        start_time=root.start_time,
        end_time=now - 3600 * 10**9,
    )
    db = tmp_path / "t.duckdb"
    write_spans(str(db), old + recent + straddling)

    def workflows() -> list[tuple[str, int]]:
        conn = duckdb.connect(str(db), read_only=True)
        try:
            return conn.execute(
                "SELECT json_extract_string(attributes, '$.workflow.name') AS w, count(*) "
                "FROM spans GROUP BY w ORDER BY w"
            ).fetchall()
        finally:
            conn.close()

    n = len(old)
    result = Flock.clear_traces(str(db), older_than="7d")
    assert result == {"success": True, "deleted_count": n, "error": None}
    assert workflows() == [("long_workflow", n), ("recent_workflow", n)]
    assert Flock.clear_traces(str(db), older_than=timedelta(minutes=30)) == {
        "success": True,
        "deleted_count": n,
        "error": None,
    }
    assert workflows() == [("recent_workflow", n)]
    for bad in ("soon", timedelta(days=-(10**6)), 5):
        refused = Flock.clear_traces(str(db), older_than=bad)  # type: ignore[arg-type]
        assert refused["success"] is False and refused["deleted_count"] == 0
        assert refused["error"].startswith("older_than: ")
    assert workflows() == [("recent_workflow", n)]


def test_clear_traces_on_a_non_trace_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database")
    result = Flock.clear_traces(str(bogus))
    assert result["success"] is False and result["error"]


READER = """
import duckdb, sys, time
conn = duckdb.connect(sys.argv[1], read_only=True)
print(conn.execute("SELECT count(*) FROM spans").fetchone()[0], flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


async def test_reader_process_holding_the_file_loses_no_span(traced, caplog) -> None:  # type: ignore[no-untyped-def]
    provider, processor, db = traced
    processor.flush_interval = 0.05
    flock = pizza_flock(provider)
    await run_workflow(flock, "before_reader")
    reader = subprocess.Popen(  # noqa: ASYNC220 - a helper process, started once
        [sys.executable, "-c", READER, str(db), "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout is not None
        assert int(reader.stdout.readline()) == 8  # the reader sees the flushed workflow
        flock_workflows = 20
        for i in range(flock_workflows):
            await run_workflow(flock, f"during_reader_{i}")  # exits even though the file is locked
        assert "locked by another process" in caplog.text
    finally:
        reader.wait(10)
        reader.stdout.close()
    deadline = time.monotonic() + 20
    while processor.written < 8 * 21 and time.monotonic() < deadline:
        processor.force_flush(1000)
    assert processor.dropped == 0
    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 8 * 21
    finally:
        conn.close()


def test_nest_round_trip_keeps_leaf_and_prefix() -> None:
    flat = {"a": 1, "a.b": 2, "a.b.c": "x", "flock.workflow": True, "z": [1, 2]}
    nested = nest(flat, max_chars=100)
    assert nested["flock"] == {"workflow": True}
    assert nested["a"] == {"": 1, "b": {"": 2, "c": "x"}}
    assert flatten(nested) == flat
    reverse = dict(reversed(list(flat.items())))
    assert flatten(nest(reverse, max_chars=100)) == flat


async def test_a_trace_file_deleted_while_tracing_is_created_again(traced) -> None:  # type: ignore[no-untyped-def]
    provider, _, db = traced
    flock = pizza_flock(provider)
    await run_workflow(flock, "before")
    for path in (db, db.with_name(db.name + ".wal")):
        path.unlink(missing_ok=True)
    await run_workflow(flock, "after")
    conn = duckdb.connect(str(db), read_only=True)
    try:
        rows = conn.execute(
            "SELECT DISTINCT json_extract_string(attributes, '$.workflow.name') FROM spans"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("after",)]


async def test_flush_async_waits_for_the_write_and_times_out_without_hanging(
    traced,  # type: ignore[no-untyped-def]
) -> None:
    provider, processor, db = traced
    processor.flush_interval = 3600
    tracer = provider.get_tracer("test")
    tracer.start_span("first").end()
    with processor.pause():  # as while the file is cleared: the write has to wait
        assert await processor.flush_async(0.2) is False
    assert await processor.flush_async(10) is True
    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT name FROM spans").fetchall() == [("first",)]
    finally:
        conn.close()


async def test_workflows_ending_together_share_one_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sixteen traced_run exits at once (a server's concurrent requests): one append for all
    # (at most two, if the writer wakes between them), not sixteen in a row, each exit
    # waiting for the appends of every workflow that ended before it.
    appends: list[int] = []
    append = Appender.append

    def counting(self: Appender, table: Any, **options: Any) -> None:
        appends.append(table.num_rows)
        append(self, table, **options)

    monkeypatch.setattr(Appender, "append", counting)
    processor = DuckDBSpanProcessor(tmp_path / "t.duckdb", flush_interval=3600)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")

    async def workflow(k: int) -> bool:
        for i in range(11):
            tracer.start_span(f"w{k}.{i}").end()
        return await processor.flush_async(30)

    try:
        with processor.pause():  # all sixteen end while the file is busy
            waiting = asyncio.gather(*(workflow(k) for k in range(16)))
            await asyncio.sleep(0.05)
        assert await waiting == [True] * 16
        assert sum(appends) == 176 and len(appends) <= 2, appends
    finally:
        processor.shutdown()
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(DISTINCT name) FROM spans").fetchone() == (176,)


def test_written_batches_are_freed_as_soon_as_they_are_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batch_size=4: every encoded chunk is due, so writes go through the insert thread as
    # well as the synchronous write at the flush. Nothing may keep a written batch alive
    # (the insert thread's last job, the writer's last chunk): freeing them late, all at
    # once, is what stalled the event loop.
    processor = DuckDBSpanProcessor(tmp_path / "t.duckdb", flush_interval=3600, batch_size=4)
    encoded: list[weakref.ref[Any]] = []
    encode = processor._encode

    def tracking(batch: Any) -> Any:
        table = encode(batch)
        encoded.append(weakref.ref(table))
        return table

    monkeypatch.setattr(processor, "_encode", tracking)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        for i in range(1_000):
            tracer.start_span(f"span {i}").end()
        assert processor.force_flush(30_000)
        assert processor.written == 1_000
        deadline = time.monotonic() + 10
        while any(ref() is not None for ref in encoded) and time.monotonic() < deadline:
            time.sleep(0.01)
        alive = sum(ref() is not None for ref in encoded)
        assert len(encoded) >= 1_000 // ENCODE_CHUNK
        assert alive == 0, f"{alive} of {len(encoded)} batches still held"
    finally:
        processor.shutdown()


def test_the_writer_keeps_encoding_while_the_insert_thread_appends(tmp_path: Path) -> None:
    processor = DuckDBSpanProcessor(tmp_path / "t.duckdb", flush_interval=3600, batch_size=100)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        with processor.pause():  # the insert thread's first append waits for the file
            for i in range(2_000):
                tracer.start_span(f"span {i}").end()
            processor.request_flush()
            deadline = time.monotonic() + 10
            while (processor._queue or processor._encoding_rows) and time.monotonic() < deadline:
                time.sleep(0.01)
            # Everything was encoded although the append in progress could not finish; the
            # spans wait as Arrow rows for the next append, none was lost or dropped.
            assert not processor._queue
            assert processor.pending == 2_000 and processor.dropped == 0
        assert processor.force_flush(30_000)
        assert processor.written == 2_000
    finally:
        processor.shutdown()


def test_pending_counts_the_spans_a_flush_is_writing(tmp_path: Path) -> None:
    """A flush takes the encoded rows for its own write: while the file is held (here by
    pause(); by a reader in another process in real use) they still count as pending, as
    the dashboard shows and OTLP ingest's back-pressure reads (they counted 0)."""
    processor = DuckDBSpanProcessor(tmp_path / "t.duckdb", flush_interval=3600)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    flushed: list[bool] = []
    try:
        with processor.pause():
            for i in range(50):
                tracer.start_span(f"span {i}").end()
            flush = threading.Thread(target=lambda: flushed.append(processor.force_flush(30_000)))
            flush.start()
            deadline = time.monotonic() + 10
            while processor._queue and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # the writer encodes them and waits for the file in its write
            samples = []
            for _ in range(10):
                samples.append(processor.pending)
                time.sleep(0.02)
            assert samples == [50] * 10
            assert processor.written == 0 and not flushed
        flush.join(30)
        assert flushed == [True]
        assert (processor.pending, processor.written, processor.dropped) == (0, 50, 0)
    finally:
        processor.shutdown()


def test_appends_write_small_row_groups_and_older_files_stay_appendable(tmp_path: Path) -> None:
    """Every checkpoint rewrites the table's last, partly filled row group, so the writer
    keeps row groups at ROW_GROUP_SIZE rows (DuckDB's default is 122,880); a file written
    with DuckDB's default size (an earlier flock, or by hand) takes appends as before."""
    from flock.tracing.store import ROW_GROUP_SIZE
    from tests.tracing.stored import seed_trace

    spans = seed_trace()
    table = spans_to_arrow(spans)
    big = pa.concat_tables([table] * (2 * ROW_GROUP_SIZE // len(spans) + 1))

    def row_groups(db: Path) -> list[int]:
        with duckdb.connect(str(db), read_only=True) as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT max(count) FROM pragma_storage_info('spans') "
                    "GROUP BY row_group_id ORDER BY row_group_id"
                ).fetchall()
            ]

    ours = tmp_path / "ours.duckdb"
    appender = Appender(ours)
    appender.append(big)
    appender.close()
    sizes = row_groups(ours)
    assert sum(sizes) == big.num_rows
    assert len(sizes) >= 3 and max(sizes) == ROW_GROUP_SIZE

    older = tmp_path / "older.duckdb"
    conn = connect(older)  # DuckDB's default row group size
    flock_batch = big  # noqa: F841 (read by the replacement scan)
    conn.execute(f"INSERT INTO spans SELECT {INSERT_COLUMNS} FROM flock_batch")
    conn.close()
    assert max(row_groups(older)) > ROW_GROUP_SIZE
    appender = Appender(older)
    appender.append(table)
    appender.close()
    with duckdb.connect(str(older), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (big.num_rows + len(spans),)


def test_batches_encode_each_column_as_plain_arrow_conversion_would() -> None:
    """The encoder takes shortcuts (a column with one value for the whole batch is a slice
    of an array made once; integer columns go through array.array; nested attribute dicts
    are refilled per key set): batches that repeat values, that mix them, and that follow
    each other with other values must come out as pyarrow's plain conversion of the same
    values, and equal to one batch of all the spans."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import Status, StatusCode

    from flock.tracing._encode import FinishedSpan

    def spans(service: str, n: int, mixed: bool) -> list[FinishedSpan]:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        tracer = provider.get_tracer("t")
        made = []
        for i in range(n):
            span = tracer.start_span("a" if not mixed or i % 3 else "b", start_time=i + 1)
            span.set_attribute("flock.n", i)
            span.set_attribute("workflow.name", service)
            if mixed and i % 4 == 0:
                span.add_event("e", {"k": i}, timestamp=i + 2)
                span.set_status(Status(StatusCode.ERROR, f"boom {i}"))
            span.end(end_time=i + 3)
            made.append(FinishedSpan(span))
        return made

    batches = [spans("one", 256, False), spans("two", 256, False), spans("two", 100, True)]
    tables = [spans_to_arrow(batch) for batch in batches]
    for batch, table in zip(batches, tables, strict=True):
        rows = table.to_pylist()
        assert [r["name"] for r in rows] == [s._name for s in batch]
        assert [r["span_id"] for r in rows] == [s._context.span_id for s in batch]
        assert [(r["start_time"], r["end_time"]) for r in rows] == [
            (s._start_time, s._end_time) for s in batch
        ]
        assert [r["status_description"] for r in rows] == [s._status.description for s in batch]
        assert {r["service"] for r in rows} == {batch[0]._resource.attributes["service.name"]}
        assert [json.loads(r["attributes"]) for r in rows] == [
            {"flock": {"n": s._attributes["flock.n"]}, "workflow": {"name": r["service"]}}
            for s, r in zip(batch, rows, strict=True)
        ]
        assert [len(json.loads(r["events"])) for r in rows] == [len(s._events or ()) for s in batch]
    whole = spans_to_arrow([s for batch in batches for s in batch])
    assert pa.concat_tables(tables).to_pylist() == whole.to_pylist()


def test_a_large_append_someone_waits_for_runs_on_two_threads_then_back_to_one(
    tmp_path: Path,
) -> None:
    """The last append of a flush runs on two DuckDB threads, rows in any order: all of
    them land, and the writer's instance goes back to one thread in insertion order."""
    from flock.tracing.store import PARALLEL_ROWS
    from tests.tracing.stored import seed_trace

    spans = seed_trace()
    table = spans_to_arrow(spans)
    big = pa.concat_tables([table] * (PARALLEL_ROWS // len(spans) + 1))
    appender = Appender(tmp_path / "t.duckdb")
    seen: list[tuple[Any, ...]] = []
    insert = appender._insert

    def watching(conn: Any, batch: Any, where: str = "") -> None:
        setting = "SELECT current_setting('threads'), current_setting('preserve_insertion_order')"
        seen.append(conn.execute(setting).fetchone())
        insert(conn, batch, where)

    appender._insert = watching  # type: ignore[method-assign]
    try:
        appender.append(big, waited_on=True)
        appender.append(table, waited_on=True)  # small: one thread
        appender.append(big)  # nobody waits: one thread
        assert appender._conn is not None
        assert appender._conn.execute(
            "SELECT current_setting('threads'), current_setting('preserve_insertion_order')"
        ).fetchone() == (1, True)
    finally:
        appender.close()
    assert seen == [(2, False), (1, True), (1, True)]
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as conn:
        counted = conn.execute("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchone()
    assert counted == (2 * len(big) + len(table), len(spans))
