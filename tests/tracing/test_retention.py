"""Retention: ``FLOCK_TRACE_RETENTION`` / ``DuckDBSpanProcessor(retention=...)`` deletes whole
traces that ended longer ago, from the writer thread."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from opentelemetry.sdk.trace import TracerProvider

from flock import Flock
from flock.tracing import setup
from flock.tracing.processor import DuckDBSpanProcessor
from flock.tracing.store import Appender, connect

DAY_NS = 86_400 * 10**9


def add_trace(db: Path, trace_id: str, *ended_days_ago: float, root: bool = True) -> None:
    """A trace with one span per value, each ending that many days ago (started 1 s before):
    the first its root, the others its children (without ``root``: all children of a root
    that is not written, as while the trace runs)."""
    now = time.time_ns()
    conn = connect(db)
    try:
        for i, days in enumerate(ended_days_ago):
            end = now - int(days * DAY_NS)
            parent = None if root and i == 0 else "f" * 16
            conn.execute(
                "INSERT INTO spans (trace_id, span_id, parent_id, name, start_time, end_time,"
                " duration_ms, status_code) VALUES (?, ?, ?, 'Flock.publish', ?, ?, 1000.0,"
                " 'OK')",
                [trace_id, f"{i:016x}", parent, end - 10**9, end],
            )
    finally:
        conn.close()


def trace_ids(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT trace_id, count(*) FROM spans GROUP BY ALL").fetchall()
    return dict(rows)


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_writer_deletes_whole_traces_older_than_the_retention(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    add_trace(db, "old", 10, 9)  # ended 9 days ago
    add_trace(db, "spanning", 10, 1)  # started old, ended yesterday: kept whole
    add_trace(db, "recent", 0.5)
    writer = DuckDBSpanProcessor(db, flush_interval=0.05, retention=timedelta(days=7))
    try:
        wait_for(lambda: writer.pruned > 0)
        assert writer.pruned == 2
        assert trace_ids(db) == {"spanning": 2, "recent": 1}
        # The next check is due a tenth of the retention later (at most an hour): traces
        # that age meanwhile are not deleted on every wake-up.
        add_trace(db, "old2", 8)
        time.sleep(0.3)
        assert "old2" in trace_ids(db)
    finally:
        writer.shutdown()


def test_old_traces_go_as_the_writer_starts_not_after_its_first_interval(
    tmp_path: Path,
) -> None:
    # A script shorter than the flush interval never reached the first check: with
    # FLOCK_TRACE_RETENTION, runs of short scripts kept every trace.
    db = tmp_path / "traces.duckdb"
    add_trace(db, "old", 9)
    add_trace(db, "new", 1)
    writer = DuckDBSpanProcessor(db, flush_interval=3600, retention=timedelta(days=7))
    try:
        wait_for(lambda: writer.pruned == 1, timeout=20)
    finally:
        writer.shutdown()
    assert trace_ids(db) == {"new": 1}


def test_spans_the_writer_writes_are_kept_and_without_retention_nothing_is_deleted(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traces.duckdb"
    add_trace(db, "old", 30)
    provider = TracerProvider()
    writer = DuckDBSpanProcessor(db, flush_interval=0.05)
    provider.add_span_processor(writer)
    try:
        with provider.get_tracer("t").start_as_current_span("fresh") as span:
            fresh = format(span.get_span_context().trace_id, "032x")
        assert writer.force_flush()
        time.sleep(0.2)  # several wake-ups
        assert writer.pruned == 0
        assert set(trace_ids(db)) == {"old", fresh}
    finally:
        writer.shutdown()


def test_a_failing_delete_is_reported_and_tried_again_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "traces.duckdb"
    add_trace(db, "old", 10)

    def failing_prune(self: Appender, cutoff_ns: int) -> int:
        raise duckdb.IOException("disk I/O error")

    monkeypatch.setattr(Appender, "prune", failing_prune)
    writer = DuckDBSpanProcessor(db, flush_interval=0.05, retention=timedelta(hours=1))
    try:
        with caplog.at_level(logging.WARNING, logger="flock.tracing"):
            wait_for(lambda: "could not delete the traces older than" in caplog.text)
        assert writer._next_prune > time.monotonic() + 300  # a tenth of an hour
        assert writer.pruned == 0
        assert "old" in trace_ids(db)
    finally:
        writer.shutdown()


def test_while_another_process_holds_the_file_the_delete_waits_for_it(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    add_trace(db, "old", 10)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True);"
            " print('held', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    writer = DuckDBSpanProcessor(db, flush_interval=0.05, retention=timedelta(days=7))
    try:
        time.sleep(0.3)  # several tries, all refused
        assert writer.pruned == 0
        holder.communicate("", timeout=10)
        wait_for(lambda: writer.pruned == 1)
        assert trace_ids(db) == {}
    finally:
        holder.kill()
        writer.shutdown()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        (" 30m ", timedelta(minutes=30)),
        ("1.5w", timedelta(weeks=1.5)),
        ("", None),
    ],
)
def test_flock_trace_retention_values(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: timedelta | None
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_RETENTION", value)
    assert setup._retention() == expected


@pytest.mark.parametrize("value", ["0d", "7", "forever", "2025-01-01", "-1d", "1e30w"])
def test_a_bad_flock_trace_retention_warns_and_keeps_every_trace(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_RETENTION", value)
    with pytest.warns(RuntimeWarning, match="FLOCK_TRACE_RETENTION=.*keeping every trace"):
        assert setup._retention() is None


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        DuckDBSpanProcessor(tmp_path / "t.duckdb", retention=timedelta(0))


def test_an_application_with_flock_trace_retention_deletes_old_traces(tmp_path: Path) -> None:
    db = tmp_path / ".flock" / "traces.duckdb"
    add_trace(db, "old", 3)
    add_trace(db, "kept", 1)
    script = (
        "import asyncio\n"
        "from pydantic import BaseModel\n"
        "from flock.orchestrator import Flock\n"
        "from flock.registry import flock_type\n"
        "@flock_type\n"
        "class Ping(BaseModel):\n"
        "    n: int\n"
        "async def main():\n"
        "    flock = Flock()\n"
        "    async with flock.traced_run('retention_demo'):\n"
        "        await flock.publish(Ping(n=1))\n"
        "        await flock.run_until_idle()\n"
        "asyncio.run(main())\n"
    )
    env = {
        **os.environ,
        "FLOCK_AUTO_TRACE": "true",
        "FLOCK_TRACE_RETENTION": "2d",
        "PYTHONPATH": os.getcwd(),
    }
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=60)
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT trace_id, list(DISTINCT name) FROM spans GROUP BY trace_id"
        ).fetchall()
    by_trace = dict(rows)
    assert "old" not in by_trace and "kept" in by_trace
    assert any("retention_demo" in names for t, names in by_trace.items() if t != "kept")


def test_a_trace_without_its_root_is_kept_until_its_last_span_is_an_hour_old(
    tmp_path: Path,
) -> None:
    """The root span of a running trace is written last: until then the trace only looks
    ended. Retention and clear_traces(older_than=) used to delete such a trace's spans."""
    db = tmp_path / "traces.duckdb"
    hour = 1 / 24
    add_trace(db, "running", 3 / 86_400, root=False)  # a span ended 3 s ago, no root yet
    add_trace(db, "abandoned", 2 * hour, root=False)  # nothing for 2 hours: a crash
    add_trace(db, "ended", 3 / 86_400)  # with its root: really ended 3 s ago
    writer = DuckDBSpanProcessor(db, flush_interval=0.05, retention=timedelta(seconds=2))
    try:
        wait_for(lambda: writer.pruned > 0)
        assert trace_ids(db) == {"running": 1}
    finally:
        writer.shutdown()
    add_trace(db, "abandoned", 2 * hour, root=False)
    add_trace(db, "ended", 3 / 86_400)
    assert Flock.clear_traces(str(db), older_than="2s") == {
        "success": True,
        "deleted_count": 2,
        "error": None,
    }
    assert trace_ids(db) == {"running": 1}
